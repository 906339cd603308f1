// Test seams of the supervisor: not for embedders. A test that must put the supervisor in a
// state real engines reach only by chance (a container actor gone before the supervisor hears
// of it) supplies its own container actors.
#pragma once

#include <functional>

#include "actors/container.hpp"
#include "actors/supervisor.hpp"

namespace corral::actors {

using container_factory =
    std::function<messages::container_actor(caf::actor_system&, container_args)>;

// spawn_supervisor, with every container actor made by `make`.
messages::supervisor_actor spawn_supervisor_with(caf::actor_system& sys, runtime_config cfg,
                                                 container_factory make);

}  // namespace corral::actors
