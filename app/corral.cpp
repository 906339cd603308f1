// The `corral` command: sandboxes from the shell, on an embedded in-process runtime.
//
// Exit codes: the command's own; 124 timed out; 137 killed or OOM-killed; 125 an error of
// corral or the engine (with a message on stderr); 126/127 as the engine reports for a
// command that cannot be executed / is not found.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include "actors/router.hpp"
#include "actors/supervisor.hpp"
#include "app/cli_values.hpp"
#include "app/fake_engine.hpp"
#include "app/node.hpp"
#include "app/remote.hpp"
#include "app/stress.hpp"
#include "docker/json.hpp"
#include "messages/errors.hpp"
#include "messages/registration.hpp"
#include "messages/type_ids.hpp"

using namespace corral;
using namespace corral::messages;
using namespace std::chrono_literals;

namespace {

constexpr int exit_error = 125;

// -- help ----------------------------------------------------------------------------------

constexpr const char* main_help = R"(corral — run commands in hardened, disposable Docker sandboxes

Usage:
  corral run [flags] -- CMD...        create a sandbox, run CMD (streamed), remove it
  corral create KEY [flags]           create (or find) the sandbox KEY and keep it
  corral exec [flags] KEY -- CMD...   run CMD in the sandbox KEY (streamed)
  corral ls [--json]                  list this runtime's sandboxes
  corral rm KEY... | --all            release sandboxes (stop, then remove)
  corral prune [--idle D] [--max-age D]   release sandboxes idle or older than D
  corral version                      print versions
  corral node [flags]                 serve a runtime to remote clients (CAF network transport)
  corral stress [flags]               drive a runtime with a workload; report latencies; fail on leaks
  corral fake-engine --socket PATH    a fake Docker engine for scale and fault tests
  corral COMMAND --help               help for one command

Global flags (before or after the command):
  --runtime NAME   runtime name in container labels (default: $CORRAL_RUNTIME or "local")
  --node HOST:PORT talk to a `corral node` instead of an embedded runtime ($CORRAL_NODE);
                   several, comma-separated, spread sandboxes over the nodes
  --tls-cert F --tls-key F --tls-ca F   TLS for --node (and for `corral node`)

Exit codes: the command's own; 124 timed out; 137 killed or OOM-killed; 125 an error of
corral or the engine (message on stderr); 126/127 command not executable / not found.
)";

constexpr const char* sandbox_flags_help = R"(Sandbox flags (defaults are strict):
  --image IMAGE          image (default corral/sandbox:busybox; allowlist corral/)
  --memory SIZE          memory limit, e.g. 256m, 1g (default 512m; swap equal)
  --cpus N               CPUs, e.g. 0.5 (default 1)
  --pids N               process limit (default 256)
  --lifetime D           remove the sandbox after D (e.g. 30m; default none)
  --idle D               prune after D without use (default none)
  --env K=V              environment (repeatable); reserved keys are stripped
  --workspace PATH[:ro|:rw]  mount a host directory at /workspace (default ro)
  --workdir DIR          working directory inside the sandbox
  --user UID[:GID]       user (default 1000:1000)
  --network MODE         loosen: a network mode other than none (never host)
  --writable-root        loosen: a writable root filesystem
)";

constexpr const char* exec_flags_help = R"(Exec flags:
  --timeout D            kill the command (its whole process tree) after D (default 60s)
  --max-output SIZE      keep at most SIZE of stdout and of stderr (default 1m)
  --env K=V              environment for this command only (repeatable)
  --workdir DIR          working directory for this command
  --stdin                pass this process's stdin to the command
  --json                 print the result as JSON instead of streaming
)";

