// The corral command line, run as a real process: output, exit codes, and state kept in the
// engine from one invocation to the next.
#include <future>
#include <set>

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

TEST_CASE_METHOD(runtime_fixture,
                 "six processes creating one key at once make one container and all use it",
                 "[runtime][cli][claim]") {
  // The container's name is the key's claim: the engine refuses a second one, and each
  // process that loses the race adopts the winner.
  std::vector<std::future<cli_result>> racers;
  for (int i = 0; i < 6; ++i) {
    racers.push_back(std::async(std::launch::async, [&] {
      return run_cli({"create", "parkey", "--env", "MODE=shared"}, rt.name);
    }));
  }
  std::set<std::string> ids;
  for (auto& racer : racers) {
    const auto r = racer.get();
    INFO(r);
    CHECK(r.code == 0);
    CHECK(contains(r.out, "parkey "));
    ids.insert(r.out);
  }
  CHECK(ids.size() == 1);  // every process printed the same container
  REQUIRE(containers().size() == 1);
  // State written through one process is seen through the next: one sandbox.
  REQUIRE(run_cli({"exec", "parkey", "--", "sh", "-c", "echo one > /tmp/state"}, rt.name).code ==
          0);
  const auto seen = run_cli({"exec", "parkey", "--", "cat", "/tmp/state"}, rt.name);
  INFO(seen);
  CHECK(seen.out == "one\n");
  // Another process asking the key with another spec is told what differs, nothing is made.
  const auto other = run_cli({"create", "parkey", "--memory", "256m"}, rt.name);
  INFO(other);
  CHECK(other.code == 125);
  CHECK(contains(other.err, "conflict"));
  CHECK(contains(other.err, "memory"));
  CHECK(containers().size() == 1);
  // Released, the key is made afresh at once (the old container's name is cleared first).
  REQUIRE(run_cli({"rm", "parkey"}, rt.name).code == 0);
  const auto again = run_cli({"create", "parkey"}, rt.name);
  INFO(again);
  CHECK(again.code == 0);
  CHECK(containers().size() == 1);
  REQUIRE(run_cli({"rm", "parkey"}, rt.name).code == 0);
  CHECK(containers().empty());
}

TEST_CASE_METHOD(runtime_fixture,
                 "a sandbox keeps its user, env and spec in another process that adopts it",
                 "[runtime][cli][claim]") {
  // Nothing of the claim is in the container's labels any more: the process that adopts the
  // sandbox learns key, spec and user from its agent, and commands run as the bound user
  // whatever the adopter assumed.
  auto created = run_cli({"create", "kept", "--user", "1500:1600", "--env", "WHO=first"}, rt.name);
  INFO(created);
  REQUIRE(created.code == 0);
  auto id = run_cli({"exec", "kept", "--", "sh", "-c", "echo $(id -u):$(id -g):$WHO"}, rt.name);
  INFO(id);
  CHECK(id.code == 0);
  CHECK(id.out == "1500:1600:first\n");
  // (Env values are compared only under one secret: a CLI process has its own, so the env's
  // keys are compared here, not its values.)
  auto other = run_cli({"create", "kept", "--user", "1500:1700", "--env", "WHO=first"}, rt.name);
  INFO(other);
  CHECK(other.code == 125);
  CHECK(contains(other.err, "user"));
  auto same = run_cli({"create", "kept", "--user", "1500:1600", "--env", "WHO=first"}, rt.name);
  INFO(same);
  CHECK(same.code == 0);
  CHECK(containers().size() == 1);
  REQUIRE(run_cli({"rm", "kept"}, rt.name).code == 0);
  CHECK(containers().empty());
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

// Each command has only its own flags: CLI11 parses from one table of commands.
TEST_CASE_METHOD(runtime_fixture, "corral refuses a flag of another command, naming it",
                 "[runtime][cli]") {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"ls", "--grace", "3s"},
        {"rm", "--listen", "127.0.0.1:0", "k"},
        {"exec", "--image", "corral/sandbox:busybox", "k", "--", "true"},
        {"prune", "--timeout", "1s"},
        {"version", "--json"}}) {
    auto r = run_cli(args, rt.name);
    INFO(r);
    CHECK(r.code == 125);
    CHECK(contains(r.err, args[1]));
    CHECK(contains(r.err, "not a flag of `corral " + args[0] + "`"));
    CHECK(r.out.empty());
  }
  // A bad value, a missing value, a stray argument and `--` for a command that runs none
  // are usage errors too: 125 (never CLI11's own exit codes), naming what is wrong.
  auto bad_value = run_cli({"run", "--timeout", "5x", "--", "true"}, rt.name);
  INFO(bad_value);
  CHECK(bad_value.code == 125);
  CHECK(contains(bad_value.err, "--timeout: '5x' is not a duration"));
  auto missing = run_cli({"run", "--memory"}, rt.name);
  INFO(missing);
  CHECK(missing.code == 125);
  CHECK(contains(missing.err, "--memory"));
  auto stray = run_cli({"ls", "extra"}, rt.name);
  INFO(stray);
  CHECK(stray.code == 125);
  CHECK(contains(stray.err, "extra"));
  auto argv = run_cli({"ls", "--", "echo"}, rt.name);
  INFO(argv);
  CHECK(argv.code == 125);
  CHECK(contains(argv.err, "--"));
  CHECK(containers().empty());
}

