#include "app/node.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>
#include <utility>
#include <variant>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/agent_link.hpp"
#include "actors/facade.hpp"
#include "actors/runtime_lock.hpp"
#include "actors/supervisor.hpp"
#include "app/engine_report.hpp"
#include "app/exit_codes.hpp"
#include "app/tls_listener.hpp"
#include "app/tls_material.hpp"
#include "docker/client.hpp"
#include "docker/json.hpp"
#include "messages/errors.hpp"
#include "messages/registration.hpp"

namespace corral::app {

namespace {

// One log line, as text or as a JSON object per line.
class node_log {
 public:
  node_log(const std::string& format, const std::string& level) : json_(format == "json") {
    logger_ = spdlog::stderr_logger_mt("corral-node-" + std::to_string(::getpid()));
    logger_->set_level(spdlog::level::from_str(level));
    if (json_)
      logger_->set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l",%v})");
    else
      logger_->set_pattern("%Y-%m-%d %H:%M:%S.%e %l %v");
  }

  void info(const std::string& msg) { logger_->info(format(msg)); }
  void debug(const std::string& msg) { logger_->debug(format(msg)); }
  void warn(const std::string& msg) { logger_->warn(format(msg)); }
  void error(const std::string& msg) { logger_->error(format(msg)); }

 private:
  std::string format(const std::string& msg) const {
    if (!json_) return msg;
    std::string out = "\"msg\":";
    docker::append_json_string(out, msg);
    return out;
  }
  bool json_;
  std::shared_ptr<spdlog::logger> logger_;
};

std::string hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "node";
  std::string name = buf;
  // Keys and runtime names share one character set: keep what fits.
  for (auto& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '-';
  }
  return name;
}

// The audit log: JSON lines appended to a file only root reads. Written by the facade alone
// (one actor), so lines never interleave.
class audit_file {
 public:
  explicit audit_file(const std::string& path)
      : fd_(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600)) {}
  ~audit_file() {
    if (fd_ >= 0) ::close(fd_);
  }
  audit_file(const audit_file&) = delete;
  audit_file& operator=(const audit_file&) = delete;

  bool is_open() const { return fd_ >= 0; }

  void write(const std::string& line) {
    std::string out = line + "\n";
    // One write per line: O_APPEND keeps it whole even beside another writer.
    if (::write(fd_, out.data(), out.size()) < 0) ++failures_;
  }

 private:
  int fd_;
  uint64_t failures_ = 0;
};

// Holds the node's name on its engine for the process's life, or says why it cannot start.
// Taken before anything else: a node that shares a name with a live one must not adopt, and
// then remove, the other's sandboxes.
std::optional<actors::runtime_lock> hold_name(const std::string& name, const std::string& socket,
                                              node_log& log) {
  auto taken = actors::lock_runtime_name(socket, name);
  if (auto* lock = std::get_if<actors::runtime_lock>(&taken)) return std::move(*lock);
  const auto& refusal = std::get<actors::runtime_lock_refusal>(taken);
  if (!refusal.held_elsewhere) {
    log.error("cannot make the runtime name '" + name + "' exclusive on the engine at " + socket +
              ": " + refusal.reason);
    return std::nullopt;
  }
  const std::string holder = refusal.holder > 0 ? "pid " + std::to_string(refusal.holder)
                                                : "another process (its pid not visible here)";
  log.error(messages::describe(messages::make_error(
      messages::corral_errc::name_in_use,
      "the runtime name '" + name + "' is held on the engine at " + socket + " by " + holder +
          " (lock " + refusal.path +
          "); two runtimes of one name would take each other's sandboxes: pick another --name")));
  return std::nullopt;
}

}  // namespace

int issue_cert(const node_options& options) {
  const std::string dir = options.tls.dir.empty() ? default_tls_dir : options.tls.dir;
  const auto& out = options.issue.out;
  auto problem =
      issue_client_certificate(dir, options.issue.name, out, static_cast<int>(options.issue.days));
  if (!problem.empty()) {
    std::fprintf(stderr, "corral node issue-cert: %s\n", problem.c_str());
    return exit_code::error;
  }
  std::printf(
      "wrote %s/client.pem, %s/client.key (CN=%s, %llu days) and %s/ca.pem\n"
      "hand the directory to its user (chown -R USER %s), who runs: corral --tls-dir DIR "
      "--node HOST:PORT ...\n",
      out.c_str(), out.c_str(), options.issue.name.c_str(),
      static_cast<unsigned long long>(options.issue.days), out.c_str(), out.c_str());
  return exit_code::ok;
}

