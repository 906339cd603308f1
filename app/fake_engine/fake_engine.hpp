// A fake Docker engine for scale and fault-injection runs of corral: an HTTP/1.1 server on a
// unix socket that speaks the part of Engine API 1.41 corral uses, keeps containers and execs
// in memory, and answers with the real engine's latencies (scaled, jittered) or none.
//
// Correctness is the real engine's business (tests/engine, tests/runtime); this is for ten
// thousand sandboxes on one machine and for faults a real engine will not produce on demand:
// 500s, dropped connections, slow answers, streams cut mid-frame, lost events. Every fault is
// drawn from one seeded generator, so a run with the same seed and request order repeats.
//
// Everything runs on one Asio thread, asynchronously: latencies are timers, never sleeps.
// The public methods are safe from any other thread (not from the fake's own).
//
// The library corral_fake_engine (README.md beside this file) is a test kit: the shipped
// `corral` does not link it; `corral-fake-engine` serves it on its own, `corral-stress` and
// the scale tests in process.
//
// Exec commands are not run; they are recognised (programs.hpp):
//   echo ARGS            stdout "ARGS\n", exit 0
//   sh -c SCRIPT         a tiny interpreter: pieces split on ';', '&&', '||', '\n':
//                        echo X (>&2 to stderr), sleep S, exit N, true, false, :,
//                        head -c N /dev/zero, cat; any other piece is echoed as text
//   sh -c SCRIPT corral-kill TAG
//                        corral's exec killer: ends every running exec of the container whose
//                        env holds CORRAL_EXEC=TAG (their streams close, exit code 137)
//   sleep S              runs S seconds (capped by max_sleep), killable
//   head -c N /dev/zero  N zero bytes on stdout, in 32 KiB frames, with backpressure
//   cat                  echoes stdin
//   true / false         exit 0 / 1
//   anything else        exit 126, the runtime's "executable file not found" on stdout
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace corral::app {

using namespace std::chrono_literals;

// Latencies are the real engine's medians on corral's build machines (Engine 20.10.24,
// 2 cores, cgroup v1), from /work/shared/notes/docker-engine.md, "What the engine costs here",
// minimal raw-socket client column:
//   create + start 195-220 ms  -> create 100 ms + start 105 ms
//   exec round trip 49-56 ms   -> exec create 3 ms + exec start 45 ms + exec inspect 2 ms
//                                 (the start dominates: ~52 ms of CPU in `runc exec`)
//   remove with force 50-57 ms -> remove 50 ms
// Not measured there, so estimates: inspect 3 ms and list 5 ms (the brief's 2-5 ms), stop of
// a container whose init forwards SIGTERM 30 ms, kill 10 ms, ping/version/info 1 ms.
struct fake_engine_latencies {
  std::chrono::microseconds ping = 1ms;  // /_ping, /version, /info
  std::chrono::microseconds create = 100ms;
  std::chrono::microseconds start = 105ms;
  std::chrono::microseconds stop = 30ms;
  std::chrono::microseconds kill = 10ms;
  std::chrono::microseconds remove = 50ms;
  std::chrono::microseconds inspect = 3ms;  // container and image inspect
  std::chrono::microseconds list = 5ms;
  std::chrono::microseconds exec_create = 3ms;
  std::chrono::microseconds exec_start = 45ms;  // before the 101 answer
  std::chrono::microseconds exec_inspect = 2ms;
  std::chrono::microseconds other = 2ms;  // wait, logs, stats, pause, rename, archive
};

struct fake_engine_options {
  std::string socket_path;
  int backlog = 1024;

  fake_engine_latencies latency;
  double latency_scale = 1.0;  // multiplies every latency; 0: answer at once (no timer)
  double jitter = 0.10;        // each latency is drawn uniformly from +-jitter around it
  // The engine's CPUs. The latency of the heavy requests (create, start, stop, kill, remove,
  // exec start: runc and the shim) is work that holds one of them, so at most this many are
  // in their latency at once and the rest queue, as on the real engine, where 8 concurrent
  // execs saturate both cores (43-48 execs/s; create+start then about 10/s). Lookups
  // (inspect, list, exec create/inspect, ping) only wait. 0: no limit.
  int engine_cpus = 2;

  // Images that exist: any name starting with one of these (empty: any image at all).
  std::vector<std::string> image_prefixes = {"corral/"};
  // `sleep S` runs at most this long (program time: not scaled by latency_scale). A
  // container's main process sleeping longer than this runs until it is stopped.
  std::chrono::milliseconds max_sleep = 300s;
  // Exec records kept per container: beyond this the oldest finished ones are forgotten (their
  // inspect answers 404, as the real engine's does once it has collected them).
  std::size_t max_exec_records = 1024;

  // -- faults: probabilities in [0, 1], drawn per request from one generator -------------
  uint64_t seed = 1;
  // Answer 500 {"message":"fake engine: injected failure"} (after the latency).
  double error_rate = 0;
  // Per endpoint class (see fake_engine::endpoint_classes()); overrides error_rate there.
  std::map<std::string, double> error_rates;
  // Close the connection (SO_LINGER 0) right after reading the request, doing nothing.
  double reset_rate = 0;
  std::map<std::string, double> reset_rates;
  // Do the work, then close the connection (SO_LINGER 0) instead of answering: the client
  // cannot know whether a create, start or remove happened.
  double reset_after_rate = 0;
  std::map<std::string, double> reset_after_rates;
  // Answer slow_delay later than usual (not scaled).
  double slow_rate = 0;
  std::chrono::milliseconds slow_delay = 2s;
  // Exec start and logs: cut the stream mid-frame and close. The exec itself ends normally.
  double truncate_rate = 0;
  // Skip emitting an event (to every subscriber).
  double drop_event_rate = 0;
};

struct fake_engine_stats {
  std::map<std::string, uint64_t> requests;  // per endpoint class
  uint64_t requests_total = 0;
  uint64_t connections_open = 0;
  uint64_t connections_total = 0;
  uint64_t containers = 0;  // live (any state)
  uint64_t containers_running = 0;
  uint64_t containers_created_total = 0;
  uint64_t containers_removed_total = 0;
  uint64_t execs_running = 0;
  uint64_t execs_total = 0;
  uint64_t execs_killed = 0;    // by a corral-kill exec, a container kill or a removal
  uint64_t cpu_queued_max = 0;  // the longest queue for the engine's CPUs (engine_cpus)
  uint64_t event_subscribers = 0;
  uint64_t events_emitted = 0;
  // What was injected.
  std::map<std::string, uint64_t> injected_errors;  // per endpoint class
  std::map<std::string, uint64_t> injected_resets;
  std::map<std::string, uint64_t> injected_resets_after;
  uint64_t injected_slow = 0;
  uint64_t injected_truncations = 0;
  uint64_t dropped_events = 0;

  uint64_t injected_errors_total() const;
  uint64_t injected_resets_total() const;
  uint64_t injected_resets_after_total() const;
  std::string summary() const;  // one line per figure, for reports
};

// One container as the fake holds it.
struct fake_container_view {
  std::string id;
  std::string name;  // without the leading '/'
  std::string image;
  std::string state;  // created | running | paused | exited
  int64_t exit_code = 0;
  std::map<std::string, std::string> labels;
  uint64_t execs = 0;  // exec records kept for it
};

class fake_engine {
 public:
  // Binds and listens (removing a stale socket file first), then serves on its own thread.
  // Throws std::system_error when the socket cannot be bound.
  explicit fake_engine(fake_engine_options options);
  ~fake_engine();  // stop()

  fake_engine(const fake_engine&) = delete;
  fake_engine& operator=(const fake_engine&) = delete;

  // Closes the listener, every connection and stream, joins the thread, removes the socket
  // file. Idempotent.
  void stop();

  const std::string& socket_path() const noexcept;
  const fake_engine_options& options() const noexcept;

  fake_engine_stats stats() const;
  std::vector<fake_container_view> containers() const;

  // Test hooks. The container's main process is OOM-killed: events oom + die (exitCode 137),
  // State.OOMKilled true, its running execs end with 137. False if no such running container.
  bool inject_oom(const std::string& id_or_name);
  // Changes the fault probabilities of a running fake (the rest of its options stay).
  void set_faults(double error_rate, double reset_rate, double truncate_rate,
                  double drop_event_rate);

  // "ping", "version", "info", "create", "start", "stop", "kill", "remove", "inspect",
  // "list", "wait", "rename", "pause", "unpause", "logs", "stats", "exec_create",
  // "exec_start", "exec_inspect", "events", "image", "archive", "unknown".
  static const std::vector<std::string>& endpoint_classes();

  class impl;

 private:
  std::shared_ptr<impl> impl_;
};

}  // namespace corral::app
