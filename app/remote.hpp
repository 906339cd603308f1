// Reaching a `corral node` over CAF's network transport, from a CLI or an embedder.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include <caf/expected.hpp>
#include <caf/fwd.hpp>

#include "messages/interfaces.hpp"

namespace corral::app {

struct node_address {
  std::string host;
  uint16_t port = 0;
};

// "HOST:PORT" (or "[v6]:PORT"); an error names what is wrong. Port 0 ("any") only when
// listening.
caf::expected<node_address> parse_node_address(const std::string& text,
                                               bool allow_any_port = false);

// Connects through the middleman actor with a deadline (CAF's blocking remote_actor has
// none), checks the node's typed interface, and shakes hands on the protocol version: a
// mismatch is an error naming both versions.
// `principal` is who this client speaks for (the node scopes keys, quotas and the audit by it).
caf::expected<messages::supervisor_actor> connect_node(caf::scoped_actor& self,
                                                       const node_address& where,
                                                       std::chrono::milliseconds timeout,
                                                       const std::string& principal);

// Who a client is when it does not say (--principal): the CN of its client certificate (what
// `corral node issue-cert NAME` wrote), else the local user's name.
std::string default_principal(const std::string& certificate_path);

}  // namespace corral::app