void print_help(const std::string& command) {
  if (command == "run") {
    std::printf(
        "Usage: corral run [flags] -- CMD...\n\nCreate a sandbox, run CMD in it with its output "
        "streamed, remove it, exit with CMD's code.\n\n%s\n%s",
        sandbox_flags_help, exec_flags_help);
  } else if (command == "create") {
    std::printf(
        "Usage: corral create KEY [flags]\n\nCreate the sandbox KEY (or find it, if it exists) "
        "and keep it for later `corral exec KEY`.\n  --json  print its info as JSON\n\n%s",
        sandbox_flags_help);
  } else if (command == "exec") {
    std::printf("Usage: corral exec [flags] KEY -- CMD...\n\nRun CMD in the sandbox KEY.\n\n%s",
                exec_flags_help);
  } else if (command == "ls") {
    std::printf("Usage: corral ls [--json]\n\nList this runtime's sandboxes.\n");
  } else if (command == "rm") {
    std::printf(
        "Usage: corral rm KEY... | --all\n\nRelease sandboxes: stop (grace period), then "
        "remove.\n");
  } else if (command == "prune") {
    std::printf(
        "Usage: corral prune [--idle D] [--max-age D]\n\nRelease sandboxes unused for D, or "
        "older than D. Sandboxes with a command running are never pruned.\n");
  } else if (command == "version") {
    std::printf("Usage: corral version\n");
  } else if (command == "stress") {
    std::printf(R"(Usage: corral stress [flags]

Drive a runtime (embedded, or a node with --node) with a mixed workload; print throughput
and latency percentiles per operation, errors by kind, and check that no container,
connection, actor, file descriptor or memory outlived the run (exit 1 if one did).

  --keys N             sandbox keys to spread the work over (default 8)
  --concurrency C      operations in flight (default 8)
  --duration D         stop after D (default 30s)
  --ops N              stop after N operations (default: no limit)
  --mix SPEC           weights, default acquire=2,exec=10,long=1,timeout=1,release=2,kill=1
                       (exec: echo; long: sleep 1; timeout: sleep 30 with a 300ms timeout;
                        kill: the container is killed from outside)
  --engine real|fake   the real engine (default) or an in-process fake one
  --fake-latency-scale X   fake engine latencies times X (default 1: this machine's engine)
  --fault-rate P       fake engine: inject faults (errors, resets, cut streams, lost events)
  --capacity N         runtime capacity (default keys + 16)
  --soak               also fail if fds or memory grow over the run (a steady workload)
  --json               print the report as JSON too
  --csv FILE           write per-operation figures as CSV
  --plot FILE.png      draw latency over time and the latency histogram (gnuplot)
)");
  } else if (command == "node") {
    std::printf(R"(Usage: corral node [flags]

Serve a runtime (one supervisor) to clients over CAF's network transport until SIGTERM or
SIGINT; then stop accepting, give running commands the grace period, release the node's
sandboxes (or keep them), exit 0. A second signal exits at once.

  --listen HOST:PORT   where to listen (default 127.0.0.1:4747; port 0 picks one).
                       Any address other than loopback requires TLS.
  --name NAME          node name in container labels (default: the hostname)
  --capacity N         live sandboxes at most (default 64)
  --grace D            time running commands get at shutdown (default 10s)
  --keep-sandboxes     keep sandboxes at shutdown, for the next start to adopt
  --log-format F       text | json (default text)
  --log-level L        trace | debug | info | warn | error (default info)
  --tls-cert FILE      this node's certificate chain (PEM)
  --tls-key FILE       its private key
  --tls-ca FILE        the CA that clients' certificates must chain to
)");
  } else {
    std::printf("%s", main_help);
  }
}

// -- parsed command line -------------------------------------------------------------------

struct usage_error {
  std::string message;
};

struct command_line {
  std::string command;
  std::string runtime = "local";
  std::vector<std::string> keys;
  std::vector<std::string> argv;  // after --
  sandbox_spec spec;
  exec_request exec;
  bool json = false;
  bool all = false;
  bool help = false;
  bool use_stdin = false;
  std::chrono::milliseconds idle{0};
  std::chrono::milliseconds max_age{0};
  std::string node;  // HOST:PORT of a corral node; empty: embedded
  app::node_options serve;
  app::stress_options stress;
};

std::pair<std::string, std::string> split_env(const std::string& text, const std::string& flag) {
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0)
    throw usage_error{flag + " wants KEY=VALUE, got '" + text + "'"};
  return {text.substr(0, eq), text.substr(eq + 1)};
}

