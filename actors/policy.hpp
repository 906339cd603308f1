// Sandbox-first policy: turns a caller's sandbox_spec into the exact container the engine
// gets, with the strict defaults filled in, or a typed error naming what was refused.
// Pure functions: no actors, no engine calls, so every rule is unit-tested.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "actors/runtime_config.hpp"
#include "docker/containers.hpp"
#include "docker/exec.hpp"
#include "messages/exec.hpp"
#include "messages/sandbox.hpp"

namespace corral::actors {

// What every sandbox gets unless its spec says otherwise (the policy's defaults are in
// actors/policy_file.hpp).
inline constexpr int64_t default_tmp_bytes = 64LL << 20;
inline constexpr const char* default_user = "1000:1000";

// Labels every corral container carries.
inline constexpr const char* label_managed_by = "corral.managed-by";
inline constexpr const char* label_runtime = "corral.runtime";
inline constexpr const char* label_key = "corral.key";
inline constexpr const char* label_created_at = "corral.created-at";
inline constexpr const char* label_spec_hash = "corral.spec-hash";
// Per-field digests of the spec (actors/spec_record.hpp): an acquire with another spec names
// the fields that differ.
inline constexpr const char* label_spec = "corral.spec";
// The principal whose key this is ("alice" of key "alice/session-42"); none for the embedder's.
inline constexpr const char* label_principal = "corral.principal";
// A random tag of the container actor that created it: a create that meets its own name
// (its answer lost, or sent again) knows the holder is its own (actors/container_claim.cpp).
inline constexpr const char* label_claim = "corral.claim";
// The sandbox's id: names its run directory, where its agent listens.
inline constexpr const char* label_sandbox_id = "corral.sandbox-id";
// Unix ms after which the sandbox is over (created-at + lifetime): reaped by any process.
inline constexpr const char* label_deadline = "corral.deadline";
// A member of a warm pool, and which: the pool's hash (pool_hash). It keeps the label when
// claimed; its name says which it is (pool_member_name, or the key's claim name).
inline constexpr const char* label_pool = "corral.pool";
// Labels bound to a key: a pool member has none of them (its agent holds the binding).
bool is_claim_label(std::string_view label);

// The workspace directory as it was checked: the container actor compares the mount the
// engine made against it before anything else runs in the sandbox.
struct workspace_identity {
  uint64_t device = 0;
  uint64_t inode = 0;
  std::string host_path;       // canonical, as bound
  std::string container_path;  // empty: no workspace
  bool writable = false;       // mounted rw
};

struct sandbox_plan {
  docker::container_create_request create;
  workspace_identity workspace;
  std::vector<std::string> warnings;
  std::string user;
  std::vector<std::string> setup_command;
  std::chrono::milliseconds exec_timeout{0};
  uint64_t max_stdout = 0;
  uint64_t max_stderr = 0;
  std::chrono::milliseconds lifetime{0};
  std::chrono::milliseconds idle_limit{0};
  std::string spec_hash;
  std::string spec_record;  // encoded, as in the corral.spec label
  // With the agent (use_agent): what it holds instead of the container's config.
  bool agent = false;
  std::string sandbox_id;                 // names the run directory (label corral.sandbox-id)
  std::string run_dir;                    // on the host
  std::vector<std::string> sandbox_env;   // given to each command, never to the container
  std::vector<std::string> main_command;  // the sandbox's `command`, run by the agent
  std::vector<std::string> command_caps;  // left in commands' bounding set
  // Hosts the sandbox may reach through the egress proxy (the request's --allow-host, each
  // within the policy's egress.allow); empty: no egress, no socket, nothing listens.
  std::vector<std::string> egress_hosts;
};

struct exec_plan {
  docker::exec_create_request create;
  std::vector<std::string> warnings;
  std::chrono::milliseconds timeout{0};
  uint64_t max_stdout = 0;
  uint64_t max_stderr = 0;
};

// -- request text ----------------------------------------------------------------------------

// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
bool valid_utf8(std::string_view s);

// What a request string may hold besides valid UTF-8.
enum class text_kind : uint8_t {
  single_line,  // no control characters at all (C0, DEL): paths, keys, names, images
  multi_line,   // TAB, LF and CR allowed: argv elements and env values (`sh -c` scripts)
};

// invalid_request naming `field` unless `s` is valid UTF-8 of the given kind. Every request
// string is checked with this before anything (the JSON writer) could rewrite it. The error
// shows single-line values (escaped), never multi-line ones (they may hold credentials).
caf::error check_text(std::string_view field, std::string_view s, text_kind kind);

// -- users -----------------------------------------------------------------------------------

// Numeric "uid[:gid]" only (a name could resolve to root in the image); a missing gid is the
// uid. uid or gid 0 needs the policy's users.allow_root, every other id its ranges. Returns
// the normalised "uid:gid".
caf::expected<std::string> check_user(const user_policy& users, std::string_view user);

// -- workspace -------------------------------------------------------------------------------

// After the start: stats /proc/<pid>/root<container path> and compares it with the identity
// recorded at plan time. A difference, or a failure to look, is a policy_violation.
caf::error verify_workspace_mount(const workspace_identity& checked, int64_t pid);

// -- the rest --------------------------------------------------------------------------------

// A sandbox key: KEY, or PRINCIPAL/KEY for a principal's (the facade scopes a node's keys).
caf::error check_key(std::string_view key);

// A principal's name, as a client gives it in the hello handshake and as a key's prefix.
caf::error check_principal_name(std::string_view name);
caf::error check_image_reference(std::string_view image);
// Prefix-boundary allowlist: an entry ending in '/', ':' or '@' is a prefix, any other entry a
// repository (any tag or digest of it); "*" allows any image; an empty list none.
bool image_allowed(std::string_view image, const std::vector<std::string>& allowlist);

// A capability as the engine takes it: upper case, without CAP_ ("cap_chown" is CHOWN), or
// nothing when `given` names none of Linux's capabilities (ALL is a name here: the checks
// refuse it as never granted). The policy file and requests both spell capabilities so.
std::optional<std::string> capability_name(std::string_view given);

// Capabilities never granted to a sandbox, whatever the policy lists (name normalised:
// capability_name).
bool is_never_granted_capability(std::string_view name);

// Network modes that would share a namespace outside the sandbox: never allowed.
bool shares_host_namespace(std::string_view network_mode);

// -- egress hosts ------------------------------------------------------------------------------

// An egress host entry: a DNS name, "*." and a DNS name (one or more whole labels), or an IP
// literal. Lower-cases `s` and drops a trailing dot; returns what is wrong, or empty.
std::string check_egress_pattern(std::string& s);
// Whether every host `requested` (a checked entry) matches is matched by `allowed`: equal, or
// `allowed` is "*.d" and `requested` is below d ("a.d", "*.a.d").
bool egress_pattern_covers(std::string_view allowed, std::string_view requested);
// The environment a command gets in a sandbox with egress: the proxies at the agent's
// 127.0.0.1:3128 and the trust bundle at /corral/run/ca.pem.
std::vector<std::string> egress_env();

// Env keys that never reach a sandbox: they redirect traffic or inject code.
bool is_reserved_env_key(std::string_view key);

// Every request is checked against cfg.policy: a request beyond it is a policy_violation
// "<what> (policy key <key> would allow it)"; what it leaves out takes the policy's defaults.
caf::expected<sandbox_plan> plan_sandbox(const runtime_config& cfg, const std::string& key,
                                         const messages::sandbox_spec& spec,
                                         const std::string& engine_socket, int64_t now_ms);

// Makes a planned sandbox run the agent as PID 1 (cfg.agent_path): root with SETUID, SETGID,
// KILL and SETPCAP only, no docker-init; the sandbox's env and command move from the
// container's config to the agent, and its run directory is bound at /corral/run.
void use_agent(sandbox_plan& plan, const runtime_config& cfg, const std::string& sandbox_id);

// The warm pool a planned sandbox can be taken from: a digest of its create config minus what
// is bound at claim (name, env, command, the claim labels). Empty: no pool can serve it (a
// workspace is checked and mounted per sandbox).
std::string pool_hash(const sandbox_plan& plan);
// A pool member's container name while nobody holds it. Never a key's claim name: those
// start "corral-".
std::string pool_member_name(const std::string& sandbox_id);
bool is_pool_member_name(std::string_view name);
// A cold sandbox's container name from its create until its claim (an unpooled create
// followed by the same claim as a pool member's): nobody's yet, like a pool member's.
std::string unclaimed_name(const std::string& sandbox_id);
bool is_unclaimed_name(std::string_view name);
// The container name that is a key's claim on the engine: derived from (runtime, key) alone
// (a node's key holds its principal), so the engine itself refuses a second container for a
// key (409), across processes and restarts.
std::string claim_name(const std::string& runtime, const std::string& key);

caf::expected<exec_plan> plan_exec(const runtime_config& cfg, const sandbox_plan& sandbox,
                                   const messages::exec_request& request);

}  // namespace corral::actors
