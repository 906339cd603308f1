// Shared helpers of the scale tests: a fake engine on a fresh socket, a docker::client on
// it, blocking calls, and a runtime (actor system + supervisor) pointed at the fake.
#pragma once

#include <sys/resource.h>

#include <filesystem>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <caf/all.hpp>
#include <catch2/catch.hpp>

#include "actors/runtime_config.hpp"
#include "actors/supervisor.hpp"
#include "actors/supervisor_seams.hpp"
#include "app/fake_engine/fake_engine.hpp"
#include "docker/blocking.hpp"
#include "docker/client.hpp"
#include "messages/ask.hpp"
#include "messages/errors.hpp"
#include "messages/interfaces.hpp"
#include "messages/registration.hpp"
#include "tests/test_kit.hpp"

namespace corral::scale_tests {

using namespace std::chrono_literals;
using namespace corral::messages;
using steady = std::chrono::steady_clock;

inline constexpr const char* test_image = "corral/sandbox:busybox";

inline std::string fresh_socket_path() {
  static std::atomic<int> counter{0};
  return "/tmp/corral-fake-" + std::to_string(::getpid()) + "-" + std::to_string(++counter) +
         ".sock";
}

inline app::fake_engine_options fast_options() {
  app::fake_engine_options o;
  o.socket_path = fresh_socket_path();
  o.latency_scale = 0;
  return o;
}

// The fake's latencies as set, without jitter: a test that needs one request to stay in flight
// for a while sets that latency.
inline app::fake_engine_options exact_latency_options() {
  auto o = fast_options();
  o.latency_scale = 1;
  o.jitter = 0;
  return o;
}

inline double seconds_since(steady::time_point t) {
  return std::chrono::duration<double>(steady::now() - t).count();
}

// A field of /proc/self/status in KiB ("VmRSS", "VmHWM"); -1 if absent.
inline int64_t proc_status_kib(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0)
      return std::strtoll(line.c_str() + field.size() + 1, nullptr, 10);
  }
  return -1;
}

using test::eventually;

inline std::unique_ptr<docker::client> client_for(const app::fake_engine& fake,
                                                  std::chrono::milliseconds timeout = 20s) {
  docker::client_options options;
  options.http.socket_path = fake.socket_path();
  options.http.default_timeout = timeout;
  return std::make_unique<docker::client>(options);
}

template <class T, class Start>
docker::result<T> wait_for(Start&& start) {
  return docker::blocking<T>(std::forward<Start>(start));
}

// -- the runtime against the fake --------------------------------------------------------

struct scale_config : caf::actor_system_config {
  scale_config() {
    corral::messages::add_message_types(*this);
    set("scheduler.max-threads", 4);
    set("logger.verbosity", caf::atom("quiet"));
  }
};

inline std::string unique_runtime_name(const std::string& what) {
  static std::atomic<int> counter{0};
  return "s-" + what + "-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
}

// The corral error code of `err`, or nullopt when it is not a corral error (a CAF timeout,
// a dead actor: the kind of answer a caller must never get).
inline std::optional<corral_errc> corral_code(const caf::error& err) {
  if (err.category() != caf::atom("corral")) return std::nullopt;
  return static_cast<corral_errc>(err.code());
}

class runtime_harness {
  std::string run_root_;  // the sandboxes' run directories, removed at the end

 public:
  // Sandboxes "run the agent" as on the real engine: the fake engine answers its protocol
  // (app/fake_engine.cpp, "the in-memory agent") on a socket in a run directory of the test's
  // own (CORRAL_AGENT=none: the docker exec path instead). Ten thousand sandboxes hold three
  // descriptors each (the fake's listener, both ends of the link): the limit is raised.
  explicit runtime_harness(actors::runtime_config cfg,
                           actors::container_factory make = actors::spawn_container)
      : sys_(cfg_), self(sys_), cfg_rt_(std::move(cfg)) {
    const char* choice = std::getenv("CORRAL_AGENT");
    if (cfg_rt_.agent_path == "none") {
      cfg_rt_.agent_path.clear();  // a test of the docker exec path (its faults are HTTP's)
    } else if (cfg_rt_.agent_path.empty() && !(choice && std::string_view(choice) == "none")) {
      cfg_rt_.agent_path = "/nonexistent/corral-agent";  // bound, never run: the fake runs none
      static std::atomic<int> counter{0};
      run_root_ =
          "/tmp/corral-scale-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
      cfg_rt_.agent_run_root = run_root_;
      rlimit fds{};
      ::getrlimit(RLIMIT_NOFILE, &fds);
      if (fds.rlim_cur < 65536) {
        fds.rlim_cur = 65536;
        fds.rlim_max = std::max<rlim_t>(fds.rlim_max, 65536);
        ::setrlimit(RLIMIT_NOFILE, &fds);
      }
    }
    sup = actors::spawn_supervisor_with(sys_, cfg_rt_, std::move(make));
  }

  ~runtime_harness() {
    stop();
    std::error_code ignored;
    if (!run_root_.empty()) std::filesystem::remove_all(run_root_, ignored);
  }

  runtime_harness(const runtime_harness&) = delete;
  runtime_harness& operator=(const runtime_harness&) = delete;

  // Sends the supervisor an exit and waits until it is gone (it releases what it holds).
  bool stop(std::chrono::seconds patience = 60s) {
    if (!sup) return true;
    auto h = std::move(sup);
    sup = nullptr;
    self->monitor(h);
    self->send_exit(h, caf::exit_reason::user_shutdown);
    bool down = false, timed_out = false;
    while (!down && !timed_out) {
      self->receive([&](caf::down_msg& msg) { down = msg.source == h.address(); },
                    caf::after(patience) >> [&] { timed_out = true; });
    }
    if (!down) {
      self->send_exit(h, caf::exit_reason::kill);
      self->wait_for(h);
    }
    return down;
  }

  template <class T, class... Ts>
  caf::expected<T> ask(caf::timespan timeout, Ts&&... xs) {
    return messages::ask<T>(self, sup, timeout, std::forward<Ts>(xs)...);
  }

  // Runs n requests with at most `window` in flight: make(i) sends request i and returns
  // its handle; each answer goes to on_value(i, value) or on_error(i, error).
  template <class T, class Make, class OnValue, class OnError>
  void windowed(std::size_t n, std::size_t window, Make make, OnValue on_value, OnError on_error) {
    using handle = decltype(make(std::size_t{0}));
    std::deque<std::pair<std::size_t, handle>> pending;
    std::size_t next = 0;
    while (next < n || !pending.empty()) {
      while (next < n && pending.size() < window) {
        pending.emplace_back(next, make(next));
        ++next;
      }
      auto [i, h] = std::move(pending.front());
      pending.pop_front();
      h.receive([&, i = i](T& value) { on_value(i, value); },
                [&, i = i](caf::error& err) { on_error(i, err); });
    }
  }

  caf::actor_system& sys() { return sys_; }

 private:
  scale_config cfg_;
  caf::actor_system sys_;

 public:
  caf::scoped_actor self;
  supervisor_actor sup;

 private:
  actors::runtime_config cfg_rt_;
};

}  // namespace corral::scale_tests
