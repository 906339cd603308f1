// The operator's policy: what any request to this runtime may ask. A request only chooses
// within it. Read from a JSON file (`/etc/corral/policy.json`, or `--policy FILE`) by the
// node and the CLI, or built in code by an embedder (runtime_config::policy). The schema, and
// both built-in defaults, are in README.md ("The policy file"). No CAF here.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace corral::actors {

// Where corral looks for the policy when no --policy is given.
inline constexpr const char* system_policy_path = "/etc/corral/policy.json";

// An inclusive range of numeric user or group ids.
struct id_range {
  uint32_t min = 1000;
  uint32_t max = 60000;
  bool operator==(const id_range&) const = default;
};

// Who a sandbox may run as: "users": {"uids": {...}, "gids": {...}, "allow_root": false}.
struct user_policy {
  id_range uids;
  id_range gids;
  // uid 0 or gid 0 (root, or root's group) only when this is true; other ids need the ranges.
  bool allow_root = false;
  bool operator==(const user_policy&) const = default;
};

// A host directory under which workspaces may be mounted ("/" : anywhere). The system
// directories, the engine's state and its socket stay refused below any root.
struct workspace_root {
  std::string path;       // absolute, normalised
  bool writable = false;  // false: only read-only (:ro) workspaces below it
  bool operator==(const workspace_root&) const = default;
};

// Ceilings: a request above one is a policy_violation naming the key, never clamped.
struct policy_limits {
  int64_t memory = 2LL << 30;
  int64_t nano_cpus = 2'000'000'000;
  int64_t pids = 1024;
  std::chrono::milliseconds timeout = std::chrono::hours(1);    // per command
  std::chrono::milliseconds lifetime = std::chrono::hours(24);  // per sandbox
  uint64_t max_output = 16ULL << 20;                            // per stream of one command
  bool operator==(const policy_limits&) const = default;
};

// What a request gets for what it leaves out.
struct policy_defaults {
  std::string image = "corral/sandbox:busybox";
  int64_t memory = 512LL << 20;
  int64_t nano_cpus = 1'000'000'000;
  int64_t pids = 256;
  std::chrono::milliseconds timeout = std::chrono::seconds(60);
  uint64_t max_output = 1ULL << 20;
  std::chrono::milliseconds lifetime{0};  // zero: limits.lifetime
  std::chrono::milliseconds idle{0};      // zero: no idle limit
  bool operator==(const policy_defaults&) const = default;
};

// What the whole runtime holds at once.
struct policy_budget {
  uint64_t sandboxes = 64;      // live sandboxes
  int64_t memory = 32LL << 30;  // the sum of the live sandboxes' memory limits
  uint64_t execs = 256;         // commands running or queued
  bool operator==(const policy_budget&) const = default;
};

// What one principal holds at once (a node's facade enforces it, actors/facade.hpp).
struct principal_budget {
  uint64_t sandboxes = 16;
  uint64_t execs = 32;
  uint64_t queued_execs = 64;
  bool operator==(const principal_budget&) const = default;
};

// A warm pool the operator keeps (runtime_config.warm is one of the default spec): sandboxes of
// this image and these limits (zero: the defaults') made before anyone asks.
struct pool_entry {
  std::string image;  // empty: defaults.image
  int64_t memory = 0;
  int64_t nano_cpus = 0;
  int64_t pids = 0;
  uint64_t min = 1;
  uint64_t max = 0;  // zero: twice min
  bool operator==(const pool_entry&) const = default;
};

// A header the egress proxy adds for one host, its value read from a file at each bind (a
// rotated secret takes effect for the next sandbox); the sandbox never sees it.
struct egress_credential_entry {
  std::string host;        // exact name
  std::string header;      // e.g. Authorization
  std::string value_file;  // absolute path, read by the runtime (root's)
  std::string scheme;      // prepended with a space when not empty, e.g. "Bearer"
  bool operator==(const egress_credential_entry&) const = default;
};

