// The supervisor actor: the runtime's front door. Keyed get-or-create, capacity, pruning,
// adoption of its own containers at start, the one events subscription of the runtime, and
// a graceful shutdown.
#pragma once

#include <caf/fwd.hpp>

#include "actors/runtime_config.hpp"
#include "messages/interfaces.hpp"

namespace corral::actors {

// The version string a node reports in the hello handshake.
inline constexpr const char* corral_version = "0.1.0";

// Spawns a supervisor. It answers at once; requests that arrive while it adopts the
// containers of a previous run wait until that is done. To stop it, send it an exit
// message (user_shutdown): it releases its sandboxes (or keeps them, when configured to),
// shuts its engine connection down, then quits.
messages::supervisor_actor spawn_supervisor(caf::actor_system& sys, runtime_config cfg);

}  // namespace corral::actors
