#include "app/commands.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <thread>

#include <caf/all.hpp>

#include "actors/policy_file.hpp"
#include "actors/random_id.hpp"
#include "actors/supervisor.hpp"
#include "app/cli_output.hpp"
#include "app/engine_report.hpp"
#include "app/exit_codes.hpp"
#include "docker/client.hpp"
#include "messages/errors.hpp"
#include "messages/type_ids.hpp"

namespace corral::app {

using namespace messages;
using namespace std::chrono_literals;

int usage_error(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "corral: %s (see corral %s--help)\n", message.c_str(),
               command.empty() ? "" : (command + " ").c_str());
  return exit_code::error;
}

namespace {

// The operator's policy: --policy FILE, else /etc/corral/policy.json when it exists, else the
// built-in default. A file that cannot be read or is wrong is an error (on stderr): nullopt.
std::optional<actors::policy> resolve_policy(const std::string& flag, actors::policy builtin,
                                             std::string& source) {
  std::string path = flag;
  std::error_code ec;
  if (path.empty() && std::filesystem::exists(actors::system_policy_path, ec))
    path = actors::system_policy_path;
  if (path.empty()) return builtin;
  auto loaded = actors::load_policy_file(path);
  if (!loaded) {
    std::fprintf(stderr, "corral: policy: %s\n", loaded.error.c_str());
    return std::nullopt;
  }
  source = path;
  return std::move(*loaded.value);
}

// with_session, with the embedded runtime's policy read first. With --node the node's own
// policy governs: --policy there is a usage error.
int with_runtime(command_line& cl, const char* command, const std::function<int(session&)>& body) {
  if (!cl.target.nodes.empty()) {
    if (!cl.policy_file.empty()) {
      return usage_error(command,
                         "--policy sets the policy of an embedded runtime or of `corral node`; "
                         "with --node, the node's own policy applies");
    }
    return with_session(cl.target, body);
  }
  std::string source;
  auto policy = resolve_policy(cl.policy_file, actors::policy::embedded_default(), source);
  if (!policy) return exit_code::error;
  cl.target.policy = std::move(*policy);
  return with_session(cl.target, body);
}

// Runs cl.argv in the sandbox `key`: output streamed (or JSON), the command's exit code.
int run_exec(session& s, const command_line& cl, const std::string& key) {
  exec_request req = cl.exec;
  req.argv = cl.argv;
  if (cl.use_stdin) {
    // The runtime's own bound (actors::runtime_config::max_stdin_bytes), applied while reading.
    constexpr std::size_t stdin_limit = 64 << 20;
    auto data = read_stdin(stdin_limit);
    if (!data) {
      return fail(
          make_error(corral_errc::invalid_request, "--stdin: the input is larger than " +
                                                       std::to_string(stdin_limit >> 20) +
                                                       " MiB, the most a command may be given"));
    }
    req.has_stdin = true;
    req.stdin_data = std::move(*data);
  }
  caf::actor writer;
  if (!cl.json) {
    writer = s.self->spawn(terminal_writer);
    req.subscriber = writer;
  }
  const auto timeout =
      (req.timeout.count() > 0 ? req.timeout : caf::timespan{std::chrono::hours(24)}) +
      caf::timespan{2min};
  auto result = ask<exec_result>(s, timeout, exec_atom_v, key, req);
  if (writer) {
    // Answered after every chunk queued before it: all output is written.
    s.self->request(writer, 30s, caf::flush_atom_v)
        .receive([](caf::flush_atom) {}, [](caf::error&) {});
    s.self->send_exit(writer, caf::exit_reason::user_shutdown);
  }
  if (!result) return fail(result.error());
  print_warnings(result->warnings);
  print_result(*result, cl.json);
  return exit_code_of(*result);
}

}  // namespace