command_line parse(int argc, char** argv) {
  command_line cl;
  if (const char* runtime = std::getenv("CORRAL_RUNTIME"); runtime && *runtime)
    cl.runtime = runtime;
  if (const char* node = std::getenv("CORRAL_NODE"); node && *node) cl.node = node;
  std::vector<std::string> args(argv + 1, argv + argc);
  std::size_t i = 0;
  auto value = [&](const std::string& flag) -> std::string {
    if (i + 1 >= args.size()) throw usage_error{flag + " needs a value"};
    return args[++i];
  };
  auto duration = [&](const std::string& flag) {
    const auto text = value(flag);
    auto d = app::parse_duration(text);
    if (!d) throw usage_error{flag + ": '" + text + "' is not a duration (like 500ms, 30s, 5m)"};
    return *d;
  };
  auto size = [&](const std::string& flag) {
    const auto text = value(flag);
    auto s = app::parse_size(text);
    if (!s) throw usage_error{flag + ": '" + text + "' is not a size (like 256m, 1g)"};
    return *s;
  };
  auto number = [&](const std::string& flag) {
    const auto text = value(flag);
    char* end = nullptr;
    const long long n = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0')
      throw usage_error{flag + ": '" + text + "' is not a whole number"};
    return static_cast<int64_t>(n);
  };
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      cl.argv.assign(args.begin() + static_cast<long>(i) + 1, args.end());
      break;
    }
    if (a == "--help" || a == "-h")
      cl.help = true;
    else if (a == "--runtime")
      cl.runtime = value(a);
    else if (a == "--node")
      cl.node = value(a);
    else if (a == "--listen") {
      const auto text = value(a);
      auto where = app::parse_node_address(text, true);
      if (!where) throw usage_error{"--listen: " + describe(where.error())};
      cl.serve.listen = *where;
    } else if (a == "--name")
      cl.serve.name = value(a);
    else if (a == "--capacity") {
      const auto n = number(a);
      if (n <= 0) throw usage_error{"--capacity must be positive"};
      cl.serve.capacity = static_cast<uint64_t>(n);
      cl.stress.capacity = static_cast<uint64_t>(n);
    } else if (a == "--grace")
      cl.serve.grace = duration(a);
    else if (a == "--keep-sandboxes")
      cl.serve.keep_sandboxes = true;
    else if (a == "--log-format") {
      cl.serve.log_format = value(a);
      if (cl.serve.log_format != "text" && cl.serve.log_format != "json")
        throw usage_error{"--log-format is text or json"};
    } else if (a == "--log-level") {
      cl.serve.log_level = value(a);
      static const std::vector<std::string> levels = {"trace", "debug",    "info", "warn",
                                                      "error", "critical", "off"};
      if (std::find(levels.begin(), levels.end(), cl.serve.log_level) == levels.end()) {
        throw usage_error{"--log-level is one of trace, debug, info, warn, error"};
      }
    } else if (a == "--keys") {
      const auto n = number(a);
      if (n <= 0) throw usage_error{"--keys must be positive"};
      cl.stress.keys = static_cast<uint64_t>(n);
    } else if (a == "--concurrency") {
      const auto n = number(a);
      if (n <= 0 || n > 4096) throw usage_error{"--concurrency must be 1-4096"};
      cl.stress.concurrency = static_cast<uint64_t>(n);
    } else if (a == "--duration")
      cl.stress.duration = duration(a);
    else if (a == "--ops") {
      const auto n = number(a);
      if (n < 0) throw usage_error{"--ops must not be negative"};
      cl.stress.ops = static_cast<uint64_t>(n);
    } else if (a == "--mix")
      cl.stress.mix = value(a);
    else if (a == "--engine")
      cl.stress.engine = value(a);
    else if (a == "--fake-latency-scale")
      cl.stress.fake_latency_scale = std::strtod(value(a).c_str(), nullptr);
    else if (a == "--fault-rate") {
      cl.stress.fake_fault_rate = std::strtod(value(a).c_str(), nullptr);
      if (cl.stress.fake_fault_rate < 0 || cl.stress.fake_fault_rate > 1)
        throw usage_error{"--fault-rate is 0..1"};
    } else if (a == "--soak")
      cl.stress.soak = true;
    else if (a == "--csv")
      cl.stress.csv_path = value(a);
    else if (a == "--plot")
      cl.stress.plot_path = value(a);
    else if (a == "--tls-cert")
      cl.serve.tls.certificate = value(a);
    else if (a == "--tls-key")
      cl.serve.tls.key = value(a);
    else if (a == "--tls-ca")
      cl.serve.tls.ca = value(a);
    else if (a == "--json")
      cl.json = true;
    else if (a == "--all")
      cl.all = true;
    else if (a == "--image")
      cl.spec.image = value(a);
    else if (a == "--memory")
      cl.spec.memory_bytes = size(a);
    else if (a == "--cpus") {
      const auto text = value(a);
      auto cpus = app::parse_cpus(text);
      if (!cpus) throw usage_error{"--cpus: '" + text + "' is not a CPU count (like 0.5, 2)"};
      cl.spec.nano_cpus = *cpus;
    } else if (a == "--pids")
      cl.spec.pids_limit = number(a);
    else if (a == "--lifetime")
      cl.spec.lifetime = duration(a);
    else if (a == "--idle") {
      cl.idle = duration(a);
      cl.spec.idle_limit = cl.idle;
    } else if (a == "--max-age")
      cl.max_age = duration(a);
    else if (a == "--timeout") {
      cl.exec.timeout = duration(a);
      cl.spec.exec_timeout = cl.exec.timeout;
    } else if (a == "--max-output") {
      const auto cap = size(a);
      if (cap <= 0) throw usage_error{"--max-output must be positive"};
      cl.exec.max_stdout = cl.exec.max_stderr = static_cast<uint64_t>(cap);
      cl.spec.max_stdout = cl.spec.max_stderr = static_cast<uint64_t>(cap);
    } else if (a == "--env" || a == "-e") {
      auto [k, v] = split_env(value(a), a);
      cl.spec.env[k] = v;
      cl.exec.env[k] = v;
    } else if (a == "--workspace") {
      std::string text = value(a);
      access_mode mode = access_mode::ro;
      if (text.size() > 3 && (text.ends_with(":ro") || text.ends_with(":rw"))) {
        mode = text.ends_with(":rw") ? access_mode::rw : access_mode::ro;
        text.resize(text.size() - 3);
      }
      cl.spec.workspace.host_path = text;
      cl.spec.workspace.access = mode;
    } else if (a == "--workdir" || a == "-w") {
      cl.spec.workdir = value(a);
      cl.exec.workdir = cl.spec.workdir;
    } else if (a == "--user" || a == "-u")
      cl.spec.user = value(a);
    else if (a == "--network")
      cl.spec.network_mode = value(a);
    else if (a == "--writable-root")
      cl.spec.writable_root = true;
    else if (a == "--stdin" || a == "-i")
      cl.use_stdin = true;
    else if (!a.empty() && a[0] == '-')
      throw usage_error{"unknown flag " + a};
    else if (cl.command.empty())
      cl.command = a;
    else
      cl.keys.push_back(a);
  }
  return cl;
}

