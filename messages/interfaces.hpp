// The typed actor interfaces: what a caller may send to a supervisor or a container actor.
#pragma once

#include <string>
#include <vector>

#include <caf/atom.hpp>
#include <caf/replies_to.hpp>
#include <caf/type_id.hpp>
#include <caf/typed_actor.hpp>

#include "messages/exec.hpp"
#include "messages/runtime_stats.hpp"
#include "messages/sandbox.hpp"

CAF_ADD_ATOM(corral, corral::messages, acquire_atom, "acquire")
CAF_ADD_ATOM(corral, corral::messages, lookup_atom, "lookup")
CAF_ADD_ATOM(corral, corral::messages, exec_atom, "exec")
CAF_ADD_ATOM(corral, corral::messages, release_atom, "release")
CAF_ADD_ATOM(corral, corral::messages, release_all_atom, "releaseall")
CAF_ADD_ATOM(corral, corral::messages, list_atom, "list")
CAF_ADD_ATOM(corral, corral::messages, stats_atom, "stats")
CAF_ADD_ATOM(corral, corral::messages, prune_atom, "prune")
CAF_ADD_ATOM(corral, corral::messages, output_atom, "output")
CAF_ADD_ATOM(corral, corral::messages, hello_atom, "hello")

namespace corral::messages {

// The protocol's version: a client and a node must agree on it (hello_atom).
inline constexpr int32_t protocol_version = 3;

// What a release does with execs still running.
// wait_for_execs: running commands finish first; cancel_execs: they are killed; detach: killed,
// and the release is answered as soon as it has begun (the removal goes on in the runtime,
// off the caller's path: `corral run`).
enum class release_mode : uint8_t { wait_for_execs, cancel_execs, detach };
const char* to_string(release_mode x) noexcept;

// The runtime's front door: keyed sandboxes.
using supervisor_actor = caf::typed_actor<
    // Get-or-create: concurrent acquires of one key make exactly one container.
    caf::replies_to<acquire_atom, std::string, sandbox_spec>::with<sandbox_info>,
    caf::replies_to<lookup_atom, std::string>::with<sandbox_info>,
    caf::replies_to<exec_atom, std::string, exec_request>::with<exec_result>,
    caf::replies_to<release_atom, std::string, release_mode>::with<sandbox_info>,
    caf::replies_to<release_all_atom, release_mode>::with<uint64_t>,
    caf::replies_to<list_atom>::with<std::vector<sandbox_info>>,
    caf::replies_to<stats_atom>::with<runtime_stats>,
    // Prune now: idle longer than the first span or older than the second (zero: no limit).
    caf::replies_to<prune_atom, caf::timespan, caf::timespan>::with<std::vector<std::string>>,
    // Version handshake: the caller's protocol version; the reply is the node's (and its
    // corral version). Kept from protocol 2 so that old clients can name both versions.
    caf::replies_to<hello_atom, int32_t>::with<int32_t, std::string>,
    // Protocol 3: the caller's version and principal (a node's keys, quotas, ownership and
    // audit are per principal, actors/facade.hpp); the reply as above.
    caf::replies_to<hello_atom, int32_t, std::string>::with<int32_t, std::string>>;

// One container, owned for its whole life.
using container_actor =
    caf::typed_actor<caf::replies_to<acquire_atom>::with<sandbox_info>,  // resolves once the
                                                                         // sandbox is ready
                     caf::replies_to<lookup_atom>::with<sandbox_info>,
                     caf::replies_to<exec_atom, exec_request>::with<exec_result>,
                     caf::replies_to<release_atom, release_mode>::with<sandbox_info>>;

}  // namespace corral::messages
