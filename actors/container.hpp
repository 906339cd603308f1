// The container actor: owns one container for its whole life and serialises its lifecycle
// (create, start, setup, ready, execs, release). Every exit path removes the container or
// says exactly why it could not.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include "actors/policy.hpp"
#include "actors/runtime_config.hpp"
#include "messages/interfaces.hpp"

namespace corral::docker {
class client;
}

namespace corral::actors {

class agent_hub;

struct container_args {
  std::shared_ptr<docker::client> docker;
  // Set when cfg.agent_path is: the links to the sandboxes' agents.
  std::shared_ptr<agent_hub> agents;
  runtime_config cfg;
  std::string key;
  sandbox_plan plan;
  // Set: adopt this existing container (after a restart) instead of creating one.
  std::string adopt_container_id;
  // Adopting a sandbox of the warm pool whose key only its agent knows (key empty): it takes
  // the key from the agent's welcome, or, bound to none, goes back to the pool (pool_hash set)
  // or is removed.
  bool adopt_unkeyed = false;
  // Set with an empty key: make a member of this warm pool (policy.hpp, pool_hash) and wait,
  // started and unbound, for a claim (internal_messages.hpp, pool_claim).
  std::string pool_hash;
  // A pool member's agent ends it if nobody claims it for this long (0: never).
  std::chrono::milliseconds unclaimed_limit{0};
  // Receives (update_atom, sandbox_info, caf::actor monitor) on every change.
  caf::actor supervisor;
};

messages::container_actor spawn_container(caf::actor_system& sys, container_args args);

}  // namespace corral::actors
