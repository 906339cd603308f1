// The runtime tests' fixture: one actor system, one supervisor under a runtime name no other
// test uses, a scoped actor to ask it things, and a teardown that stops the supervisor and
// fails the test if any container of that runtime is left on the engine (removing it).
#pragma once

#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <caf/all.hpp>
#include <catch2/catch.hpp>

#include "actors/policy.hpp"
#include "actors/runtime_config.hpp"
#include "actors/supervisor.hpp"
#include "docker/blocking.hpp"
#include "docker/client.hpp"
#include "messages/ask.hpp"
#include "messages/errors.hpp"
#include "messages/interfaces.hpp"
#include "messages/registration.hpp"
#include "tests/test_kit.hpp"

namespace corral::runtime_tests {

using test::contains;
using test::eventually;
using test::test_slug;
using test::what;

using namespace std::chrono_literals;
using namespace corral::messages;
using steady = std::chrono::steady_clock;

inline constexpr const char* test_image = "corral/sandbox:busybox";

// -- names ---------------------------------------------------------------------------------

// "t-<test name>-<pid>-<counter>": unique per fixture, so tests never see each other's
// containers, and a leftover names the test that left it.
inline std::string unique_runtime_name() {
  static std::atomic<int> counter{0};
  return "t-" + test_slug(24) + "-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
}

// -- small helpers -------------------------------------------------------------------------

template <class T>
std::string what(const docker::result<T>& x) {
  return x ? std::string("ok") : x.err().describe();
}

// Asserts that a caf::expected or a docker::result holds a value, showing the error if not.
#define REQUIRE_OK(...)                                                             \
  do {                                                                              \
    const auto& require_ok_value_ = (__VA_ARGS__);                                  \
    INFO(#__VA_ARGS__ << ": " << ::corral::runtime_tests::what(require_ok_value_)); \
    REQUIRE(static_cast<bool>(require_ok_value_));                                  \
  } while (false)

#define CHECK_OK(...)                                                             \
  do {                                                                            \
    const auto& check_ok_value_ = (__VA_ARGS__);                                  \
    INFO(#__VA_ARGS__ << ": " << ::corral::runtime_tests::what(check_ok_value_)); \
    CHECK(static_cast<bool>(check_ok_value_));                                    \
  } while (false)

inline exec_request make_exec(std::vector<std::string> argv,
                              caf::timespan timeout = caf::timespan{0}) {
  exec_request req;
  req.argv = std::move(argv);
  req.timeout = timeout;
  return req;
}

inline std::vector<std::string> sh(std::string script) {
  return {"sh", "-c", std::move(script)};
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

// Resets VmHWM (the peak RSS) to the current RSS, so a later read shows the peak since now.
inline void reset_peak_rss() {
  std::ofstream("/proc/self/clear_refs") << "5";
}

inline std::string label_of(const docker::container_summary& c, const std::string& name) {
  auto it = c.labels.find(name);
  return it == c.labels.end() ? std::string() : it->second;
}

struct test_config : caf::actor_system_config {
  test_config() {
    corral::messages::add_message_types(*this);
    set("scheduler.max-threads", 4);
    set("logger.verbosity", caf::atom("quiet"));
  }
};

// -- the fixture ---------------------------------------------------------------------------

class runtime_fixture {
 public:
  // Sandboxes run the agent, as the CLI's and a node's do (CORRAL_AGENT=none: the docker exec
  // path, e.g. to compare).
  runtime_fixture() : sys_(cfg_), self(sys_) {
    rt.name = unique_runtime_name();
    const char* choice = std::getenv("CORRAL_AGENT");
    rt.agent_path = choice && std::string_view(choice) == "none" ? "" : CORRAL_AGENT_PATH;
  }

  ~runtime_fixture() {
    stop_all();
    check_no_leftovers(rt.name);
  }

  runtime_fixture(const runtime_fixture&) = delete;
  runtime_fixture& operator=(const runtime_fixture&) = delete;

  caf::actor_system& sys() { return sys_; }

  // The supervisor, spawned with `rt` on first use; after stop_supervisor() the next use
  // spawns a new one (a restart under the same runtime name).
  const supervisor_actor& sup() {
    if (!sup_) sup_ = actors::spawn_supervisor(sys_, rt);
    return sup_;
  }

  // Another supervisor (its own config), stopped at teardown.
  supervisor_actor spawn_other(const actors::runtime_config& cfg) {
    auto h = actors::spawn_supervisor(sys_, cfg);
    others_.push_back(h);
    return h;
  }

  // Sends the supervisor an exit (user_shutdown) and waits until it is gone.
  bool stop_supervisor() {
    if (!sup_) return true;
    auto h = std::move(sup_);
    sup_ = nullptr;
    return stop(h);
  }

  // -- requests ----------------------------------------------------------------------------

  template <class T, class... Ts>
  caf::expected<T> ask_of(const supervisor_actor& dest, caf::timespan timeout, Ts&&... xs) {
    return messages::ask<T>(self, dest, timeout, std::forward<Ts>(xs)...);
  }

  template <class T, class... Ts>
  caf::expected<T> ask(caf::timespan timeout, Ts&&... xs) {
    return ask_of<T>(sup(), timeout, std::forward<Ts>(xs)...);
  }

  caf::expected<sandbox_info> acquire(const std::string& key, sandbox_spec spec = {}) {
    return ask<sandbox_info>(caf::timespan{120s}, acquire_atom_v, key, std::move(spec));
  }

  caf::expected<sandbox_info> lookup(const std::string& key) {
    return ask<sandbox_info>(caf::timespan{30s}, lookup_atom_v, key);
  }

  caf::expected<exec_result> exec(const std::string& key, exec_request req) {
    const auto limit =
        (req.timeout.count() > 0 ? req.timeout : caf::timespan{60s}) + caf::timespan{60s};
    return ask<exec_result>(limit, exec_atom_v, key, std::move(req));
  }

  caf::expected<exec_result> exec(const std::string& key, std::vector<std::string> argv,
                                  caf::timespan timeout = caf::timespan{0}) {
    return exec(key, make_exec(std::move(argv), timeout));
  }

  caf::expected<sandbox_info> release(const std::string& key,
                                      release_mode mode = release_mode::cancel_execs) {
    return ask<sandbox_info>(caf::timespan{120s}, release_atom_v, key, mode);
  }

  caf::expected<uint64_t> release_all(release_mode mode = release_mode::cancel_execs) {
    return ask<uint64_t>(caf::timespan{180s}, release_all_atom_v, mode);
  }

  caf::expected<std::vector<sandbox_info>> list() {
    return ask<std::vector<sandbox_info>>(caf::timespan{60s}, list_atom_v);
  }

  caf::expected<runtime_stats> stats() {
    return ask<runtime_stats>(caf::timespan{30s}, stats_atom_v);
  }

  caf::expected<std::vector<std::string>> prune(caf::timespan idle,
                                                caf::timespan max_age = caf::timespan{0}) {
    return ask<std::vector<std::string>>(caf::timespan{60s}, prune_atom_v, idle, max_age);
  }

  // -- the engine, seen directly -----------------------------------------------------------

  docker::client& engine() {
    if (!docker_) {
      docker::client_options options;
      auto socket = docker::resolve_engine_socket();
      options.http.socket_path = socket ? *socket : "/var/run/docker.sock";
      options.http.default_timeout = 60s;
      docker_ = std::make_unique<docker::client>(options);
    }
    return *docker_;
  }

  // Every container (any state) labelled with this runtime name.
  docker::result<std::vector<docker::container_summary>> engine_containers(
      const std::string& runtime) {
    docker::container_list_options options;
    options.all = true;
    options.filters["label"] = {std::string(actors::label_runtime) + "=" + runtime};
    return docker::blocking<std::vector<docker::container_summary>>(
        [&](auto done) { engine().container_list(options, std::move(done)); });
  }

  std::vector<docker::container_summary> containers() {
    auto listed = engine_containers(rt.name);
    REQUIRE_OK(listed);
    return std::move(*listed);
  }

  // The host uid of the sandbox's root: 0, or the first uid of the engine's remapped range
  // (its data root names it: /var/lib/docker/100000.100000).
  uint32_t remapped_root() {
    auto info =
        docker::blocking<docker::system_info>([&](auto done) { engine().info(std::move(done)); });
    REQUIRE_OK(info);
    if (!info->userns_remapped()) return 0;
    const auto& root = info->docker_root_dir;
    return static_cast<uint32_t>(std::stoul(root.substr(root.rfind('/') + 1)));
  }

  docker::result<docker::container_inspect_response> inspect(const std::string& id) {
    return docker::blocking<docker::container_inspect_response>(
        [&](auto done) { engine().container_inspect(id, std::move(done)); });
  }

  // Fails the test if a container of `runtime` is still there, and removes it.
  void check_no_leftovers(const std::string& runtime) {
    auto listed = engine_containers(runtime);
    if (!listed) {
      FAIL_CHECK("teardown: cannot list containers of runtime " << runtime << ": "
                                                                << listed.err().describe());
      return;
    }
    for (const auto& c : *listed) {
      FAIL_CHECK("teardown: container " << c.id.substr(0, 12) << " (" << c.state << ", key "
                                        << label_of(c, actors::label_key) << ") of runtime "
                                        << runtime << " was left behind; removing it");
      auto removed = docker::blocking<void>(
          [&](auto done) { engine().container_remove(c.id, true, std::move(done)); });
      if (!removed)
        FAIL_CHECK("teardown: could not remove " << c.id << ": " << removed.err().describe());
    }
  }

  actors::runtime_config rt;  // edit before the first request (or between stop and restart)

 private:
  bool stop(const supervisor_actor& h) {
    self->monitor(h);
    self->send_exit(h, caf::exit_reason::user_shutdown);
    bool down = false;
    bool timed_out = false;
    while (!down && !timed_out) {
      self->receive([&](caf::down_msg& msg) { down = msg.source == h.address(); },
                    caf::after(std::chrono::seconds(90)) >> [&] { timed_out = true; });
    }
    if (!down) {
      FAIL_CHECK("the supervisor did not stop within 90 s of an exit message; killing it");
      self->send_exit(h, caf::exit_reason::kill);
      self->wait_for(h);
    }
    return down;
  }

  void stop_all() {
    stop_supervisor();
    for (auto& h : others_) stop(h);
    others_.clear();
  }

  test_config cfg_;
  caf::actor_system sys_;

 public:
  caf::scoped_actor self;

 private:
  supervisor_actor sup_;
  std::vector<supervisor_actor> others_;
  std::unique_ptr<docker::client> docker_;
};

// A directory holding one static probe (tests/probes/) as `probe`, mounted read-only into a
// sandbox: what a hostile command would run there.
struct probe_dir {
  std::filesystem::path path;
  explicit probe_dir(const std::string& probe_binary) {
    namespace fs = std::filesystem;
    char tmpl[] = "/tmp/corral-probe-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
    fs::copy_file(probe_binary, path / "probe");
    fs::permissions(path, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                              fs::perms::others_read | fs::perms::others_exec);
  }
  ~probe_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  probe_dir(const probe_dir&) = delete;
  probe_dir& operator=(const probe_dir&) = delete;

  // The probe at /workspace/probe, for the default user.
  sandbox_spec spec(actors::runtime_config& rt) const {
    rt.policy.workspace_roots = {{path.string(), false}};
    sandbox_spec out;
    out.workspace.host_path = path.string();
    out.workspace.access = access_mode::ro;
    return out;
  }
  // The same for the container's root (the policy allows it).
  sandbox_spec root_spec(actors::runtime_config& rt) const {
    rt.policy.users.allow_root = true;
    auto out = spec(rt);
    out.user = "0:0";
    return out;
  }
};

}  // namespace corral::runtime_tests