// `corral run`'s sandbox is its own: a signal that ends the CLI releases it first. The signals
// are blocked in every thread (set before the actor system starts its threads) and taken by
// one watcher; a closed stdout (EPIPE in terminal_writer) arrives as a process-wide SIGPIPE.
class release_on_signal {
 public:
  static void block() {
    sigset_t set = signals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
  }

  release_on_signal(session& s, std::string key) {
    watcher_ = std::thread([this, &sys = s.self->home_system(), sup = s.sup, key = std::move(key)] {
      const sigset_t set = signals();
      const timespec tick{0, 100'000'000};
      while (!done_) {
        const int sig = sigtimedwait(&set, nullptr, &tick);
        if (sig <= 0 || sig == wake_signal()) continue;
        caf::scoped_actor self{sys};
        bool released = false;
        self->request(sup, caf::timespan{30s}, release_atom_v, key, release_mode::cancel_execs)
            .receive([&](sandbox_info&) { released = true; }, [](caf::error&) {});
        std::fprintf(stderr, "corral: %s: %s\n", strsignal(sig),
                     released ? "the sandbox was released" : "the sandbox could not be released");
        std::_Exit(128 + sig);
      }
    });
  }
  ~release_on_signal() {
    done_ = true;
    // Woken at once, not at its next tick: the CLI exits as soon as the result is out.
    pthread_kill(watcher_.native_handle(), wake_signal());
    watcher_.join();
  }

 private:
  static int wake_signal() { return SIGRTMIN + 1; }
  static sigset_t signals() {
    sigset_t set;
    sigemptyset(&set);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, wake_signal()}) sigaddset(&set, sig);
    return set;
  }
  std::atomic<bool> done_{false};
  std::thread watcher_;
};

int cmd_run(command_line& cl) {
  if (cl.argv.empty())
    return usage_error("run", "run: no command given (corral run [flags] -- CMD...)");
  release_on_signal::block();
  const std::string key = "run-" + std::to_string(::getpid()) + "-" + random_hex64().substr(0, 8);
  cl.spec.one_shot = true;  // no --lifetime: the policy's run_lifetime
  return with_runtime(cl, "run", [&](session& s) {
    auto info =
        ask<sandbox_info>(s, caf::timespan{3min}, acquire_atom_v, std::string(key), cl.spec);
    if (!info) return fail(info.error());
    print_warnings(info->warnings);
    const release_on_signal guard(s, key);
    const int code = run_exec(s, cl, key);
    // A node removes the sandbox after answering, off this process's path (detach); this
    // process's own runtime keeps its sandboxes at exit (other CLI calls use them), so it
    // waits for the removal.
    const auto mode = cl.target.nodes.empty() ? release_mode::cancel_execs : release_mode::detach;
    auto released =
        ask<sandbox_info>(s, caf::timespan{2min}, release_atom_v, std::string(key), mode);
    // A node that is stopping releases every sandbox itself: the command's result stands.
    if (!released && (released.error() == corral_errc::shutting_down ||
                      released.error() == corral_errc::not_found)) {
      std::fprintf(stderr, "corral: %s; the node releases the sandbox itself\n",
                   describe(released.error()).c_str());
      return code;
    }
    return released ? code : fail(released.error());
  });
}

int cmd_create(command_line& cl) {
  // The proxy lives in the runtime that owns the sandbox: this process's ends with it.
  if (!cl.spec.allow_hosts.empty() && cl.target.nodes.empty())
    return usage_error("create",
                       "create: --allow-host needs a node (--node ADDR): egress goes through the "
                       "proxy of the runtime that owns the sandbox, and this process's ends when "
                       "it exits (corral run --allow-host works without one)");
  return with_runtime(cl, "create", [&](session& s) {
    auto info = ask<sandbox_info>(s, caf::timespan{3min}, acquire_atom_v, cl.keys[0], cl.spec);
    if (!info) return fail(info.error());
    print_warnings(info->warnings);
    print_sandbox(*info, cl.json);
    return exit_code::ok;
  });
}

