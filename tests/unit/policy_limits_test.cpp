// The policy's numbers: resource limits (zero the default, nonsense invalid, excess a
// violation), the request size bounds, and plan_exec, whose checks are those limits per call.
// Split from policy_test.cpp by concern.
#include <catch2/catch.hpp>

#include "tests/unit/policy_test_support.hpp"

using namespace corral::unit_tests::policy_testing;

// -- plan_sandbox: limits --------------------------------------------------------------------

TEST_CASE("policy: limits: zero is the default, nonsense invalid, excess a violation", "[policy]") {
  pol::runtime_config cfg;
  cfg.policy.limits.memory = 2LL << 30;
  cfg.policy.limits.nano_cpus = 2'000'000'000;
  cfg.policy.limits.pids = 1000;

  SECTION("memory") {
    msg::sandbox_spec spec;
    spec.memory_bytes = -1;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "memory");
    spec.memory_bytes = 1 << 20;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "1048576");
    spec.memory_bytes = (2LL << 30) + 1;
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "2147483649");
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "(policy key limits.memory would allow it)");
    spec.memory_bytes = 2LL << 30;
    auto p = plan(spec, cfg);
    REQUIRE(p);
    CHECK(p->create.host.memory == 2LL << 30);
    CHECK(p->create.host.memory_swap == 2LL << 30);
    spec.memory_bytes = 6LL << 20;
    CHECK(plan(spec, cfg));
  }
  SECTION("memory swap includes memory") {
    msg::sandbox_spec spec;
    spec.memory_bytes = 1LL << 30;
    spec.memory_swap_bytes = 512LL << 20;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "memory-swap");
    spec.memory_swap_bytes = -1;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "memory-swap");
    spec.memory_bytes = 0;  // the 512 MiB default
    spec.memory_swap_bytes = 256LL << 20;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "memory-swap");
    spec.memory_swap_bytes = 1LL << 30;
    const auto p = plan(spec, cfg);
    REQUIRE(p);
    CHECK(p->create.host.memory == 512LL << 20);
    CHECK(p->create.host.memory_swap == 1LL << 30);
  }
  SECTION("cpus") {
    msg::sandbox_spec spec;
    spec.nano_cpus = -1;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "cpus");
    spec.nano_cpus = 1000;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "1000");
    spec.nano_cpus = 3'000'000'000;
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "3000000000");
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "limits.cpus");
    spec.nano_cpus = 500'000'000;
    const auto p = plan(spec, cfg);
    REQUIRE(p);
    CHECK(p->create.host.nano_cpus == 500'000'000);
  }
  SECTION("the defaults come from the policy") {
    cfg.policy.defaults.nano_cpus = 500'000'000;
    cfg.policy.defaults.memory = 64LL << 20;
    cfg.policy.defaults.pids = 32;
    const auto p = plan({}, cfg);
    REQUIRE(p);
    CHECK(p->create.host.nano_cpus == 500'000'000);
    CHECK(p->create.host.memory == 64LL << 20);
    CHECK(p->create.host.pids_limit == 32);
  }
  SECTION("pids") {
    msg::sandbox_spec spec;
    spec.pids_limit = -5;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "pids");
    spec.pids_limit = 4;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "pids limit of 4");
    spec.pids_limit = 1001;
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "1001");
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "limits.pids");
    spec.pids_limit = 64;
    const auto p = plan(spec, cfg);
    REQUIRE(p);
    CHECK(p->create.host.pids_limit == 64);
  }
  SECTION("durations and output caps") {
    msg::sandbox_spec spec;
    spec.exec_timeout = -1ms;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "exec timeout");
    spec.exec_timeout = 1h + 1ms;
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "(policy key limits.timeout would allow it)");
    spec.exec_timeout = 0ms;
    spec.lifetime = -1s;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "lifetime");
    spec.lifetime = 25h;
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "(policy key limits.lifetime would allow it)");
    spec.lifetime = 0ms;
    spec.idle_limit = 24h * 366;
    CHECK_REFUSED(plan(spec, cfg), invalid_request, "idle limit");
    spec.idle_limit = 0ms;
    spec.max_stdout = (16ULL << 20) + 1;
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "stdout cap");
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "limits.max_output");
    spec.max_stdout = 0;
    spec.max_stderr = (16ULL << 20) + 1;
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "stderr cap");
  }
}

// -- plan_exec -------------------------------------------------------------------------------

TEST_CASE("policy: plan_exec takes its defaults from the sandbox", "[policy]") {
  const pol::runtime_config cfg;
  const auto sbx = sandbox_for_exec();
  const auto p = pol::plan_exec(cfg, sbx, request({"echo", "hi"}));
  REQUIRE(p);
  CHECK(p->create.cmd == std::vector<std::string>{"echo", "hi"});
  CHECK(p->create.user == "1234:1234");
  CHECK(p->create.working_dir.empty());
  CHECK(p->create.env.empty());
  CHECK_FALSE(p->create.attach_stdin);
  CHECK(p->create.attach_stdout);
  CHECK(p->create.attach_stderr);
  CHECK_FALSE(p->create.tty);
  CHECK(p->timeout == 90s);
  CHECK(p->max_stdout == 1000);
  CHECK(p->max_stderr == 2000);
  CHECK(p->warnings.empty());
}