TEST_CASE_METHOD(runtime_fixture, "corral COMMAND --help lists that command's flags",
                 "[runtime][cli]") {
  // The stress harness and the fake engine are dev tools of their own: the shipped CLI has
  // neither, and says where they went.
  for (const char* gone : {"stress", "fake-engine"}) {
    auto r = run_cli({gone, "--duration", "1s"}, rt.name);
    INFO(r);
    CHECK(r.code == 125);
    CHECK(contains(r.err, std::string("corral-") + gone));
  }

  auto ls = run_cli({"ls", "--help"}, rt.name);
  INFO(ls);
  CHECK(ls.code == 0);
  CHECK(contains(ls.out, "Usage: corral ls"));
  CHECK(contains(ls.out, "--json"));
  CHECK_FALSE(contains(ls.out, "--keys"));
  CHECK_FALSE(contains(ls.out, "--image"));

  auto exec = run_cli({"exec", "--help"}, rt.name);
  INFO(exec);
  CHECK(exec.code == 0);
  for (const char* flag : {"--timeout", "--max-output", "--env", "--workdir", "--stdin"})
    CHECK(contains(exec.out, flag));
  CHECK_FALSE(contains(exec.out, "--image"));

  // The overview lists every command from the same table, and the global flags.
  auto all = run_cli({"--help"}, rt.name);
  INFO(all);
  for (const char* command : {"corral run", "corral create", "corral exec", "corral ls",
                              "corral rm", "corral prune", "corral node"})
    CHECK(contains(all.out, command));
  CHECK_FALSE(contains(all.out, "corral stress"));
  for (const char* flag : {"--runtime", "--node", "--tls-cert"}) CHECK(contains(all.out, flag));
}

TEST_CASE_METHOD(runtime_fixture, "corral takes global flags before or after the command",
                 "[runtime][cli]") {
  const std::string other = rt.name + "-other";  // the environment's runtime; never used
  auto created = run_cli({"create", "k1", "--runtime", rt.name}, other);
  INFO(created);
  REQUIRE(created.code == 0);
  REQUIRE(containers().size() == 1);

  auto after = run_cli({"ls", "--json", "--runtime", rt.name}, other);
  INFO(after);
  CHECK(after.code == 0);
  CHECK(contains(after.out, "\"key\":\"k1\""));
  auto before = run_cli({"--runtime", rt.name, "exec", "k1", "--", "echo", "hi"}, other);
  INFO(before);
  CHECK(before.code == 0);
  CHECK(before.out == "hi\n");
  auto env_only = run_cli({"ls", "--json"}, other);
  INFO(env_only);
  CHECK(env_only.code == 0);
  CHECK_FALSE(contains(env_only.out, "\"key\":\"k1\""));

  // --node after the command is used (and fails to connect), not refused as unknown.
  auto node = run_cli({"ls", "--node", "127.0.0.1:1"}, rt.name);
  INFO(node);
  CHECK(node.code == 125);
  CHECK(contains(node.err, "127.0.0.1:1"));
  CHECK_FALSE(contains(node.err, "not a flag"));

  auto removed = run_cli({"rm", "k1", "--runtime", rt.name}, other);
  INFO(removed);
  CHECK(removed.code == 0);
  CHECK(containers().empty());
}

namespace {

// Runs `script` under sh with CORRAL (the binary), CORRAL_STRESS (corral-stress) and
// CORRAL_RUNTIME set; returns its exit code and what it printed on stdout and stderr together.
cli_result run_shell(const std::string& script, const std::string& runtime) {
  const std::string command = "CORRAL='" CORRAL_CLI_PATH "' CORRAL_STRESS='" CORRAL_STRESS_PATH
                              "' CORRAL_RUNTIME='" +
                              runtime + "' sh -c '" + script + "' 2>&1";
  cli_result r;
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buf[4096];
  while (auto n = std::fread(buf, 1, sizeof buf, pipe)) r.out.append(buf, n);
  const int status = ::pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace

TEST_CASE_METHOD(runtime_fixture, "corral run --stdin stops reading at its bound",
                 "[runtime][cli][input]") {
  // An endless producer: the CLI refuses once it holds more than the bound, instead of
  // reading (and buffering) forever.
  const auto r = run_shell("yes | \"$CORRAL\" run --stdin -- true; echo \"rc $?\"", rt.name);
  INFO(r);
  CHECK(contains(r.out, "rc 125"));
  CHECK(contains(r.out, "--stdin: the input is larger than 64 MiB"));
  CHECK(containers().empty());
}

TEST_CASE_METHOD(runtime_fixture, "corral-stress --help lists its flags and corral's target flags",
                 "[runtime][cli][stress]") {
  const auto r = run_shell("\"$CORRAL_STRESS\" --help; echo \"rc $?\"", rt.name);
  INFO(r);
  CHECK(contains(r.out, "rc 0\n"));
  CHECK(contains(r.out, "corral-stress"));
  for (const char* flag : {"--keys", "--concurrency", "--duration", "--capacity", "--fault-rate",
                           "--runtime", "--node", "--tls-dir"})
    CHECK(contains(r.out, flag));
  CHECK_FALSE(contains(r.out, "--listen"));
}

TEST_CASE_METHOD(runtime_fixture, "corral-stress fails when its operations fail",
                 "[runtime][cli][stress]") {
  // No engine at that socket: every operation fails with engine_unavailable, which the
  // workload never injects. The run must not pass for a run that did nothing.
  const auto r = run_shell(
      "DOCKER_HOST=unix:///nonexistent/docker.sock \"$CORRAL_STRESS\" --duration 3s --keys 2 "
      "--concurrency 2; echo \"rc $?\"",
      rt.name);
  INFO(r);
  CHECK(contains(r.out, "rc 1\n"));
  CHECK(contains(r.out, "FAIL"));
}