// -- output --------------------------------------------------------------------------------

std::string age(int64_t since_ms) {
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const int64_t s = std::max<int64_t>(0, (now - since_ms) / 1000);
  if (s < 120) return std::to_string(s) + "s";
  if (s < 7200) return std::to_string(s / 60) + "m";
  return std::to_string(s / 3600) + "h";
}

void write_info(docker::json_writer& w, const sandbox_info& info) {
  w.begin_object();
  w.field("key", info.key).field("container_id", info.container_id).field("image", info.image);
  w.field("status", to_string(info.status)).field("created_ms", info.created_ms);
  w.field("last_used_ms", info.last_used_ms).field("execs_run", info.execs_run);
  w.field("execs_in_flight", info.execs_in_flight).field("memory_bytes", info.memory_bytes);
  w.field("nano_cpus", info.nano_cpus).field("pids_limit", info.pids_limit);
  if (!info.detail.empty()) w.field("detail", info.detail);
  w.key("warnings").begin_array();
  for (const auto& x : info.warnings) w.value(x);
  w.end_array();
  w.end_object();
}

void print_warnings(const std::vector<std::string>& warnings) {
  for (const auto& w : warnings) std::fprintf(stderr, "corral: note: %s\n", w.c_str());
}

int fail(const caf::error& err) {
  std::string hint;
  if (err == corral_errc::engine_unavailable)
    hint = " (is the Docker engine running? see app/setup.sh)";
  else if (err == corral_errc::policy_violation)
    hint = " (see `corral run --help` for what may be loosened)";
  else if (err == corral_errc::not_found)
    hint = " (see `corral ls`)";
  else if (err == corral_errc::node_unavailable)
    hint = " (is `corral node` running there?)";
  else if (err == caf::sec::request_timeout)
    hint = " (the runtime did not answer in time)";
  std::fprintf(stderr, "corral: %s%s\n", describe(err).c_str(), hint.c_str());
  return exit_error;
}

