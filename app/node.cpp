#include "app/node.hpp"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <thread>
#include <utility>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include "actors/supervisor.hpp"
#include "app/exit_codes.hpp"
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

}  // namespace

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

int run_node(const node_options& options) {
  node_log log(options.log_format, options.log_level);
  if (!is_loopback(options.listen.host) && !options.tls.enabled()) {
    log.error("listening on " + options.listen.host +
              " needs TLS: give --tls-cert, --tls-key and --tls-ca (loopback needs none)");
    return exit_code::error;
  }
  if (auto problem = check_tls(options.tls); !problem.empty()) {
    log.error(problem);
    return exit_code::error;
  }

  // Signals go to sigwait below, not to a random thread: block them before any starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  caf::actor_system_config cfg;
  configure_system(cfg, {.network = true, .tls = options.tls});
  caf::actor_system sys{cfg};

  actors::runtime_config runtime;
  runtime.name = options.name.empty() ? hostname() : options.name;
  runtime.policy = options.policy;
  runtime.keep_sandboxes_on_shutdown = options.keep_sandboxes;
  runtime.shutdown_grace = options.grace;
  auto sup = actors::spawn_supervisor(sys, runtime);

  auto published =
      options.tls.enabled()
          ? caf::openssl::publish(sup, options.listen.port, options.listen.host.c_str(), true)
          : sys.middleman().publish(sup, options.listen.port, options.listen.host.c_str(), true);
  if (!published) {
    log.error("cannot listen on " + options.listen.host + ":" +
              std::to_string(options.listen.port) + ": " + sys.render(published.error()));
    caf::anon_send_exit(sup, caf::exit_reason::kill);
    return exit_code::error;
  }
  log.info("corral node " + runtime.name + " (corral " + actors::corral_version + ", protocol " +
           std::to_string(messages::protocol_version) + ") listening on " + options.listen.host +
           ":" + std::to_string(*published) + (options.tls.enabled() ? " with TLS" : "") +
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
  sys.middleman().unpublish(sup, *published);
  {
    caf::scoped_actor self{sys};
    self->send_exit(sup, caf::exit_reason::user_shutdown);
    self->wait_for(sup);
  }
  log.info("corral node " + runtime.name + " stopped");
  return 0;
}

}  // namespace corral::app
