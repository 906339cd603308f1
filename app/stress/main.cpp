// `corral-stress`: the stress harness as a program of its own (a dev tool, not installed),
// so that the shipped `corral` links neither it nor the fake engine it can run against. It
// takes what `corral stress` took: the harness's flags and corral's target flags (--runtime,
// --node, --tls-*, and their CORRAL_* variables). Usage errors exit 125; a run that leaked or
// failed exits 1 (app/exit_codes.hpp).
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "app/cli_flags.hpp"
#include "app/exit_codes.hpp"
#include "app/stress/stress.hpp"

using namespace corral::app;

namespace {

constexpr const char* description =
    "Drive a runtime (embedded, or a node with --node) with a mixed workload; print throughput\n"
    "and latency percentiles per operation, errors by kind, and check that no container,\n"
    "connection, actor, file descriptor or memory outlived the run (exit 1 if one did).\n"
    "Operations: exec: echo; long: sleep 1; timeout: sleep 30 with a 300ms timeout;\n"
    "kill: the container is killed from outside.";

void target_flags(CLI::App& app, std::string& runtime, stress_options& o) {
  app.option_defaults()->group("Target flags (as corral's)");
  app.add_option("--runtime", runtime,
                 "runtime name in container labels (default \"stress-<pid>\")")
      ->type_name("NAME")
      ->envname("CORRAL_RUNTIME");
  app.add_option("--node", o.node, "drive a `corral node` instead of an embedded runtime")
      ->type_name("HOST:PORT[,...]")
      ->envname("CORRAL_NODE");
  app.add_option("--tls-cert", o.tls.certificate, "this client's certificate chain (PEM)")
      ->type_name("FILE");
  app.add_option("--tls-key", o.tls.key, "its private key")->type_name("FILE");
  app.add_option("--tls-ca", o.tls.ca, "the CA the node's certificate must chain to")
      ->type_name("FILE");
  app.add_option("--tls-dir", o.tls.dir,
                 "without --tls-cert/--tls-key/--tls-ca: a client's ca.pem, client.pem, "
                 "client.key (default, as root: /var/lib/corral/tls)")
      ->type_name("DIR")
      ->envname("CORRAL_TLS_DIR");
}

void workload_flags(CLI::App& app, stress_options& o) {
  app.option_defaults()->group("Workload flags");
  count_flag(app, "--keys", o.keys, 1, unbounded,
             "sandbox keys to spread the work over (default 8)");
  count_flag(app, "--concurrency", o.concurrency, 1, 4096, "operations in flight (default 8)");
  duration_flag(
      app, "--duration", [&o](auto d) { o.duration = d; }, "stop after D (default 30s)");
  count_flag(app, "--ops", o.ops, 0, unbounded, "stop after N operations (default: no limit)");
  app.add_option("--mix", o.mix,
                 "operation weights (default acquire=2,exec=10,long=1,timeout=1,release=2,kill=1)")
      ->type_name("SPEC");
  app.add_option("--engine", o.engine, "the real engine (default) or an in-process fake one")
      ->type_name("ENGINE")
      ->check(CLI::IsMember({"real", "fake"}));
  decimal_flag(app, "--fake-latency-scale", o.fake_latency_scale, 1e6, "a number from 0 to 1e6",
               "fake engine latencies times X (default 1: this machine's engine)");
  decimal_flag(app, "--fault-rate", o.fake_fault_rate, 1, "a probability from 0 to 1",
               "fake engine: inject faults (errors, resets, cut streams, lost events)");
  count_flag(app, "--capacity", o.capacity, 1, unbounded, "runtime capacity (default keys + 16)");
  count_flag(app, "--warm", o.warm, 0, 10000,
             "keep N sandboxes started for acquires to take (the real engine; default 0)");
  app.add_flag("--soak", o.soak,
               "also fail if fds or memory grow over the run (a steady workload)");
  count_flag(app, "--max-errors", o.max_errors, 0, unbounded,
             "fail (exit 1) when more operations than this end in errors the workload did not "
             "inject (default 0)");
  app.add_flag("--json", o.json, "print the report as JSON too");
  app.add_option("--csv", o.csv_path, "write per-operation figures as CSV")->type_name("FILE");
  app.add_option("--plot", o.plot_path,
                 "draw latency over time and the latency histogram (gnuplot)")
      ->type_name("FILE.png");
}

}  // namespace

int main(int argc, char** argv) {
  stress_options options;
  std::string runtime;
  CLI::App app{description, "corral-stress"};
  app.set_help_flag("-h,--help", "print this help");
  target_flags(app, runtime, options);
  workload_flags(app, options);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::printf("%s", app.help().c_str());
    return exit_code::ok;
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "corral-stress: %s (see corral-stress --help)\n", e.what());
    return exit_code::error;
  }
  // As `corral stress` did: the CLI's default runtime name means "a name of the run's own".
  if (runtime != "local") options.runtime = runtime;
  return run_stress(options);
}