TEST_CASE("policy: plan_exec applies the call's own settings", "[policy]") {
  const pol::runtime_config cfg;
  auto r = request({"cat"});
  r.timeout = 1500ms;
  r.max_stdout = 10;
  r.max_stderr = 20;
  r.has_stdin = true;
  r.workdir = "/workspace/sub";
  const auto p = pol::plan_exec(cfg, sandbox_for_exec(), r);
  REQUIRE(p);
  CHECK(p->timeout == 1500ms);
  CHECK(p->max_stdout == 10);
  CHECK(p->max_stderr == 20);
  CHECK(p->create.attach_stdin);
  CHECK(p->create.working_dir == "/workspace/sub");
}

TEST_CASE("policy: plan_exec refuses bad requests", "[policy]") {
  const pol::runtime_config cfg;
  const auto sbx = sandbox_for_exec();
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, request({})), invalid_request, "empty command");
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, request({"echo", "a\0b"s})), invalid_request, "NUL");

  auto r = request({"true"});
  r.timeout = -1ms;
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, r), invalid_request, "negative");
  r.timeout = 1h + 1ms;
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, r), policy_violation, "1h");
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, r), policy_violation, "limits.timeout");
  r.timeout = 1h;
  CHECK(pol::plan_exec(cfg, sbx, r));

  r = request({"true"});
  r.max_stdout = (16ULL << 20) + 1;
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, r), policy_violation, "stdout cap");
  r.max_stdout = 0;
  r.max_stderr = (16ULL << 20) + 1;
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, r), policy_violation, "limits.max_output");

  r = request({"true"});
  r.workdir = "relative";
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, r), invalid_request, "relative");

  r = request({"true"});
  r.env = {{"1X", "v"}};
  CHECK_REFUSED(pol::plan_exec(cfg, sbx, r), invalid_request, "'1X'");
}

TEST_CASE("policy: plan_exec strips reserved env keys per call", "[policy]") {
  pol::runtime_config cfg;
  auto r = request({"env"});
  r.env = {{"HTTPS_PROXY", "http://evil"}, {"TOKEN", "s3cret"}, {"LD_PRELOAD", "/x.so"}};
  auto p = pol::plan_exec(cfg, sandbox_for_exec(), r);
  REQUIRE(p);
  CHECK(p->create.env == std::vector<std::string>{"TOKEN=s3cret"});
  CHECK(has_warning(p->warnings, "HTTPS_PROXY"));
  CHECK(has_warning(p->warnings, "LD_PRELOAD"));
  CHECK(p->warnings.size() == 2);

  cfg.policy.env_allowlist = {"OTHER"};
  p = pol::plan_exec(cfg, sandbox_for_exec(), r);
  REQUIRE(p);
  CHECK(p->create.env.empty());
  CHECK(has_warning(p->warnings, "TOKEN"));
}

// -- request size bounds ---------------------------------------------------------------------

TEST_CASE("policy: oversized requests are refused, not buffered", "[policy]") {
  pol::runtime_config cfg;
  cfg.max_argv_bytes = 16;  // each argument counts its size plus one
  cfg.max_env_bytes = 16;   // each pair counts key, value and two
  cfg.max_stdin_bytes = 4;

  SECTION("sandbox env, command, setup command and labels") {
    msg::sandbox_spec spec;
    spec.env = {{"A", std::string(13, 'v')}};  // exactly 16
    spec.command = {"0123456789", "abcd"};     // exactly 16
    spec.setup_command = spec.command;
    spec.labels = {{"k", std::string(13, 'v')}};
    REQUIRE(plan(spec, cfg));

    auto big = spec;
    big.env["A"] += "v";
    CHECK_REFUSED(plan(big, cfg), invalid_request, "env of 17 bytes");
    big = spec;
    big.command.back() += "e";
    CHECK_REFUSED(plan(big, cfg), invalid_request, "command of 17 bytes");
    big = spec;
    big.setup_command.push_back("");
    CHECK_REFUSED(plan(big, cfg), invalid_request, "setup command of 17 bytes");
    big = spec;
    big.labels["k"] += "v";
    CHECK_REFUSED(plan(big, cfg), invalid_request, "labels of 17 bytes");
  }
  SECTION("exec argv, env and stdin") {
    const auto sbx = plan({}, cfg);
    REQUIRE(sbx);
    auto r = request({"0123456789", "abcd"});
    r.env = {{"A", std::string(13, 'v')}};
    r.stdin_data = "1234";
    r.has_stdin = true;
    REQUIRE(pol::plan_exec(cfg, *sbx, r));

    auto big = r;
    big.argv.back() += "e";
    CHECK_REFUSED(pol::plan_exec(cfg, *sbx, big), invalid_request, "exec argv of 17 bytes");
    big = r;
    big.env["A"] += "v";
    CHECK_REFUSED(pol::plan_exec(cfg, *sbx, big), invalid_request, "exec env of 17 bytes");
    big = r;
    big.stdin_data += "5";
    CHECK_REFUSED(pol::plan_exec(cfg, *sbx, big), invalid_request, "exec stdin of 5 bytes");
  }
  SECTION("the defaults allow ordinary requests") {
    const pol::runtime_config defaults;
    CHECK(defaults.max_argv_bytes == 1u << 20);
    CHECK(defaults.max_env_bytes == 256u << 10);
    CHECK(defaults.max_stdin_bytes == 64u << 20);
  }
}