int exit_code_of(const exec_result& r) {
  switch (r.end) {
    case exec_end::timed_out:
      return 124;
    case exec_end::killed:
    case exec_end::oom_killed:
      return 137;
    case exec_end::sandbox_lost:
      return exit_error;
    case exec_end::exited:
      break;
  }
  return r.exit_code < 0 || r.exit_code > 255 ? exit_error : r.exit_code;
}

// Writes output chunks to this process's stdout and stderr as they come.
caf::behavior terminal_writer(caf::event_based_actor*) {
  return {
      [](output_atom, const output_chunk& chunk) {
        FILE* out = chunk.stream == output_stream::stderr_stream ? stderr : stdout;
        std::fwrite(chunk.bytes.data(), 1, chunk.bytes.size(), out);
        std::fflush(out);
      },
      // Answered after every chunk queued before it: the caller's "all written".
      [](caf::flush_atom) { return caf::flush_atom_v; },
  };
}

std::string read_all_stdin() {
  std::string data;
  char buf[65536];
  for (;;) {
    const auto n = ::read(0, buf, sizeof buf);
    if (n <= 0) break;
    data.append(buf, static_cast<std::size_t>(n));
  }
  return data;
}

// -- commands ------------------------------------------------------------------------------

struct session {
  caf::scoped_actor& self;
  supervisor_actor sup;
  const command_line& cl;
  std::string node;  // HOST:PORT when `sup` is one node's (a proxy); empty otherwise
};

// One request to a node, made by a helper actor that watches the node's proxy: a node that
// dies never answers (CAF 0.17 has no error for a request to a dead proxy), so without the
// watch the caller would wait out the whole timeout (a day, for an exec without --timeout).
template <class T, class... Ts>
caf::behavior node_request(caf::event_based_actor* self, supervisor_actor node, std::string where,
                           caf::timespan timeout, std::tuple<Ts...> args) {
  return {
      [=](caf::get_atom) mutable -> caf::result<T> {
        auto rp =
            std::make_shared<caf::typed_response_promise<T>>(self->make_response_promise<T>());
        self->monitor(node);
        self->set_down_handler([self, rp, where](caf::down_msg& msg) {
          rp->deliver(make_error(corral_errc::node_unavailable,
                                 "lost corral node " + where + " while waiting for its answer (" +
                                     caf::to_string(msg.reason) + ")"));
          self->quit();
        });
        std::apply(
            [&](auto&... xs) {
              self->request(node, timeout, std::move(xs)...)
                  .then(
                      [self, rp](T& value) {
                        rp->deliver(std::move(value));
                        self->quit();
                      },
                      [self, rp](caf::error& err) {
                        rp->deliver(std::move(err));
                        self->quit();
                      });
            },
            args);
        return *rp;
      },
  };
}

