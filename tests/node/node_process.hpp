// The node tests' helpers: `corral` child processes (a node, or a CLI client) started with
// posix_spawn, their output captured; an in-process CAF config with the middleman; and a
// fixture that, at teardown, kills what still runs and fails the test (removing them) if
// any container of its node names is left on the engine.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <catch2/catch.hpp>

#include "actors/policy.hpp"
#include "app/tls_listener.hpp"
#include "app/tls_material.hpp"
#include "docker/blocking.hpp"
#include "docker/client.hpp"
#include "docker/system.hpp"
#include "messages/ask.hpp"
#include "messages/errors.hpp"
#include "messages/interfaces.hpp"
#include "messages/registration.hpp"
#include "tests/test_kit.hpp"

extern char** environ;

namespace corral::node_tests {

using test::contains;
using test::eventually;
using test::test_slug;
using test::what;

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

inline constexpr const char* cli_path = CORRAL_CLI_PATH;

inline std::chrono::milliseconds since(steady::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - start);
}

// "tn-<test name>-<pid>-<counter>": unique per call, so tests never see each other's
// containers, and a leftover names the test that left it.
inline std::string unique_name(std::string_view hint = {}) {
  static std::atomic<int> counter{0};
  std::string out =
      "tn-" + test_slug(16) + "-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
  if (!hint.empty()) out += "-" + std::string(hint);
  return out;
}

// -- TLS -----------------------------------------------------------------------------------

// This test process's TLS directory: every node it starts makes its material there on first
// start (`--tls-dir`), and every client (CLI or in-process) uses its client.pem. Removed at
// exit.
inline const std::string& tls_dir() {
  struct dir {
    std::string path = "/tmp/corral-node-tests-" + std::to_string(::getpid()) + "-tls";
    ~dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const dir d;
  return d.path;
}

// -- child processes -----------------------------------------------------------------------

// One child process with its stdout and stderr captured by a reader thread. The environment
// is this process's, minus CORRAL_NODE, CORRAL_RUNTIME and CORRAL_TLS_DIR, plus
// CORRAL_TLS_DIR=tls_dir() (unless `env` names it: an empty value leaves it unset), plus
// `env`.
class child_process {
 public:
  explicit child_process(std::vector<std::string> argv, std::map<std::string, std::string> env = {})
      : argv_(std::move(argv)) {
    int out[2];
    int err[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
      FAIL("pipe2: " << std::strerror(errno));
    }
    std::vector<std::string> env_strings;
    for (char** e = environ; e && *e; ++e) {
      std::string_view entry{*e};
      const auto name = entry.substr(0, entry.find('='));
      if (name == "CORRAL_NODE" || name == "CORRAL_RUNTIME" || name == "CORRAL_TLS_DIR" ||
          env.count(std::string(name)) > 0)
        continue;
      env_strings.emplace_back(entry);
    }
    if (env.count("CORRAL_TLS_DIR") == 0) env_strings.push_back("CORRAL_TLS_DIR=" + tls_dir());
    for (const auto& [k, v] : env)
      if (k != "CORRAL_TLS_DIR" || !v.empty()) env_strings.push_back(k + "=" + v);
    std::vector<char*> c_argv;
    for (auto& a : argv_) c_argv.push_back(a.data());
    c_argv.push_back(nullptr);
    std::vector<char*> c_env;
    for (auto& e : env_strings) c_env.push_back(e.data());
    c_env.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, err[1], 2);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigemptyset(&none);
    sigset_t defaults;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    const int rc =
        ::posix_spawn(&pid_, argv_[0].c_str(), &actions, &attr, c_argv.data(), c_env.data());
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    ::close(out[1]);
    ::close(err[1]);
    if (rc != 0) {
      ::close(out[0]);
      ::close(err[0]);
      pid_ = -1;
      FAIL("posix_spawn " << argv_[0] << ": " << std::strerror(rc));
    }
    started_ = steady::now();
    reader_ = std::thread([this, o = out[0], e = err[0]] { read_loop(o, e); });
  }

  ~child_process() {
    if (running()) signal(SIGKILL);
    wait(30s);
    if (reader_.joinable()) reader_.join();
  }

  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  pid_t pid() const { return pid_; }

  bool running() {
    poll_exit();
    return pid_ > 0 && !status_;
  }

  void signal(int sig) {
    if (running()) ::kill(pid_, sig);
  }

  // The exit code (128 + N when killed by signal N), or nothing if still running after
  // `timeout`.
  std::optional<int> wait(std::chrono::milliseconds timeout) {
    const auto deadline = steady::now() + timeout;
    for (;;) {
      poll_exit();
      if (status_ || pid_ <= 0) return status_;
      if (steady::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(5ms);
    }
  }

  // Waits for exit and for the pipes to drain; returns the exit code (or nothing).
  std::optional<int> finish(std::chrono::milliseconds timeout) {
    auto code = wait(timeout);
    if (code) {
      std::unique_lock<std::mutex> guard{mtx_};
      cv_.wait_for(guard, 5s, [this] { return eof_; });
    }
    return code;
  }

  // Wall time from spawn to the observed exit (or to now).
  std::chrono::milliseconds wall() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
        (status_ ? ended_ : steady::now()) - started_);
  }

  std::string out() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return out_;
  }

  std::string err() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return err_;
  }

  // Waits until stdout contains `needle`; false on timeout or on EOF without it.
  bool wait_for_stdout(std::string_view needle, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> guard{mtx_};
    return cv_.wait_for(guard, timeout, [&] { return contains(out_, needle) || eof_; }) &&
           contains(out_, needle);
  }

  std::string command_line() const {
    std::string out;
    for (const auto& a : argv_) out += (out.empty() ? "" : " ") + a;
    return out;
  }

 private:
  void poll_exit() {
    if (pid_ <= 0 || status_) return;
    int st = 0;
    const auto r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      ended_ = steady::now();
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
  }

  void read_loop(int out_fd, int err_fd) {
    pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
    int open = 2;
    char buf[65536];
    while (open > 0) {
      if (::poll(fds, 2, 1000) < 0 && errno != EINTR) break;
      for (int i = 0; i < 2; ++i) {
        if (fds[i].fd < 0 || fds[i].revents == 0) continue;
        const auto n = ::read(fds[i].fd, buf, sizeof buf);
        if (n > 0) {
          std::lock_guard<std::mutex> guard{mtx_};
          (i == 0 ? out_ : err_).append(buf, static_cast<std::size_t>(n));
          cv_.notify_all();
        } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
          ::close(fds[i].fd);
          fds[i].fd = -1;
          --open;
        }
      }
    }
    std::lock_guard<std::mutex> guard{mtx_};
    eof_ = true;
    cv_.notify_all();
  }

  std::vector<std::string> argv_;
  pid_t pid_ = -1;
  std::optional<int> status_;
  steady::time_point started_;
  steady::time_point ended_;
  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::string out_;
  std::string err_;
  bool eof_ = false;
  std::thread reader_;
};

