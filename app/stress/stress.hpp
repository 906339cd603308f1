// `corral-stress`: drives a runtime (embedded, or a node) with a mixed workload, reports
// throughput and latency percentiles per operation, errors by kind, and fails on leaks.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "app/system_config.hpp"

namespace corral::app {

struct stress_options {
  uint64_t keys = 8;
  uint64_t concurrency = 8;
  std::chrono::milliseconds duration{std::chrono::seconds(30)};
  uint64_t ops = 0;  // 0: until the duration ends
  // Weights of the operations; see `corral-stress --help`.
  std::string mix = "acquire=2,exec=10,long=1,timeout=1,release=2,kill=1";
  std::string engine = "real";  // real | fake
  double fake_latency_scale = 1.0;
  double fake_fault_rate = 0.0;
  std::string node;       // HOST:PORT: drive a node instead of an embedded runtime
  tls_options tls;        // --tls-*: for the node
  std::string runtime;    // runtime name; empty: "stress-<pid>"
  uint64_t capacity = 0;  // 0: keys + 16
  uint64_t warm = 0;      // the embedded runtime's warm pool (runtime_config.warm)
  bool json = false;
  std::string csv_path;
  std::string plot_path;
  std::chrono::milliseconds sample_every{std::chrono::seconds(1)};  // memory and fd samples
  bool soak = false;  // also fail when fds or memory grow over the run
  // Errors the workload did not inject on purpose that the run tolerates; one more fails it.
  uint64_t max_errors = 0;
};

int run_stress(const stress_options& options);

}  // namespace corral::app
