// What a host actor system must call before it starts, to carry corral's messages and
// render its errors. Kept free of type-ID macros so hosts can include it anywhere.
#pragma once

namespace caf {
class actor_system_config;
}

namespace corral::messages {

// Registers corral's message types (type ID block at first_custom_type_id + 1000) and the
// "corral" error category.
void add_message_types(caf::actor_system_config& cfg);

}  // namespace corral::messages
