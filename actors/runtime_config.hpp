// How a runtime (one supervisor and its sandboxes) is set up. Defaults are the strict ones.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace corral::actors {

using namespace std::chrono_literals;

struct sandbox_plan;

// An inclusive range of numeric user or group ids.
struct id_range {
  uint32_t min = 1000;
  uint32_t max = 60000;
};

// Who a sandbox may run as; mirrors the policy file's
// "users": {"uids": {"min": 1000, "max": 60000}, "gids": {...}, "allow_root": false}.
struct user_policy {
  id_range uids;
  id_range gids;
  // uid 0 or gid 0 (root, or root's group) only when this is true; other ids need the ranges.
  bool allow_root = false;
};

struct runtime_config {
  // Goes into every container's labels: runtimes on one engine never touch each other's.
  std::string name = "local";
  std::string socket_path;  // empty: docker::resolve_engine_socket()

  std::string default_image = "corral/sandbox:busybox";
  // Prefix-boundary allowlist (see policy.hpp). Empty: any image.
  std::vector<std::string> image_allowlist = {"corral/"};
  // When not empty, only these env keys pass (reserved keys never do).
  std::vector<std::string> env_allowlist;

  uint64_t capacity = 64;                 // live sandboxes at most
  std::size_t max_execs_per_sandbox = 8;  // beyond: queued
  std::chrono::milliseconds prune_interval = 5s;
  std::chrono::milliseconds default_exec_timeout = 60s;
  std::chrono::milliseconds default_idle_limit = 0ms;  // zero: none
  std::chrono::milliseconds default_lifetime = 0ms;    // zero: none
  uint64_t default_max_output = 1 << 20;
  std::chrono::milliseconds stop_grace = 1s;
  std::chrono::milliseconds engine_timeout = 30s;  // per engine call
  bool keep_sandboxes_on_shutdown = false;
  // At shutdown, running execs get this long to finish before their sandboxes are removed.
  std::chrono::milliseconds shutdown_grace = 10s;

  // Ceilings: a request above them is a policy violation, not silently clamped.
  int64_t max_memory_bytes = 16LL << 30;
  int64_t max_nano_cpus = static_cast<int64_t>(std::thread::hardware_concurrency()) * 1'000'000'000;
  int64_t max_pids = 32768;
  uint64_t max_output_bytes = 256ULL << 20;
  std::chrono::milliseconds max_exec_timeout = 24h;
  // Request size bounds: a huge field is refused with a clear error, never buffered on.
  std::size_t max_argv_bytes = 1 << 20;
  std::size_t max_env_bytes = 256 << 10;
  std::size_t max_stdin_bytes = 64 << 20;

  // Numeric users only; see policy.hpp.
  user_policy users;
  // The engine's data root (dockerd --data-root): never a workspace, nor any directory above.
  std::string engine_data_root = "/var/lib/docker";

  // Test seam, never set in production: called by the container actor after the plan and
  // before the create, so a test can swap the workspace and see the start-time check refuse.
  std::function<void(const sandbox_plan&)> before_create_for_tests;
};

}  // namespace corral::actors
