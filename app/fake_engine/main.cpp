// `corral-fake-engine`: the fake Docker engine (corral_fake_engine) served on its own, for
// runs of corral or corral-stress against it (DOCKER_HOST=unix://PATH). A dev tool: the
// shipped `corral` does not have it.
#include <pthread.h>
#include <signal.h>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "app/cli_values.hpp"
#include "app/fake_engine/fake_engine.hpp"

using namespace corral::app;

namespace {

int usage(std::ostream& out, int code) {
  out << "usage: corral-fake-engine --socket PATH [--latency-scale X] [--error-rate P] "
         "[--reset-rate P]\n"
         "         [--slow-rate P] [--slow-delay D] [--truncate-rate P] [--drop-event-rate P] "
         "[--seed N]\n"
         "A fake Docker engine (Engine API 1.41) for scale and fault-injection runs of corral.\n"
         "Latencies default to the real engine's on corral's build machines; --latency-scale 0\n"
         "answers at once. Rates are probabilities in [0, 1]. Stops on SIGTERM or SIGINT.\n";
  return code;
}

std::optional<double> parse_rate(const std::string& text, bool probability) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !(v >= 0)) return std::nullopt;
  if (probability && v > 1) return std::nullopt;
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  fake_engine_options options;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    std::string value;
    bool have_value = false;
    if (auto eq = flag.find('='); eq != std::string::npos && flag.rfind("--", 0) == 0) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      have_value = true;
    }
    if (flag == "--help" || flag == "-h") return usage(std::cout, 0);
    if (!have_value) {
      if (i + 1 >= args.size()) {
        std::cerr << "corral-fake-engine: " << flag << " needs a value\n";
        return usage(std::cerr, 2);
      }
      value = args[++i];
    }
    auto bad = [&] {
      std::cerr << "corral-fake-engine: bad value for " << flag << ": '" << value << "'\n";
      return 2;
    };
    if (flag == "--socket") {
      options.socket_path = value;
    } else if (flag == "--latency-scale") {
      auto v = parse_rate(value, false);
      if (!v) return bad();
      options.latency_scale = *v;
    } else if (flag == "--slow-delay") {
      auto d = parse_duration(value);
      if (!d) return bad();
      options.slow_delay = *d;
    } else if (flag == "--seed") {
      char* end = nullptr;
      options.seed = std::strtoull(value.c_str(), &end, 10);
      if (value.empty() || end != value.c_str() + value.size()) return bad();
    } else {
      double* target = flag == "--error-rate"        ? &options.error_rate
                       : flag == "--reset-rate"      ? &options.reset_rate
                       : flag == "--slow-rate"       ? &options.slow_rate
                       : flag == "--truncate-rate"   ? &options.truncate_rate
                       : flag == "--drop-event-rate" ? &options.drop_event_rate
                                                     : nullptr;
      if (!target) {
        std::cerr << "corral-fake-engine: unknown option " << flag << "\n";
        return usage(std::cerr, 2);
      }
      auto v = parse_rate(value, true);
      if (!v) return bad();
      *target = *v;
    }
  }
  if (options.socket_path.empty()) {
    std::cerr << "corral-fake-engine: --socket PATH is required\n";
    return usage(std::cerr, 2);
  }

  // Signals go to sigwait below: block them before the I/O thread starts, so it inherits it.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::unique_ptr<fake_engine> engine;
  try {
    engine = std::make_unique<fake_engine>(options);
  } catch (const std::exception& e) {
    std::cerr << "corral-fake-engine: " << e.what() << "\n";
    return 1;
  }
  std::cout << "fake engine listening on " << options.socket_path << std::endl;
  int sig = 0;
  sigwait(&signals, &sig);
  const auto final_stats = engine->stats();
  engine->stop();
  std::cerr << "fake engine stopped (" << (sig == SIGINT ? "SIGINT" : "SIGTERM") << ")\n"
            << final_stats.summary();
  return 0;
}
