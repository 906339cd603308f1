// How a runtime (one supervisor and its sandboxes) is set up. What a request may ask is the
// operator's policy (actors/policy_file.hpp); the rest here is how the runtime runs.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "actors/egress_service.hpp"
#include "actors/policy_file.hpp"

namespace corral::actors {

using namespace std::chrono_literals;

struct sandbox_plan;

struct runtime_config {
  // Goes into every container's labels: runtimes on one engine never touch each other's.
  std::string name = "local";
  std::string socket_path;  // empty: docker::resolve_engine_socket()

  // Everything a request may ask, and what it gets when it asks for nothing. An embedder's
  // caller holds the engine socket already; `corral node` uses policy::node_default().
  actors::policy policy = actors::policy::embedded_default();

  std::size_t max_execs_per_sandbox = 8;  // beyond: queued
  std::chrono::milliseconds prune_interval = 5s;
  std::chrono::milliseconds stop_grace = 1s;
  std::chrono::milliseconds engine_timeout = 30s;  // per engine call
  bool keep_sandboxes_on_shutdown = false;
  // Set by a holder of the name's lock (actors/runtime_lock.hpp, `corral node`): no other
  // process makes containers of this name, so one found in `created` at start is a dead
  // process's create and goes at once (otherwise it is spared a minute: embedded CLI
  // processes share their name and may be starting it).
  bool exclusive_name = false;
  // At shutdown, running execs get this long to finish before their sandboxes are removed.
  std::chrono::milliseconds shutdown_grace = 10s;

  // Request size bounds: a huge field is refused with a clear error, never buffered on. They
  // protect the runtime's own memory, whatever the policy.
  std::size_t max_argv_bytes = 1 << 20;
  std::size_t max_env_bytes = 256 << 10;
  std::size_t max_stdin_bytes = 64 << 20;

  // The HMAC key of environment values in a sandbox's spec record (actors/spec_record.hpp).
  // Empty: the supervisor loads it from spec_secret_path (root) or makes one for the process.
  std::string spec_secret;
  std::string spec_secret_path;  // a node keeps it beside its TLS material

  // The engine's data root (dockerd --data-root): never a workspace, nor any directory above.
  std::string engine_data_root = "/var/lib/docker";

  // The sandbox agent (app/agent/): set, every sandbox runs it as PID 1 and commands go
  // through it; empty, commands are `docker exec`s (the fake engine, which runs no process).
  std::string agent_path;
  // Each sandbox's run directory (its agent's socket) is made here, mode 0700, owned by the
  // host uid/gid the engine maps the sandbox's root to (0 unless it remaps user namespaces).
  std::string agent_run_root = "/run/corral/sandboxes";
  uint32_t agent_root_uid = 0;
  uint32_t agent_root_gid = 0;

  // The warm pool (needs agent_path): this many sandboxes of the default spec (an acquire
  // that asks for nothing beyond the policy's defaults, and any whose create config is the
  // same) are kept started and unbound; an acquire takes one and binds it in a few ms. Misses
  // grow it toward warm_max (0: twice warm); members are made one at a time
  // (warm_parallel); one unclaimed for pool_unclaimed_limit ends by itself (its node gone)
  // and is replaced before that while its node runs.
  std::size_t warm = 0;
  std::size_t warm_max = 0;
  std::size_t warm_parallel = 1;
  std::chrono::milliseconds pool_unclaimed_limit = 1h;

  // Egress (policy.egress, a request's allow_hosts): where the proxy keeps its CA and its
  // decision log. The service itself is made by spawn_supervisor unless an embedder shares one.
  egress_settings egress_options;
  std::shared_ptr<egress_service> egress;

  // Where the runtime's warnings go (a warm pool that keeps missing, a pool spec the policy
  // refuses); `corral node` gives its log. Empty: stderr, "corral: warning: ...".
  std::function<void(const std::string&)> warn;

  // Test seam, never set in production: called by the container actor after the plan and
  // before the create, so a test can swap the workspace and see the start-time check refuse.
  std::function<void(const sandbox_plan&)> before_create_for_tests;
  // Test seam: called between a warm sandbox's rename to its key and its binding (the
  // crash trial kills the process here).
  std::function<void()> after_claim_rename_for_tests;
};

}  // namespace corral::actors
