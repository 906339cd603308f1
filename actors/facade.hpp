// The face a node publishes: exactly the supervisor's public interface, and nothing else.
//
// CAF 0.17 does not filter what a network peer sends by the published typed interface: a
// peer can send the published actor any message, and any actor whose handle it ever saw.
// The supervisor has internal messages (engine-event resubscription, container updates,
// prune ticks), so it is never published; this facade is. It answers every request itself
// by asking the supervisor (never delegating, so no internal handle ever reaches a peer),
// drops everything else (counted; logged at debug), and ignores exit and down messages
// from peers. It also writes the audit: one JSON line per request that changes something.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

#include "actors/policy_file.hpp"
#include "messages/interfaces.hpp"

namespace corral::actors {

// Principals: a client names its principal in the hello handshake (hello_atom, version,
// principal); every later request of that client (its CAF node) acts as that principal. Keys
// are per principal ("session-42" of alice is "alice/session-42" to the supervisor); other
// principals get not_found and see nothing of it. Admins see and manage everyone's and may
// name another principal's sandbox as PRINCIPAL/KEY. A principal is a namespace and a quota,
// not a boundary against a hostile certificate holder (README: the threat model).
struct facade_options {
  // What one principal may hold at once: sandboxes, running execs, queued execs.
  principal_budget per_principal;
  std::vector<std::string> admins;
  // Receives one JSON line (no newline) per acquire, exec, release, release_all and prune:
  // time, principal, peer, operation, key, the decision and the result. Empty: no audit.
  std::function<void(const std::string&)> audit;
  // Receives a line for each message the facade dropped (meant for a debug log).
  std::function<void(const std::string&)> dropped;
};

// Counts shared with the caller (read them from any thread).
struct facade_counters {
  std::atomic<uint64_t> dropped{0};
};

// Stops with an exit message of reason kill only: peers cannot stop it with exit messages.
messages::supervisor_actor spawn_facade(caf::actor_system& sys, messages::supervisor_actor inner,
                                        facade_options options,
                                        std::shared_ptr<facade_counters> counters = nullptr);

}  // namespace corral::actors
