// The monitor actor: one per container. Holds the container's clocks (exec deadlines, the
// lifetime limit) and reads the engine's events for it, turning them into status marks.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "actors/internal_messages.hpp"
#include "messages/sandbox.hpp"

namespace corral::actors {

using monitor_actor = caf::typed_actor<
    // From the container: an exec started (seq, deadline) or ended.
    caf::reacts_to<watch_atom, uint64_t, caf::timespan>, caf::reacts_to<unwatch_atom, uint64_t>,
    // From the container: corral itself is stopping it; a die after this is expected.
    caf::reacts_to<stopping_atom>,
    // From the supervisor's events subscription: action, exit code attribute.
    caf::reacts_to<engine_event_atom, std::string, std::string>>;

// The container actor's side of the conversation, as the monitor sees it.
using monitored_actor =
    caf::typed_actor<caf::reacts_to<exec_timeout_atom, uint64_t>, caf::reacts_to<lifetime_atom>,
                     caf::reacts_to<oom_atom>,
                     caf::reacts_to<mark_atom, messages::sandbox_status, std::string>>;

// Spawns a monitor for `container`, with an optional lifetime limit (zero: none).
monitor_actor spawn_monitor(caf::actor_system& sys, monitored_actor container,
                            std::chrono::milliseconds lifetime);

}  // namespace corral::actors