template <class T, class... Ts>
caf::expected<T> ask(session& s, caf::timespan timeout, Ts&&... xs) {
  caf::expected<T> out{caf::error{}};
  auto on_value = [&](T& value) { out = std::move(value); };
  auto on_error = [&](caf::error& err) { out = std::move(err); };
  if (s.node.empty()) {
    s.self->request(s.sup, timeout, std::forward<Ts>(xs)...).receive(on_value, on_error);
    return out;
  }
  auto helper = s.self->spawn(node_request<T, std::decay_t<Ts>...>, s.sup, s.node, timeout,
                              std::make_tuple(std::forward<Ts>(xs)...));
  s.self->request(helper, timeout + caf::timespan{10s}, caf::get_atom_v)
      .receive(on_value, on_error);
  return out;
}

int run_exec(session& s, const std::string& key, std::vector<std::string> argv) {
  exec_request req = s.cl.exec;
  req.argv = std::move(argv);
  if (s.cl.use_stdin) {
    req.has_stdin = true;
    req.stdin_data = read_all_stdin();
  }
  caf::actor writer;
  if (!s.cl.json) {
    writer = s.self->spawn(terminal_writer);
    req.subscriber = writer;
  }
  const auto timeout =
      (req.timeout.count() > 0 ? req.timeout : caf::timespan{std::chrono::hours(24)}) +
      caf::timespan{2min};
  auto result = ask<exec_result>(s, timeout, exec_atom_v, key, req);
  if (writer) {
    s.self->request(writer, 30s, caf::flush_atom_v)
        .receive([](caf::flush_atom) {}, [](caf::error&) {});
    s.self->send_exit(writer, caf::exit_reason::user_shutdown);
  }
  if (!result) return fail(result.error());
  print_warnings(result->warnings);
  if (s.cl.json) {
    docker::json_writer w;
    w.begin_object();
    w.field("exit_code", result->exit_code).field("end", to_string(result->end));
    w.field("stdout", result->stdout_data).field("stderr", result->stderr_data);
    w.field("stdout_truncated", result->stdout_truncated)
        .field("stderr_truncated", result->stderr_truncated);
    w.field("stdout_bytes", result->stdout_bytes).field("stderr_bytes", result->stderr_bytes);
    w.field("duration_ms",
            static_cast<int64_t>(
                std::chrono::duration_cast<std::chrono::milliseconds>(result->duration).count()));
    w.end_object();
    std::printf("%s\n", w.str().c_str());
  } else {
    if (result->stdout_truncated) {
      std::fprintf(stderr, "corral: note: stdout truncated: kept %zu of %llu bytes\n",
                   result->stdout_data.size(),
                   static_cast<unsigned long long>(result->stdout_bytes));
    }
    if (result->stderr_truncated) {
      std::fprintf(stderr, "corral: note: stderr truncated: kept %zu of %llu bytes\n",
                   result->stderr_data.size(),
                   static_cast<unsigned long long>(result->stderr_bytes));
    }
    if (result->end == exec_end::timed_out)
      std::fprintf(stderr, "corral: command timed out and was killed\n");
    if (result->end == exec_end::oom_killed)
      std::fprintf(stderr, "corral: command was killed: out of memory\n");
    if (result->end == exec_end::sandbox_lost)
      std::fprintf(stderr, "corral: the sandbox was lost while the command ran\n");
  }
  return exit_code_of(*result);
}

int cmd_run(session& s, command_line cl) {
  if (cl.argv.empty()) throw usage_error{"run: no command given (corral run [flags] -- CMD...)"};
  cl.exec.env.clear();  // the sandbox's env already carries them
  session one{s.self, s.sup, cl, s.node};
  std::mt19937_64 random{std::random_device{}()};
  char key[40];
  std::snprintf(key, sizeof key, "run-%d-%08x", static_cast<int>(::getpid()),
                static_cast<unsigned>(random() & 0xffffffff));
  auto info = ask<sandbox_info>(s, caf::timespan{3min}, acquire_atom_v, std::string(key), cl.spec);
  if (!info) return fail(info.error());
  print_warnings(info->warnings);
  const int code = run_exec(one, key, cl.argv);
  auto released = ask<sandbox_info>(s, caf::timespan{2min}, release_atom_v, std::string(key),
                                    release_mode::cancel_execs);
  if (!released) {
    fail(released.error());
    return exit_error;
  }
  return code;
}