int run_node(const node_options& options) {
  node_log log(options.log_format, options.log_level);
  const std::string name = options.name.empty() ? hostname() : options.name;
  // The lock and the supervisor must mean one engine: the supervisor gets the path locked.
  const auto resolved = docker::resolve_engine_socket();
  const std::string socket = resolved ? *resolved : std::string("/var/run/docker.sock");
  const auto name_lock = hold_name(name, socket, log);
  if (!name_lock) return exit_code::error;
  // What the engine does for safety, and whether this policy may run on it: writable
  // workspaces or root in sandboxes need user-namespace remapping (README: the threat model).
  const auto engine = probe_engine(socket);
  log.info("engine: " + describe_engine(engine));
  if (auto refused = check_engine_for(options.policy, engine); !refused.empty()) {
    log.error(refused);
    return exit_code::error;
  }
  // Mutual TLS on every listener: CAF 0.17's protocol cannot keep authenticated peers apart,
  // so only holders of a certificate of the node's CA reach it.
  std::string problem;
  const auto tls = node_tls(options.tls, options.listen.host, problem);
  if (!problem.empty()) {
    log.error(problem);
    return exit_code::error;
  }

  // A peer that closes mid-write must not kill the node (OpenSSL writes with write(2)).
  ::signal(SIGPIPE, SIG_IGN);
  // Signals go to sigwait below, not to a random thread: block them before any starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  caf::actor_system_config cfg;
  configure_system(cfg, {.network = true});
  caf::actor_system sys{cfg};
  auto mm = spawn_tls_middleman(sys, tls);
  if (!mm) {
    log.error(sys.render(mm.error()));
    return exit_code::error;
  }

  actors::runtime_config runtime;
  runtime.name = name;
  if (resolved) runtime.socket_path = socket;  // else the supervisor reports why not
  runtime.policy = options.policy;
  runtime.keep_sandboxes_on_shutdown = options.keep_sandboxes;
  runtime.exclusive_name = true;  // name_lock, above
  runtime.warm = options.warm;
  runtime.warn = [&log](const std::string& text) { log.warn(text); };
  runtime.warm_max = options.warm_max;
  // The crash trial's hook (tests/pool_crash_trial.sh): the node dies by SIGKILL between a
  // warm sandbox's rename to its key and its binding, as a power cut there would leave it.
  if (const char* hook = std::getenv("CORRAL_TEST_KILL_AFTER_CLAIM_RENAME"); hook && *hook == '1')
    runtime.after_claim_rename_for_tests = [] { ::kill(::getpid(), SIGKILL); };
  runtime.shutdown_grace = options.grace;
  runtime.agent_path = actors::default_agent_path();
  // Beside the node's CA: the key of the spec records' env digests, kept across restarts so
  // that an adopted sandbox's record still compares.
  runtime.spec_secret_path =
      (options.tls.dir.empty() ? std::string(default_tls_dir) : options.tls.dir) + "/spec.key";
  std::shared_ptr<audit_file> audit;
  if (!options.audit_log.empty()) {
    audit = std::make_shared<audit_file>(options.audit_log);
    if (!audit->is_open()) {
      log.error("cannot open the audit log " + options.audit_log + ": " + std::strerror(errno));
      return exit_code::error;
    }
  }
  auto sup = actors::spawn_supervisor(sys, runtime);
  // Peers reach the facade only: the supervisor's internal messages stay internal.
  actors::facade_options face;
  face.per_principal = runtime.policy.per_principal;
  // A share as large as the whole budget binds nothing: the budget's own refusal names it.
  if (face.per_principal.sandboxes >= runtime.policy.budget.sandboxes)
    face.per_principal.sandboxes = UINT64_MAX;
  if (face.per_principal.execs >= runtime.policy.budget.execs)
    face.per_principal.execs = UINT64_MAX;
  face.admins = runtime.policy.admins;
  if (audit) face.audit = [audit](const std::string& line) { audit->write(line); };
  face.dropped = [&log](const std::string& what) { log.debug(what); };
  auto counters = std::make_shared<actors::facade_counters>();
  auto facade = actors::spawn_facade(sys, sup, face, counters);
  // The supervisor first: its shutdown answers what clients still wait for (a command that
  // finishes within the grace period, a release), and those answers travel through the
  // facade. Then the facade, which answers shutting_down to anything later.
  auto stop_actors = [&] {
    caf::scoped_actor self{sys};
    self->send_exit(sup, caf::exit_reason::user_shutdown);
    self->wait_for(sup);
    self->send_exit(facade, caf::exit_reason::kill);
    self->wait_for(facade);
  };

  auto published = publish_tls(facade, options.listen.port, options.listen.host, **mm);
  if (!published) {
    log.error("cannot listen on " + options.listen.host + ":" +
              std::to_string(options.listen.port) + ": " + sys.render(published.error()));
    stop_actors();
    return exit_code::error;
  }
  log.info("corral node " + runtime.name + " (corral " + actors::corral_version + ", protocol " +
           std::to_string(messages::protocol_version) + ") listening on " + options.listen.host +
           ":" + std::to_string(*published) + " with mutual TLS (clients need a certificate of " +
           tls.ca + ")" +
           (resolves_to_loopback(options.listen.host)
                ? ""
                : "; not loopback: reachable from other hosts") +
           ", policy: " + options.policy_source);
  // Scripts and tests read the port (useful with --listen HOST:0) from this line.
  std::printf("listening %s:%u\n", options.listen.host.c_str(), static_cast<unsigned>(*published));
  std::fflush(stdout);

  int received = 0;
  sigwait(&signals, &received);
  log.info(std::string("received ") + (received == SIGTERM ? "SIGTERM" : "SIGINT") +
           ": no new connections; running commands get " + std::to_string(options.grace.count()) +
           " ms, then sandboxes are " +
           (options.keep_sandboxes ? "kept for the next start" : "released"));
  // A second signal means now.
  std::thread([signals] {
    int again = 0;
    sigwait(&signals, &again);
    std::_Exit(exit_code::second_signal);
  }).detach();
  if (auto closed = unpublish_tls(facade.address(), *published, **mm); !closed)
    log.warn("cannot close the listener on port " + std::to_string(*published) + ": " +
             sys.render(closed.error()));
  stop_actors();
  mm->reset();  // stops the TLS middleman
  log.info("corral node " + runtime.name + " stopped (" + std::to_string(counters->dropped) +
           " messages outside the interface dropped)");
  return 0;
}

}  // namespace corral::app