struct cli_result {
  int code = -1;  // -1: still running at the deadline (then killed)
  std::string out;
  std::string err;
  std::chrono::milliseconds wall{0};
};

inline std::ostream& operator<<(std::ostream& os, const cli_result& r) {
  return os << "exit " << r.code << " after " << r.wall.count() << " ms\n--- stdout ---\n"
            << r.out << "--- stderr ---\n"
            << r.err;
}

// Runs `corral ARGS...` to its end (killed after `timeout`).
inline cli_result run_cli(std::vector<std::string> args,
                          std::map<std::string, std::string> env = {},
                          std::chrono::milliseconds timeout = 60s) {
  args.insert(args.begin(), cli_path);
  child_process p{std::move(args), std::move(env)};
  cli_result r;
  auto code = p.finish(timeout);
  if (!code) {
    p.signal(SIGKILL);
    p.finish(10s);
  }
  r.code = code ? *code : -1;
  r.wall = p.wall();
  r.out = p.out();
  r.err = p.err();
  return r;
}

// Starts `corral ARGS...` in the background.
inline std::unique_ptr<child_process> start_cli(std::vector<std::string> args,
                                                std::map<std::string, std::string> env = {}) {
  args.insert(args.begin(), cli_path);
  return std::make_unique<child_process>(std::move(args), std::move(env));
}

// -- a node --------------------------------------------------------------------------------