int cmd_exec(command_line& cl) {
  if (cl.argv.empty())
    return usage_error("exec", "exec: no command given (corral exec KEY -- CMD...)");
  return with_runtime(cl, "exec", [&](session& s) { return run_exec(s, cl, cl.keys[0]); });
}

int cmd_ls(command_line& cl) {
  return with_runtime(cl, "ls", [&](session& s) {
    auto list = ask<std::vector<sandbox_info>>(s, caf::timespan{1min}, list_atom_v);
    if (!list) return fail(list.error());
    print_sandboxes(*list, cl.json);
    return exit_code::ok;
  });
}

int cmd_stats(command_line& cl) {
  return with_runtime(cl, "stats", [&](session& s) {
    auto stats = ask<runtime_stats>(s, caf::timespan{1min}, stats_atom_v);
    if (!stats) return fail(stats.error());
    print_stats(*stats, cl.json);
    return exit_code::ok;
  });
}

int cmd_rm(command_line& cl) {
  if (cl.all == !cl.keys.empty()) return usage_error("rm", "rm: give KEY... or --all");
  return with_runtime(cl, "rm", [&](session& s) {
    if (cl.all) {
      auto n =
          ask<uint64_t>(s, caf::timespan{5min}, release_all_atom_v, release_mode::cancel_execs);
      if (!n) return fail(n.error());
      std::printf("released %llu sandboxes\n", static_cast<unsigned long long>(*n));
      return exit_code::ok;
    }
    int code = exit_code::ok;
    for (const auto& key : cl.keys) {
      auto info = ask<sandbox_info>(s, caf::timespan{2min}, release_atom_v, key,
                                    release_mode::cancel_execs);
      if (!info)
        code = fail(info.error());
      else
        std::printf("%s %s\n", key.c_str(), to_string(info->status));
    }
    return code;
  });
}

int cmd_prune(command_line& cl) {
  if (cl.idle.count() == 0 && cl.max_age.count() == 0)
    return usage_error("prune", "prune: give --idle D and/or --max-age D");
  return with_runtime(cl, "prune", [&](session& s) {
    auto keys = ask<std::vector<std::string>>(s, caf::timespan{5min}, prune_atom_v,
                                              caf::timespan{cl.idle}, caf::timespan{cl.max_age});
    if (!keys) return fail(keys.error());
    for (const auto& k : *keys) std::printf("%s\n", k.c_str());
    std::fprintf(stderr, "pruned %zu sandboxes\n", keys->size());
    return exit_code::ok;
  });
}

int cmd_version(command_line&) {
  std::printf("corral %s (protocol %d, CAF %d.%d.%d)\n", actors::corral_version, protocol_version,
              CAF_MAJOR_VERSION, CAF_MINOR_VERSION, CAF_PATCH_VERSION);
  // The local engine's safety, as an embedded runtime would use it.
  const auto socket = docker::resolve_engine_socket();
  if (!socket) {
    std::printf("engine: %s\n", socket.err().describe().c_str());
  } else {
    std::printf("engine: %s\n", describe_engine(probe_engine(*socket)).c_str());
  }
  return exit_code::ok;
}

int cmd_node(command_line& cl) {
  cl.serve.tls = cl.target.tls;
  if (!cl.serve.issue.name.empty()) return issue_cert(cl.serve);
  // A node with a bad policy file does not start.
  auto policy =
      resolve_policy(cl.policy_file, actors::policy::node_default(), cl.serve.policy_source);
  if (!policy) return exit_code::error;
  cl.serve.policy = std::move(*policy);
  return run_node(cl.serve);
}

int cmd_policy(command_line& cl) {
  auto loaded = actors::load_policy_file(cl.policy_path);
  if (!loaded) {
    std::fprintf(stderr, "corral: policy: %s\n", loaded.error.c_str());
    return exit_code::error;
  }
  std::printf("%s", actors::to_json(*loaded.value).c_str());
  return exit_code::ok;
}

}  // namespace corral::app
