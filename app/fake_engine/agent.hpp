// The fake engine's in-memory agent, for containers made with corral's agent as entrypoint
// (`/corral/agent`, the run directory bound at /corral/run): what a container's agent holds,
// and the one listener all of them share. See agent.cpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "app/fake_engine/http_core.hpp"

namespace corral::app::fake {

// What one container's in-memory agent holds (see "the in-memory agent" below).
class fake_agent_conn;
struct fake_agent_state {
  std::string socket_path;  // in the run directory: a link to the fake's one agent listener
  std::vector<std::weak_ptr<fake_agent_conn>> conns;
  std::string sandbox_id, key;
  int64_t deadline = 0, idle_limit = 0;
};

// All agents of the fake share one listener (ten thousand listeners would not fit a process's
// descriptors): a connection names its sandbox in `configure`, by the corral.sandbox-id label.
struct fake_agent_registry {
  std::unordered_map<std::string, std::weak_ptr<fake_agent_state>> by_sandbox_id;
  std::chrono::milliseconds max_sleep{0};
};

// Serves one connection accepted on the agents' listener, until it closes or its sandbox ends.
void serve_agent(asio::io_context& io, unix_socket sock,
                 std::shared_ptr<fake_agent_registry> registry);
// Closes one connection of an agent, as when the real agent (PID 1) dies.
void close_agent(fake_agent_conn& conn);

}  // namespace corral::app::fake