int cmd_create(session& s) {
  if (s.cl.keys.size() != 1) throw usage_error{"create: give exactly one KEY"};
  auto info = ask<sandbox_info>(s, caf::timespan{3min}, acquire_atom_v, s.cl.keys[0], s.cl.spec);
  if (!info) return fail(info.error());
  print_warnings(info->warnings);
  if (s.cl.json) {
    docker::json_writer w;
    write_info(w, *info);
    std::printf("%s\n", w.str().c_str());
  } else {
    std::printf("%s %s\n", info->key.c_str(), info->container_id.substr(0, 12).c_str());
  }
  return 0;
}

int cmd_exec(session& s) {
  if (s.cl.keys.size() != 1)
    throw usage_error{"exec: give exactly one KEY (corral exec KEY -- CMD...)"};
  if (s.cl.argv.empty()) throw usage_error{"exec: no command given (corral exec KEY -- CMD...)"};
  return run_exec(s, s.cl.keys[0], s.cl.argv);
}

int cmd_ls(session& s) {
  auto list = ask<std::vector<sandbox_info>>(s, caf::timespan{1min}, list_atom_v);
  if (!list) return fail(list.error());
  if (s.cl.json) {
    docker::json_writer w;
    w.begin_array();
    for (const auto& info : *list) write_info(w, info);
    w.end_array();
    std::printf("%s\n", w.str().c_str());
    return 0;
  }
  std::printf("%-24s %-10s %-12s %-26s %-6s %-6s %s\n", "KEY", "STATUS", "CONTAINER", "IMAGE",
              "AGE", "IDLE", "EXECS");
  for (const auto& info : *list) {
    std::printf("%-24s %-10s %-12s %-26s %-6s %-6s %llu\n", info.key.c_str(),
                to_string(info.status), info.container_id.substr(0, 12).c_str(), info.image.c_str(),
                age(info.created_ms).c_str(), age(info.last_used_ms).c_str(),
                static_cast<unsigned long long>(info.execs_run));
  }
  return 0;
}

int cmd_rm(session& s) {
  if (s.cl.all == !s.cl.keys.empty()) throw usage_error{"rm: give KEY... or --all"};
  if (s.cl.all) {
    auto n = ask<uint64_t>(s, caf::timespan{5min}, release_all_atom_v, release_mode::cancel_execs);
    if (!n) return fail(n.error());
    std::printf("released %llu sandboxes\n", static_cast<unsigned long long>(*n));
    return 0;
  }
  int code = 0;
  for (const auto& key : s.cl.keys) {
    auto info =
        ask<sandbox_info>(s, caf::timespan{2min}, release_atom_v, key, release_mode::cancel_execs);
    if (!info)
      code = fail(info.error());
    else
      std::printf("%s %s\n", key.c_str(), to_string(info->status));
  }
  return code;
}