// `corral node --listen LISTEN --name NAME EXTRA...`; the constructor returns once the node
// printed `listening 127.0.0.1:PORT`.
class node_process {
 public:
  node_process(std::string name, std::vector<std::string> extra = {},
               std::string listen = "127.0.0.1:0")
      : name_(std::move(name)) {
    std::vector<std::string> argv = {cli_path, "node", "--listen", listen, "--name", name_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    proc_ = std::make_unique<child_process>(std::move(argv));
    const std::string marker = "listening 127.0.0.1:";
    if (!proc_->wait_for_stdout(marker, 20s) || !proc_->wait_for_stdout("\n", 1s)) {
      FAIL("node " << name_ << " did not report its port; stdout: " << proc_->out()
                   << "\nstderr: " << proc_->err());
    }
    const auto out = proc_->out();
    const auto at = out.find(marker) + marker.size();
    port_ = static_cast<uint16_t>(std::stoi(out.substr(at, out.find('\n', at) - at)));
  }

  const std::string& name() const { return name_; }
  uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  bool running() { return proc_->running(); }
  void signal(int sig) { proc_->signal(sig); }
  std::optional<int> wait(std::chrono::milliseconds timeout) { return proc_->finish(timeout); }
  std::string log() const { return proc_->err(); }
  child_process& process() { return *proc_; }

  // SIGTERM and the exit code (nothing if it did not stop within `timeout`).
  std::optional<int> stop(std::chrono::milliseconds timeout = 60s) {
    signal(SIGTERM);
    return wait(timeout);
  }

 private:
  std::string name_;
  std::unique_ptr<child_process> proc_;
  uint16_t port_ = 0;
};

// Runs `corral --node NODE ARGS...` to its end.
inline cli_result node_cli(node_process& node, std::vector<std::string> args) {
  args.insert(args.begin(), {"--node", node.address()});
  return run_cli(std::move(args));
}

// -- the engine, seen directly -------------------------------------------------------------

class engine_view {
 public:
  engine_view() {
    docker::client_options options;
    auto socket = docker::resolve_engine_socket();
    options.http.socket_path = socket ? *socket : "/var/run/docker.sock";
    options.http.default_timeout = 60s;
    docker_ = std::make_unique<docker::client>(options);
  }

  // Whether the engine remaps user namespaces (asked directly, not through corral).
  bool userns_remapped() {
    auto info = docker::blocking<docker::system_info>([&](auto done) { docker_->info(done); });
    if (!info) FAIL("cannot ask the engine: " << info.err().describe());
    return info->userns_remapped();
  }

  // Every container (any state) labelled with this runtime name.
  std::vector<docker::container_summary> containers(const std::string& runtime) {
    docker::container_list_options options;
    options.all = true;
    options.filters["label"] = {std::string(actors::label_runtime) + "=" + runtime};
    auto listed = docker::blocking<std::vector<docker::container_summary>>(
        [&](auto done) { docker_->container_list(options, std::move(done)); });
    if (!listed) {
      FAIL_CHECK("cannot list containers of " << runtime << ": " << listed.err().describe());
      return {};
    }
    return std::move(*listed);
  }

  // The keys the engine holds containers for: the claim name (actors::claim_name) is the
  // engine's record of a key (a sandbox made with the agent carries no key label). The key is
  // read back from the name's readable part and checked against the name's digest.
  std::set<std::string> keys(const std::string& runtime) {
    std::set<std::string> out;
    for (const auto& c : containers(runtime)) {
      if (auto it = c.labels.find(actors::label_key); it != c.labels.end()) {
        out.insert(it->second);
        continue;
      }
      const auto key = key_of_claim_name(runtime, c.names.empty() ? "" : c.names.front());
      if (key) out.insert(*key);
    }
    return out;
  }

  static std::optional<std::string> key_of_claim_name(const std::string& runtime,
                                                      std::string name) {
    if (!name.empty() && name.front() == '/') name.erase(0, 1);
    constexpr std::size_t digest = 20;  // hex digits: ten bytes of SHA-256
    if (name.rfind("corral-", 0) != 0 || name.size() < 7 + 1 + digest) return std::nullopt;
    const std::string readable = name.substr(7, name.size() - 7 - 1 - digest);
    // '/' became '.' (and '@' '_'): try the name as it reads, then each '.' as the '/'.
    std::vector<std::string> candidates{readable};
    for (std::size_t at = readable.find('.'); at != std::string::npos;
         at = readable.find('.', at + 1)) {
      candidates.push_back(readable.substr(0, at) + "/" + readable.substr(at + 1));
    }
    for (const auto& candidate : candidates)
      if (actors::claim_name(runtime, candidate) == name) return candidate;
    return std::nullopt;
  }