// What sandboxes may reach through the egress proxy (README.md, "Egress"). A request names
// the hosts it needs (`--allow-host`), each within `allow` and outside `deny`; with no
// `allow`, no sandbox gets egress at all.
struct egress_policy {
  std::vector<std::string> allow;  // names, or "*.name" (one or more whole labels)
  std::vector<std::string> deny;   // wins over allow
  std::vector<uint16_t> ports = {443, 80};
  std::vector<std::string> allow_private_cidrs;  // e.g. "127.0.0.0/8": reachable anyway
  std::vector<egress_credential_entry> credentials;
  int64_t max_bytes_per_sandbox = 1LL << 30;
  std::map<std::string, std::string> resolve;  // name -> IP literal, before the resolver
  std::string upstream_ca;                     // empty: the host's system store
  bool operator==(const egress_policy&) const = default;
};

struct policy {
  // Prefix-boundary allowlist (actors/policy.hpp image_allowed); "*" allows any image.
  std::vector<std::string> images = {"corral/"};
  user_policy users;
  std::vector<workspace_root> workspace_roots;  // empty: no workspace at all
  // Network modes a sandbox may ask for; "none" is always allowed. host and container:*
  // never are.
  std::vector<std::string> networks = {"none"};
  // Capabilities a sandbox may add back (normalised: upper case, no CAP_ prefix). The
  // never-granted set (SYS_ADMIN, ...) is refused even when listed in code.
  std::vector<std::string> capabilities;
  // When not empty, only these env keys pass (reserved keys never do).
  std::vector<std::string> env_allowlist;
  policy_limits limits;
  policy_defaults defaults;
  bool writable_root = false;
  policy_budget budget;
  principal_budget per_principal;
  // The lifetime of a `corral run` sandbox that asks for none: an abandoned one ends by itself.
  std::chrono::milliseconds run_lifetime = std::chrono::hours(1);
  // Principals who see and manage every principal's sandboxes (ls, rm --all, prune, and
  // PRINCIPAL/KEY for one sandbox).
  std::vector<std::string> admins;
  // A node whose policy lets a sandbox write to the host (a writable workspace root) or run as
  // root refuses to start on an engine that does not remap user namespaces, unless this is
  // false: without remapping, uid 0 in a sandbox is root on the host for every file it reaches.
  bool require_userns_remap = true;
  // Warm pools a node keeps ("The warm pool" in README.md).
  std::vector<pool_entry> pools;
  // Egress through the proxy outside the sandbox; off unless `allow` names hosts.
  egress_policy egress;

  // Whether this policy lets a sandbox write host files or be root (what remapping protects).
  bool reaches_host_files() const;

  // `corral node` without a policy file: no workspaces, no root, no capabilities, no writable
  // root, network none only. Also what a key left out of a policy file takes.
  static policy node_default();
  // The embedded runtime (its caller holds the engine socket: root-equivalent already): as
  // node_default, and workspaces anywhere outside the host's system directories.
  static policy embedded_default();

  bool operator==(const policy&) const = default;
};

// A parsed policy, or why not: "SOURCE:LINE: KEY.PATH: what is wrong" (LINE where known).
struct parsed_policy {
  std::optional<policy> value;
  std::string error;
  explicit operator bool() const { return value.has_value(); }
};

// Parses and validates a policy file's text. Keys left out take node_default()'s values.
// Unknown keys, duplicate keys, wrong types and values out of range are errors naming the key.
parsed_policy parse_policy(std::string_view json, std::string_view source_name);

// Reads and parses the file at `path` (at most 1 MiB), then checks it against this host
// (check_policy_for_host with /proc/sys/kernel/pid_max).
parsed_policy load_policy_file(const std::string& path);

// Empty, or why the policy does not suit a host whose kernel.pid_max is `pid_max`: the pids
// ceiling must stay far below it (at most an eighth), or one sandbox could exhaust the host.
std::string check_policy_for_host(const policy& p, uint64_t pid_max);

// The effective policy as JSON, every value filled in, in the file's own form ("512m", "1h").
std::string to_json(const policy& p);

}  // namespace corral::actors