int cmd_prune(session& s) {
  if (s.cl.idle.count() == 0 && s.cl.max_age.count() == 0)
    throw usage_error{"prune: give --idle D and/or --max-age D"};
  auto keys = ask<std::vector<std::string>>(s, caf::timespan{5min}, prune_atom_v,
                                            caf::timespan{s.cl.idle}, caf::timespan{s.cl.max_age});
  if (!keys) return fail(keys.error());
  for (const auto& k : *keys) std::printf("%s\n", k.c_str());
  std::fprintf(stderr, "pruned %zu sandboxes\n", keys->size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "fake-engine")
    return app::fake_engine_main(argc - 1, argv + 1);
  command_line cl;
  try {
    cl = parse(argc, argv);
  } catch (const usage_error& e) {
    std::fprintf(stderr, "corral: %s (see corral --help)\n", e.message.c_str());
    return exit_error;
  }
  if (cl.help || cl.command.empty()) {
    print_help(cl.command);
    return cl.command.empty() && !cl.help ? exit_error : 0;
  }
  static const std::vector<std::string> commands = {
      "run", "create", "exec", "ls", "rm", "prune", "version", "node", "stress", "fake-engine"};
  if (std::find(commands.begin(), commands.end(), cl.command) == commands.end()) {
    std::fprintf(stderr, "corral: unknown command '%s' (see corral --help)\n", cl.command.c_str());
    return exit_error;
  }
  if (cl.command == "version") {
    std::printf("corral %s (protocol %d, CAF %d.%d.%d)\n", actors::corral_version, protocol_version,
                CAF_MAJOR_VERSION, CAF_MINOR_VERSION, CAF_PATCH_VERSION);
    return 0;
  }
  if (cl.command == "node") return app::run_node(cl.serve);
  if (cl.command == "stress") {
    cl.stress.node = cl.node;
    cl.stress.json = cl.json;
    if (!cl.runtime.empty() && cl.runtime != "local") cl.stress.runtime = cl.runtime;
    return app::run_stress(cl.stress);
  }

  // --node A[,B,...]: one node directly, several through a router.
  std::vector<app::node_address> nodes;
  for (std::size_t start = 0; !cl.node.empty() && start <= cl.node.size();) {
    auto end = cl.node.find(',', start);
    if (end == std::string::npos) end = cl.node.size();
    auto where = app::parse_node_address(cl.node.substr(start, end - start));
    if (!where) {
      std::fprintf(stderr, "corral: --node: %s\n", describe(where.error()).c_str());
      return exit_error;
    }
    nodes.push_back(*where);
    start = end + 1;
  }
  const bool remote = !nodes.empty();
  if (auto problem = app::check_tls(cl.serve.tls); remote && !problem.empty()) {
    std::fprintf(stderr, "corral: %s\n", problem.c_str());
    return exit_error;
  }
  caf::actor_system_config cfg;
  add_message_types(cfg);
  cfg.set("logger.verbosity", caf::atom("quiet"));
  // corral's actors mostly wait on the engine: sleeping workers (sharing) cost far less CPU
  // per request than CAF's default polling work stealing (measured: 0.9 ms vs 8.5 ms).
  cfg.set("scheduler.policy", caf::atom("sharing"));
  if (remote) {
    cfg.load<caf::io::middleman>();
    cfg.set("middleman.app-identifiers", std::vector<std::string>{"corral"});
    if (cl.serve.tls.enabled()) {
      cfg.load<caf::openssl::manager>();
      cfg.set("openssl.certificate", cl.serve.tls.certificate);
      cfg.set("openssl.key", cl.serve.tls.key);
      cfg.set("openssl.cafile", cl.serve.tls.ca);
    }
  }
  caf::actor_system sys{cfg};
  int code = exit_error;
  {
    caf::scoped_actor self{sys};
    supervisor_actor sup;
    if (nodes.size() == 1) {
      auto connected = app::connect_node(self, nodes.front(), std::chrono::seconds(2));
      if (!connected) return fail(connected.error());
      sup = *connected;
    } else if (remote) {
      actors::router_options options;
      for (const auto& n : nodes) options.nodes.push_back({n.host, n.port});
      sup = actors::spawn_router(sys, options);
    } else {
      actors::runtime_config runtime;
      runtime.name = cl.runtime;
      // State lives in the engine: what this process does not release stays for the next one.
      runtime.keep_sandboxes_on_shutdown = true;
      sup = actors::spawn_supervisor(sys, runtime);
    }
    session s{self, sup, cl, nodes.size() == 1 ? cl.node : std::string()};
    try {
      if (cl.command == "run")
        code = cmd_run(s, cl);
      else if (cl.command == "create")
        code = cmd_create(s);
      else if (cl.command == "exec")
        code = cmd_exec(s);
      else if (cl.command == "ls")
        code = cmd_ls(s);
      else if (cl.command == "rm")
        code = cmd_rm(s);
      else if (cl.command == "prune")
        code = cmd_prune(s);
    } catch (const usage_error& e) {
      std::fprintf(stderr, "corral: %s (see corral %s --help)\n", e.message.c_str(),
                   cl.command.c_str());
      code = exit_error;
    }
    if (nodes.size() != 1) {  // our own supervisor or router; never a node's
      self->send_exit(sup, caf::exit_reason::user_shutdown);
      self->wait_for(sup);
    }
  }
  return code;
}