  // The keys of `principal`'s sandboxes of `runtime`, without the "PRINCIPAL/" a node adds.
  std::set<std::string> keys(const std::string& runtime, const std::string& principal) {
    std::set<std::string> out;
    const auto prefix = principal + "/";
    for (const auto& key : keys(runtime)) {
      if (key.rfind(prefix, 0) == 0) out.insert(key.substr(prefix.size()));
    }
    return out;
  }

  // Removes every container of `runtime`; returns how many there were.
  std::size_t remove_all(const std::string& runtime) {
    auto listed = containers(runtime);
    for (const auto& c : listed) {
      auto removed = docker::blocking<void>(
          [&](auto done) { docker_->container_remove(c.id, true, std::move(done)); });
      if (!removed) FAIL_CHECK("cannot remove " << c.id << ": " << removed.err().describe());
    }
    return listed.size();
  }

 private:
  std::unique_ptr<docker::client> docker_;
};

// -- the fixture ---------------------------------------------------------------------------

class node_fixture {
 public:
  node_fixture() = default;
  node_fixture(const node_fixture&) = delete;
  node_fixture& operator=(const node_fixture&) = delete;

  ~node_fixture() {
    for (auto& n : nodes_) {
      if (n->running()) {
        n->signal(SIGKILL);
        n->wait(10s);
      }
    }
    nodes_.clear();
    for (const auto& name : names_) {
      for (const auto& c : engine.containers(name)) {
        auto key = c.labels.find(actors::label_key);
        FAIL_CHECK("teardown: container " << c.id.substr(0, 12) << " (" << c.state << ", key "
                                          << (key == c.labels.end() ? "?" : key->second)
                                          << ") of runtime " << name
                                          << " was left behind; removing it");
      }
      engine.remove_all(name);
    }
  }

  // A new runtime name whose containers the teardown checks.
  std::string name(std::string_view hint = {}) {
    names_.push_back(unique_name(hint));
    return names_.back();
  }

  // Starts a node; its name joins the teardown check.
  node_process& start(const std::string& node_name, std::vector<std::string> extra = {},
                      std::string listen = "127.0.0.1:0") {
    if (std::find(names_.begin(), names_.end(), node_name) == names_.end())
      names_.push_back(node_name);
    nodes_.push_back(
        std::make_unique<node_process>(node_name, std::move(extra), std::move(listen)));
    return *nodes_.back();
  }

  engine_view engine;

 private:
  std::vector<std::string> names_;
  std::vector<std::unique_ptr<node_process>> nodes_;
};

// -- in-process CAF ------------------------------------------------------------------------

// An in-process CAF system with the middleman, without TLS: caf::io::publish/remote_actor,
// and app::connect_node in plain text (which every node refuses).
struct plain_net_config : caf::actor_system_config {
  plain_net_config() {
    messages::add_message_types(*this);
    load<caf::io::middleman>();
    set("middleman.app-identifiers", std::vector<std::string>{"corral"});
    set("scheduler.max-threads", 4);
    set("logger.verbosity", caf::atom("quiet"));
  }
};

using net_config = plain_net_config;

// corral's mutual-TLS middleman in `sys` with the client certificate of tls_dir() (made by
// the first node): app::connect_node and the router connect through it. Keep it in a
// variable declared after `sys`.
inline std::shared_ptr<app::tls_middleman> tls_client(caf::actor_system& sys) {
  auto mm = app::spawn_tls_middleman(sys, app::tls_files(tls_dir(), "client"));
  REQUIRE(mm);
  return *mm;
}

using messages::ask;

// How many file descriptors process `pid` holds.
inline long open_fds(pid_t pid) {
  long n = 0;
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", ec), end;
       !ec && it != end; it.increment(ec))
    ++n;
  return n;
}

// A policy (or any) file, removed at the end of the test.
struct temp_file {
  std::string path;
  explicit temp_file(const std::string& text)
      : path("/tmp/corral-node-policy-" + std::to_string(::getpid()) + "-" +
             std::to_string(counter++) + ".json") {
    std::ofstream(path) << text;
  }
  ~temp_file() { std::remove(path.c_str()); }
  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;
  static inline int counter = 0;
};

// The lines of a file (an audit log).
inline std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// How many of `lines` hold every one of `needles`.
inline std::size_t count_with(const std::vector<std::string>& lines,
                              std::initializer_list<std::string_view> needles) {
  std::size_t n = 0;
  for (const auto& line : lines) {
    bool all = true;
    for (auto needle : needles) all = all && contains(line, needle);
    n += all;
  }
  return n;
}

}  // namespace corral::node_tests
