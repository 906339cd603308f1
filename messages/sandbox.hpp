// What a sandbox is asked to be (sandbox_spec) and what it is (sandbox_info).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <caf/meta/type_name.hpp>
#include <caf/timespan.hpp>

namespace corral::messages {

enum class access_mode : uint8_t { none, ro, rw };

enum class sandbox_status : uint8_t {
  creating,
  starting,
  ready,
  stopping,
  removed,
  exited,
  failed,
  timed_out,
  oom_killed,
  killed,
  lost,
};

const char* to_string(access_mode x) noexcept;
const char* to_string(sandbox_status x) noexcept;

// A sandbox in a terminal status is gone for good (removed, ended or lost); the others
// (creating, starting, ready, stopping) are on their way or live.
bool is_terminal(sandbox_status x) noexcept;

// A host directory mounted into the sandbox.
struct workspace_mount {
  std::string host_path;
  std::string container_path = "/workspace";
  access_mode access = access_mode::none;  // none: no workspace

  // Every field, in declaration order (tests check that what crossed the network arrived equal).
  bool operator==(const workspace_mount&) const = default;
};

struct tmpfs_mount {
  std::string path;
  int64_t size_bytes = 0;
  std::string options;  // extra mount options; corral adds uid/gid, noexec, nosuid

  // Every field, in declaration order (tests check that what crossed the network arrived equal).
  bool operator==(const tmpfs_mount&) const = default;
};

// Zero, empty or "unset" fields take the runtime's strict defaults (see actors/policy.hpp).
// Loosening is explicit: a field set here, per sandbox.
struct sandbox_spec {
  std::string image;
  std::vector<std::string> command;  // empty: a keep-alive
  std::map<std::string, std::string> env;
  std::string workdir;
  std::string user;
  workspace_mount workspace;
  std::vector<tmpfs_mount> tmpfs;  // empty: /tmp, 64 MiB
  int64_t memory_bytes = 0;
  int64_t memory_swap_bytes = 0;
  int64_t nano_cpus = 0;
  int64_t pids_limit = 0;
  std::string network_mode;  // empty: none
  bool writable_root = false;
  std::vector<std::string> cap_add;  // everything is dropped; these come back
  std::map<std::string, std::string> labels;
  std::vector<std::string> setup_command;  // run once after start; non-zero fails the sandbox
  caf::timespan exec_timeout{0};
  uint64_t max_stdout = 0;
  uint64_t max_stderr = 0;
  caf::timespan lifetime{0};
  caf::timespan idle_limit{0};
  // A one-shot sandbox (`corral run`): with no lifetime asked, it gets the policy's
  // run_lifetime, so an abandoned one ends by itself.
  bool one_shot = false;
  // Hosts the sandbox may reach through corral's egress proxy, each within the operator's
  // policy (egress.allow); empty: no egress at all.
  std::vector<std::string> allow_hosts;

  // Every field, in declaration order (tests check that what crossed the network arrived equal).
  bool operator==(const sandbox_spec&) const = default;
};

struct sandbox_info {
  std::string key;
  std::string container_id;
  std::string image;
  sandbox_status status = sandbox_status::creating;
  int64_t created_ms = 0;    // unix time
  int64_t last_used_ms = 0;  // unix time
  uint64_t execs_run = 0;
  uint64_t execs_in_flight = 0;
  int64_t memory_bytes = 0;
  int64_t nano_cpus = 0;
  int64_t pids_limit = 0;
  std::string detail;                 // why it failed or was lost, when it did
  std::vector<std::string> warnings;  // what policy changed, e.g. reserved env keys stripped

  // Every field, in declaration order (tests check that what crossed the network arrived equal).
  bool operator==(const sandbox_info&) const = default;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, workspace_mount& x) {
  return f(caf::meta::type_name("workspace_mount"), x.host_path, x.container_path, x.access);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, tmpfs_mount& x) {
  return f(caf::meta::type_name("tmpfs_mount"), x.path, x.size_bytes, x.options);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sandbox_spec& x) {
  return f(caf::meta::type_name("sandbox_spec"), x.image, x.command, x.env, x.workdir, x.user,
           x.workspace, x.tmpfs, x.memory_bytes, x.memory_swap_bytes, x.nano_cpus, x.pids_limit,
           x.network_mode, x.writable_root, x.cap_add, x.labels, x.setup_command, x.exec_timeout,
           x.max_stdout, x.max_stderr, x.lifetime, x.idle_limit, x.one_shot, x.allow_hosts);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sandbox_info& x) {
  return f(caf::meta::type_name("sandbox_info"), x.key, x.container_id, x.image, x.status,
           x.created_ms, x.last_used_ms, x.execs_run, x.execs_in_flight, x.memory_bytes,
           x.nano_cpus, x.pids_limit, x.detail, x.warnings);
}

}  // namespace corral::messages
