// The corral command line, run as a real process: output, exit codes, and state kept in the
// engine from one invocation to the next.
#include "cli_process.hpp"

using namespace corral::runtime_tests;

TEST_CASE_METHOD(runtime_fixture, "corral run", "[runtime][cli]") {
  SECTION("output and exit code are the command's") {
    auto r = run_cli({"run", "--", "sh", "-c", "echo out; echo err >&2; exit 3"}, rt.name);
    INFO(r);
    CHECK(r.code == 3);
    CHECK(r.out == "out\n");
    CHECK(contains(r.err, "err\n"));
  }
  SECTION("a timeout is 124") {
    const auto t0 = steady::now();
    auto r = run_cli({"run", "--timeout", "1s", "--", "sleep", "10"}, rt.name);
    INFO(r);
    CHECK(r.code == 124);
    CHECK(contains(r.err, "timed out"));
    CHECK(steady::now() - t0 < 8s);
  }
  SECTION("a missing command is 127") {
    auto r = run_cli({"run", "--", "no-such-command-here"}, rt.name);
    INFO(r);
    CHECK(r.code == 127);
  }
  SECTION("a disallowed image is 125 with the reason") {
    auto r = run_cli({"run", "--image", "alpine:3", "--", "true"}, rt.name);
    INFO(r);
    CHECK(r.code == 125);
    CHECK(contains(r.err, "policy_violation"));
    CHECK(r.out.empty());
  }
  SECTION("an unknown flag is 125") {
    auto r = run_cli({"run", "--no-such-flag", "--", "true"}, rt.name);
    INFO(r);
    CHECK(r.code == 125);
    CHECK(contains(r.err, "--no-such-flag"));
  }
  // Every run removed its sandbox: the fixture's teardown checks the engine.
}

TEST_CASE_METHOD(runtime_fixture, "corral create, exec, ls, rm across processes",
                 "[runtime][cli]") {
  auto created = run_cli({"create", "k1"}, rt.name);
  INFO(created);
  REQUIRE(created.code == 0);
  CHECK(contains(created.out, "k1 "));
  REQUIRE(containers().size() == 1);

  auto hi = run_cli({"exec", "k1", "--", "echo", "hi"}, rt.name);
  INFO(hi);
  CHECK(hi.code == 0);
  CHECK(hi.out == "hi\n");

  auto ls = run_cli({"ls", "--json"}, rt.name);
  INFO(ls);
  CHECK(ls.code == 0);
  CHECK(contains(ls.out, "\"key\":\"k1\""));
  CHECK(contains(ls.out, "\"status\":\"ready\""));
  CHECK(contains(ls.out, containers().at(0).id));

  auto rm = run_cli({"rm", "k1"}, rt.name);
  INFO(rm);
  CHECK(rm.code == 0);
  CHECK(contains(rm.out, "k1 removed"));
  CHECK(containers().empty());

  auto gone = run_cli({"exec", "k1", "--", "true"}, rt.name);
  INFO(gone);
  CHECK(gone.code == 125);
  CHECK(contains(gone.err, "not_found"));
}

TEST_CASE_METHOD(runtime_fixture, "corral help and version", "[runtime][cli]") {
  auto help = run_cli({"--help"}, rt.name);
  INFO(help);
  CHECK(help.code == 0);
  CHECK(contains(help.out, "Usage:"));
  CHECK(contains(help.out, "corral run"));

  auto run_help = run_cli({"run", "--help"}, rt.name);
  INFO(run_help);
  CHECK(run_help.code == 0);
  CHECK(contains(run_help.out, "Usage: corral run"));
  CHECK(contains(run_help.out, "--timeout"));

  auto version = run_cli({"version"}, rt.name);
  INFO(version);
  CHECK(version.code == 0);
  CHECK(contains(version.out, std::string("corral ") + corral::actors::corral_version));

  auto nothing = run_cli({}, rt.name);
  INFO(nothing);
  CHECK(nothing.code == 125);

  auto unknown = run_cli({"frobnicate"}, rt.name);
  INFO(unknown);
  CHECK(unknown.code == 125);
  CHECK(contains(unknown.err, "frobnicate"));

  auto flag = run_cli({"ls", "--bogus"}, rt.name);
  INFO(flag);
  CHECK(flag.code == 125);
  CHECK(contains(flag.err, "--bogus"));
}
