// The sandbox policy as pure functions: what is accepted, what is refused and with which code,
// and the exact container the strict defaults produce. No engine, no actors. This file: the
// plan's strict defaults, the agent's form, key and image, loosening, the never-granted,
// labels, tmpfs and command, the spec hash. Beside it: policy_text_test.cpp (strings, keys,
// users, images), policy_workspace_test.cpp, policy_limits_test.cpp (limits, sizes, plan_exec),
// policy_egress_test.cpp (egress hosts and env).
#include <catch2/catch.hpp>

#include "tests/unit/policy_test_support.hpp"

using namespace corral::unit_tests::policy_testing;

// -- plan_sandbox: the strict defaults -------------------------------------------------------

TEST_CASE("policy: an empty spec gets exactly the strict defaults", "[policy]") {
  const pol::runtime_config cfg;
  const auto p = plan({}, cfg, "sbx-1");
  REQUIRE(p);
  const auto& c = p->create;
  const auto& h = c.host;

  CHECK(c.image == "corral/sandbox:busybox");
  CHECK(c.cmd == std::vector<std::string>{"sleep", "2147483647"});
  CHECK(c.entrypoint.empty());
  CHECK(c.env.empty());
  CHECK(c.user == "1000:1000");
  CHECK(p->user == "1000:1000");
  CHECK(c.working_dir.empty());
  CHECK(c.stop_signal == "SIGTERM");
  CHECK(c.stop_timeout == 1);
  CHECK_FALSE(c.tty);
  CHECK_FALSE(c.open_stdin);

  CHECK(h.network_mode == "none");
  CHECK(h.readonly_rootfs);
  CHECK(h.cap_drop == std::vector<std::string>{"ALL"});
  CHECK(h.cap_add.empty());
  CHECK(h.security_opt == std::vector<std::string>{"no-new-privileges"});
  CHECK(h.pids_limit == 256);
  CHECK(h.memory == 512LL * 1024 * 1024);
  CHECK(h.memory_swap == h.memory);
  CHECK(h.nano_cpus == 1'000'000'000);
  CHECK(h.init);
  CHECK(h.binds.empty());
  CHECK(h.tmpfs == std::map<std::string, std::string>{
                       {"/tmp", "rw,noexec,nosuid,nodev,size=67108864,uid=1000,gid=1000"}});

  CHECK(c.labels.size() == 7);
  CHECK(c.labels.at("corral.spec") == p->spec_record);
  // The backstop deadline: created-at plus the lifetime (the default: 24 h).
  CHECK(std::stoll(c.labels.at("corral.deadline")) ==
        std::stoll(c.labels.at("corral.created-at")) + 24LL * 3600 * 1000);
  CHECK(c.labels.count("corral.principal") == 0);  // the embedder's key: no principal
  CHECK(c.labels.at("corral.managed-by") == "corral");
  CHECK(c.labels.at("corral.runtime") == "local");
  CHECK(c.labels.at("corral.key") == "sbx-1");
  CHECK(c.labels.at("corral.created-at") == "1700000000000");
  CHECK(c.labels.at("corral.spec-hash") == p->spec_hash);
  CHECK(p->spec_hash.size() == 16);
  CHECK(p->spec_hash.find_first_not_of("0123456789abcdef") == std::string::npos);

  CHECK(p->warnings.empty());
  CHECK(p->setup_command.empty());
  CHECK(p->exec_timeout == 60s);
  CHECK(p->max_stdout == 1u << 20);
  CHECK(p->max_stderr == 1u << 20);
  CHECK(p->lifetime == 24h);  // limits.lifetime: every sandbox ends by itself
  CHECK(p->idle_limit == 0ms);
}

TEST_CASE("policy: a one-shot sandbox gets run_lifetime unless it asks for a lifetime",
          "[policy]") {
  pol::runtime_config cfg;
  cfg.policy.run_lifetime = 15min;
  msg::sandbox_spec spec;
  spec.one_shot = true;
  CHECK(plan(spec, cfg)->lifetime == 15min);
  spec.lifetime = 2h;
  CHECK(plan(spec, cfg)->lifetime == 2h);
  spec.one_shot = false;
  spec.lifetime = 0ms;
  CHECK(plan(spec, cfg)->lifetime == 24h);
}

TEST_CASE("policy: the runtime's name, stop grace and defaults reach the plan", "[policy]") {
  pol::runtime_config cfg;
  cfg.name = "ci";
  cfg.stop_grace = 5s;
  cfg.policy.defaults.timeout = 7s;
  cfg.policy.defaults.max_output = 1000;
  cfg.policy.defaults.lifetime = 1h;
  cfg.policy.defaults.idle = 10min;
  cfg.policy.defaults.image = "corral/other:1";
  const auto p = plan({}, cfg);
  REQUIRE(p);
  CHECK(p->create.labels.at("corral.runtime") == "ci");
  CHECK(p->create.stop_timeout == 5);
  CHECK(p->create.image == "corral/other:1");
  CHECK(p->exec_timeout == 7s);
  CHECK(p->max_stdout == 1000);
  CHECK(p->max_stderr == 1000);
  CHECK(p->lifetime == 1h);
  CHECK(p->idle_limit == 10min);
}

TEST_CASE("policy: spec values override the runtime's defaults", "[policy]") {
  msg::sandbox_spec spec;
  spec.command = {"python3", "-m", "http.server"};
  spec.setup_command = {"mkdir", "-p", "/tmp/x"};
  spec.exec_timeout = 90s;
  spec.max_stdout = 10;
  spec.max_stderr = 20;
  spec.lifetime = 2h;
  spec.idle_limit = 5min;
  spec.workdir = "/opt/app";
  spec.labels = {{"team", "a"}};
  const auto p = plan(spec);
  REQUIRE(p);
  CHECK(p->create.cmd == spec.command);
  CHECK(p->setup_command == spec.setup_command);
  CHECK(p->exec_timeout == 90s);
  CHECK(p->max_stdout == 10);
  CHECK(p->max_stderr == 20);
  CHECK(p->lifetime == 2h);
  CHECK(p->idle_limit == 5min);
  CHECK(p->create.working_dir == "/opt/app");
  CHECK(p->create.labels.at("team") == "a");
  CHECK(p->create.labels.size() == 8);
}

TEST_CASE("policy: use_agent makes the agent PID 1 and moves env and command to it",
          "[policy][agent]") {
  pol::runtime_config cfg;
  cfg.agent_path = "/opt/corral/corral-agent";
  cfg.agent_run_root = "/run/corral/sandboxes";
  cfg.policy.capabilities = {"NET_BIND_SERVICE"};
  msg::sandbox_spec spec;
  spec.env = {{"TOKEN", "s3cr3t-value"}};
  spec.command = {"python3", "-m", "http.server"};
  spec.cap_add = {"NET_BIND_SERVICE"};
  auto p = plan(spec, cfg, "sbx-1");
  REQUIRE(p);
  pol::use_agent(*p, cfg, "0123456789abcdef");
  const auto& c = p->create;
  CHECK(p->agent);
  CHECK(c.entrypoint == std::vector<std::string>{"/corral/agent"});
  CHECK(c.cmd == std::vector<std::string>{"--socket", "/corral/run/agent.sock"});
  CHECK(c.user == "0:0");
  CHECK(p->user == "1000:1000");  // commands' user
  CHECK_FALSE(c.host.init);
  CHECK(c.env.empty());
  CHECK(p->sandbox_env == std::vector<std::string>{"TOKEN=s3cr3t-value"});
  CHECK(p->main_command == spec.command);
  CHECK(p->command_caps == std::vector<std::string>{"NET_BIND_SERVICE"});
  auto caps = c.host.cap_add;
  std::sort(caps.begin(), caps.end());
  CHECK(caps ==
        std::vector<std::string>{"KILL", "NET_BIND_SERVICE", "SETGID", "SETPCAP", "SETUID"});
  CHECK(c.host.cap_drop == std::vector<std::string>{"ALL"});
  CHECK(c.host.binds ==
        std::vector<std::string>{"/opt/corral/corral-agent:/corral/agent:ro",
                                 "/run/corral/sandboxes/0123456789abcdef:/corral/run:rw"});
  CHECK(c.labels.at("corral.sandbox-id") == "0123456789abcdef");
  for (const auto& [k, v] : c.labels) CHECK(v.find("s3cr3t-value") == std::string::npos);

  SECTION("the keep-alive is the agent: no main command") {
    auto q = plan({}, cfg, "sbx-2");
    REQUIRE(q);
    pol::use_agent(*q, cfg, "fedcba9876543210");
    CHECK(q->main_command.empty());
  }
}

// -- plan_sandbox: key and image -------------------------------------------------------------

TEST_CASE("policy: plan_sandbox checks the key and the image", "[policy]") {
  CHECK_REFUSED(plan({}, {}, "../x"), invalid_request, "'../x'");
  CHECK_REFUSED(plan({}, {}, ""), invalid_request, "sandbox key");

  msg::sandbox_spec spec;
  spec.image = "ghcr.io/org/tool:1";
  CHECK_REFUSED(plan(spec), policy_violation, "ghcr.io/org/tool:1");
  CHECK_REFUSED(plan(spec), policy_violation, "corral/");
  CHECK_REFUSED(plan(spec), policy_violation, "(policy key images would allow it)");

  pol::runtime_config open;
  open.policy.images = {"*"};
  CHECK(plan(spec, open));
  pol::runtime_config none;
  none.policy.images = {};
  CHECK_REFUSED(plan(spec, none), policy_violation, "images");
  pol::runtime_config org;
  org.policy.images = {"ghcr.io/org/"};
  CHECK(plan(spec, org));
  spec.image = "ghcr.io/org-evil/tool:1";
  CHECK_REFUSED(plan(spec, org), policy_violation, "ghcr.io/org-evil/tool:1");
  // An embedder's allowlist is not checked by the policy file's loader; the refusal lists it
  // escaped, on one line (found by the fuzz stage: a tab in an entry was echoed raw).
  pol::runtime_config odd;
  odd.policy.images = {"ghcr.io/a\tb\n/"};
  CHECK_REFUSED(plan(spec, odd), policy_violation, "('ghcr.io/a\\x09b\\x0a/')");

  spec.image = "corral/x;rm -rf /";
  CHECK_REFUSED(plan(spec, open), invalid_request, "corral/x;rm -rf /");
  spec.image = "UPPER/case";
  CHECK_REFUSED(plan(spec, open), invalid_request, "UPPER/case");
}

// -- plan_sandbox: loosening -----------------------------------------------------------------

TEST_CASE("policy: loosening beyond the policy names the key that would allow it", "[policy]") {
  msg::sandbox_spec network;
  network.network_mode = "bridge";
  CHECK_REFUSED(plan(network), policy_violation, "(policy key networks would allow it)");
  msg::sandbox_spec root;
  root.writable_root = true;
  CHECK_REFUSED(plan(root), policy_violation, "(policy key writable_root would allow it)");
  msg::sandbox_spec cap;
  cap.cap_add = {"net_bind_service"};
  CHECK_REFUSED(plan(cap), policy_violation, "(policy key capabilities would allow it)");
  cap.cap_add = {"CHOWN"};
  pol::runtime_config other;
  other.policy.capabilities = {"NET_RAW"};
  CHECK_REFUSED(plan(cap, other), policy_violation, "capability CHOWN");
  msg::sandbox_spec user;
  user.user = "0";
  CHECK_REFUSED(plan(user), policy_violation, "(policy key users.allow_root would allow it)");
  msg::sandbox_spec none;
  none.network_mode = "none";  // the strictest is always allowed
  pol::runtime_config no_networks;
  no_networks.policy.networks = {};
  CHECK(plan(none, no_networks));
}

TEST_CASE("policy: loosening is explicit and reported", "[policy]") {
  SECTION("network bridge") {
    msg::sandbox_spec spec;
    spec.network_mode = "bridge";
    const auto p = plan(spec, loose());
    REQUIRE(p);
    CHECK(p->create.host.network_mode == "bridge");
    CHECK(has_warning(p->warnings, "network bridge"));
  }
  SECTION("writable root") {
    msg::sandbox_spec spec;
    spec.writable_root = true;
    const auto p = plan(spec, loose());
    REQUIRE(p);
    CHECK_FALSE(p->create.host.readonly_rootfs);
    CHECK(has_warning(p->warnings, "writable root"));
  }
  SECTION("an added capability, in any spelling") {
    for (const char* cap : {"NET_BIND_SERVICE", "net_bind_service", "CAP_NET_BIND_SERVICE"}) {
      msg::sandbox_spec spec;
      spec.cap_add = {cap};
      const auto p = plan(spec, loose());
      REQUIRE(p);
      CHECK(p->create.host.cap_drop == std::vector<std::string>{"ALL"});
      CHECK(p->create.host.cap_add == std::vector<std::string>{"NET_BIND_SERVICE"});
      CHECK(has_warning(p->warnings, "NET_BIND_SERVICE"));
    }
  }
  SECTION("running as root, when the runtime allows it") {
    pol::runtime_config cfg;
    cfg.policy.users.allow_root = true;
    for (const char* user : {"0", "0:0", "1000:0", "0:1000"}) {
      msg::sandbox_spec spec;
      spec.user = user;
      const auto p = plan(spec, cfg);
      INFO("user " << user);
      REQUIRE(p);
      CHECK(has_warning(p->warnings, "root"));
    }
    msg::sandbox_spec spec;
    spec.user = "0";
    CHECK(plan(spec, cfg)->create.user == "0:0");
  }
  SECTION("several at once, each reported") {
    msg::sandbox_spec spec;
    spec.network_mode = "bridge";
    spec.writable_root = true;
    spec.cap_add = {"CHOWN", "NET_RAW"};
    const auto p = plan(spec, loose());
    REQUIRE(p);
    CHECK(p->warnings.size() == 4);
  }
}

TEST_CASE("policy: the sandbox user sets the tmpfs owner", "[policy]") {
  auto tmp_options = [](const std::string& user) {
    msg::sandbox_spec spec;
    spec.user = user;
    const auto p = plan(spec);
    REQUIRE(p);
    return p->create.host.tmpfs.at("/tmp");
  };
  CHECK_THAT(tmp_options("1234:5678"), Catch::EndsWith(",uid=1234,gid=5678"));
  CHECK_THAT(tmp_options("1234"), Catch::EndsWith(",uid=1234,gid=1234"));
  CHECK_THAT(tmp_options(""), Catch::EndsWith(",uid=1000,gid=1000"));

  for (const char* bad : {":1000", "1000:", "a b", "bad;user", "$(id)", "u\n", "1:2:3", "-1",
                          "+1000", "1000 ", "4294967296"}) {
    msg::sandbox_spec spec;
    spec.user = bad;
    INFO("user " << bad);
    CHECK_REFUSED(plan(spec), invalid_request, "user");
  }
}

// -- plan_sandbox: forbidden -----------------------------------------------------------------

TEST_CASE("policy: host namespaces and dangerous capabilities are never granted", "[policy]") {
  // Even a policy built in code that lists them does not grant them.
  auto cfg = loose();
  cfg.policy.networks = {"none", "host", "container:x"};
  cfg.policy.capabilities = {"NET_BIND_SERVICE", "SYS_ADMIN", "ALL", "SYS_PTRACE", "BPF"};
  for (const char* mode : {"host", "container:x", "container:abc123"}) {
    msg::sandbox_spec spec;
    spec.network_mode = mode;
    CHECK_REFUSED(plan(spec, cfg), policy_violation, mode);
    CHECK_REFUSED(plan(spec, cfg), policy_violation, "namespace outside the sandbox");
  }
  for (const char* cap : {"SYS_ADMIN", "sys_admin", "CAP_SYS_ADMIN", "ALL", "all", "SYS_PTRACE",
                          "SYS_MODULE", "NET_ADMIN", "BPF", "DAC_READ_SEARCH"}) {
    msg::sandbox_spec spec;
    spec.cap_add = {"NET_BIND_SERVICE", cap};
    INFO("cap: " << cap);
    const auto err = error_of(plan(spec, cfg));
    CHECK(err == corral_errc::policy_violation);
    CHECK_THAT(msg::describe(err), Catch::Contains("never granted"));
  }
  // Not a capability at all, or none of Linux's (a typo, a made-up one): refused as invalid,
  // named, before any policy question.
  for (const char* cap : {"", "CAP_", "NET BIND", "X1", "A;B", "CAP_1", "NET_BIND_SERVIC",
                          "CAP_CAP_CHOWN", "NET_BIND_SERVICE_"}) {
    msg::sandbox_spec spec;
    spec.cap_add = {cap};
    INFO("cap: " << cap);
    CHECK(error_of(plan(spec, cfg)) == corral_errc::invalid_request);
    CHECK_THAT(msg::describe(error_of(plan(spec, cfg))), Catch::Contains("not a Linux capability"));
  }
}

// -- plan_sandbox: labels, tmpfs, command ----------------------------------------------------

TEST_CASE("policy: the corral. label namespace is reserved", "[policy]") {
  for (const char* key : {"corral.key", "corral.managed-by", "corral.anything", ""}) {
    msg::sandbox_spec spec;
    spec.labels = {{key, "forged"}};
    INFO("label: " << key);
    const auto err = error_of(plan(spec));
    CHECK(err == corral_errc::policy_violation);
    CHECK_THAT(msg::describe(err), Catch::Contains("'"s + key + "'"));
  }
  msg::sandbox_spec spec;
  spec.labels = {{"corralx", "1"}, {"org.corral.x", "2"}};
  const auto p = plan(spec);
  REQUIRE(p);
  CHECK(p->create.labels.at("corralx") == "1");
  CHECK(p->create.labels.at("org.corral.x") == "2");
}

TEST_CASE("policy: tmpfs mounts are never executable or setuid", "[policy]") {
  for (const char* options :
       {"exec", "suid", "nosuid,exec", "mode=1777,suid", "rw,exec,size=1", "mode=1777 exec"}) {
    msg::sandbox_spec spec;
    spec.tmpfs = {{"/scratch", 0, options}};
    INFO("options: " << options);
    const auto err = error_of(plan(spec));
    CHECK(err == corral_errc::policy_violation);
    CHECK_THAT(msg::describe(err), Catch::Contains("/scratch"));
  }
  {
    // A control character is refused before the options are read at all.
    msg::sandbox_spec spec;
    spec.tmpfs = {{"/scratch", 0, "a\nb"}};
    CHECK_REFUSED(plan(spec), invalid_request, "tmpfs options[0]");
  }
  SECTION("harmless options are appended after corral's own") {
    msg::sandbox_spec spec;
    spec.tmpfs = {{"/scratch", 1 << 20, "mode=1777"}, {"/cache", 0, "noexec"}};
    const auto p = plan(spec);
    REQUIRE(p);
    const auto& t = p->create.host.tmpfs;
    CHECK(t.size() == 2);  // a spec's tmpfs list replaces the default /tmp
    CHECK(t.at("/scratch") == "rw,noexec,nosuid,nodev,size=1048576,uid=1000,gid=1000,mode=1777");
    CHECK(t.at("/cache") == "rw,noexec,nosuid,nodev,size=67108864,uid=1000,gid=1000,noexec");
  }
  SECTION("options that would undo corral's own are refused") {
    for (const char* options : {"size=100g", "dev", "uid=0", "gid=0", "exec", "suid", "mode=abc"}) {
      msg::sandbox_spec spec;
      spec.tmpfs = {{"/scratch", 0, options}};
      INFO("options: " << options);
      CHECK_REFUSED(plan(spec), policy_violation, "/scratch");
    }
  }
  SECTION("path and size are checked") {
    for (const char* path : {"", "tmp", "/", "/a/../b"}) {
      msg::sandbox_spec spec;
      spec.tmpfs = {{path, 0, ""}};
      INFO("path: " << path);
      CHECK(error_of(plan(spec)) == corral_errc::invalid_request);
    }
    msg::sandbox_spec spec;
    spec.tmpfs = {{"/scratch", -1, ""}};
    CHECK_REFUSED(plan(spec), invalid_request, "/scratch");
    spec.tmpfs = {{"/scratch", (4LL << 30) + 1, ""}};
    CHECK_REFUSED(plan(spec), invalid_request, "4 GiB");
  }
}

TEST_CASE("policy: command arguments may not hold NUL bytes", "[policy]") {
  msg::sandbox_spec spec;
  spec.command = {"sh", "-c", "echo a\0b"s};
  CHECK_REFUSED(plan(spec), invalid_request, "NUL");
}

// -- plan_sandbox: spec hash -----------------------------------------------------------------

TEST_CASE("policy: the spec hash is stable and tells specs apart", "[policy]") {
  auto hash = [](const msg::sandbox_spec& spec, const std::string& key = "k1") {
    pol::runtime_config cfg;
    cfg.policy.images = {"*"};
    cfg.policy.writable_root = true;
    const auto p = plan(spec, cfg, key);
    REQUIRE(p);
    return p->spec_hash;
  };
  msg::sandbox_spec base;
  base.image = "alpine:3.19";
  base.env = {{"A", "1"}};
  base.memory_bytes = 1LL << 30;

  CHECK(hash(base) == hash(base));
  CHECK(hash(base) == hash(msg::sandbox_spec{base}));
  // The key and the time are labels of their own, not part of the spec.
  CHECK(hash(base, "k1") == hash(base, "k2"));
  CHECK(pol::plan_sandbox({}, "k", {}, engine_socket, 1)->spec_hash ==
        pol::plan_sandbox({}, "k", {}, engine_socket, 2)->spec_hash);

  std::vector<msg::sandbox_spec> variants(10, base);
  variants[0].image = "alpine:3.20";
  variants[1].env["A"] = "2";
  variants[2].memory_bytes = 2LL << 30;
  variants[3].workspace = {"/nonexistent", "/workspace", msg::access_mode::none};
  variants[4].exec_timeout = 5s;
  variants[5].writable_root = true;
  variants[6].command = {"sleep", "1"};
  variants[7].labels = {{"a", "b"}};
  variants[8].tmpfs = {{"/tmp", 1 << 20, ""}};
  variants[9].idle_limit = 1min;
  std::vector<std::string> hashes{hash(base)};
  for (const auto& v : variants) hashes.push_back(hash(v));
  std::sort(hashes.begin(), hashes.end());
  CHECK(std::adjacent_find(hashes.begin(), hashes.end()) == hashes.end());
}

TEST_CASE("policy: the spec hash tells workspace access modes apart", "[policy]") {
  temp_dir tmp;
  auto ro = with_workspace(tmp.path.string(), msg::access_mode::ro);
  auto rw = with_workspace(tmp.path.string(), msg::access_mode::rw);
  const auto a = plan(ro);
  const auto b = plan(rw);
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a->spec_hash != b->spec_hash);
}
