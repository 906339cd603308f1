// The router actor: one supervisor interface over several `corral node`s. New keys go to
// the least loaded node (live sandboxes against capacity); a key sticks to the node that
// holds it; a node that goes down is noticed at once (down_msg) and its keys report `lost`;
// it is reconnected in the background and, once back, its adopted sandboxes are routed
// to it again. Usable from the CLI (`--node A,B,C`) and from embedders.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

#include "messages/interfaces.hpp"

namespace corral::actors {

struct node_endpoint {
  std::string host;
  uint16_t port = 0;
};

struct router_options {
  std::vector<node_endpoint> nodes;
  std::string principal;  // named to every node in the hello handshake
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(2)};
  std::chrono::milliseconds reconnect_interval{std::chrono::seconds(1)};
  std::chrono::milliseconds request_timeout{std::chrono::minutes(2)};
};

// Needs the io::middleman loaded in `sys`.
messages::supervisor_actor spawn_router(caf::actor_system& sys, router_options options);

}  // namespace corral::actors
