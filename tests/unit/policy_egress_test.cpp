// What a sandbox may reach and be given: egress host patterns and --allow-host within the
// policy's egress, and the env keys that are stripped (reserved, outside an allowlist) or
// refused. Split from policy_test.cpp by concern.
#include <catch2/catch.hpp>

#include "tests/unit/policy_test_support.hpp"

using namespace corral::unit_tests::policy_testing;

// -- is_reserved_env_key ---------------------------------------------------------------------

TEST_CASE("policy: reserved env keys, in any case", "[policy]") {
  for (const char* key :
       {"HTTP_PROXY", "http_proxy", "Https_Proxy", "HTTPS_PROXY", "NO_PROXY", "no_proxy",
        "ALL_PROXY", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "BASH_ENV", "ENV",
        "PYTHONSTARTUP", "CORRAL_", "CORRAL_anything", "corral_token", "Corral_X"}) {
    INFO("key: " << key);
    CHECK(pol::is_reserved_env_key(key));
  }
  for (const char* key : {"PATH", "HOME", "LANG", "CORRAL", "XCORRAL_X", "HTTP_PROXYX",
                          "MY_HTTP_PROXY", "ENVIRONMENT", "LD_PRELOAD_X", ""}) {
    INFO("key: " << key);
    CHECK_FALSE(pol::is_reserved_env_key(key));
  }
}

// -- egress ----------------------------------------------------------------------------------

TEST_CASE("policy: egress host patterns and what covers what", "[policy][egress]") {
  for (const char* text : {"pypi.org", "*.pythonhosted.org", "a-b.c1.org", "127.0.0.1", "::1"}) {
    std::string ok = text;
    INFO(ok);
    CHECK(pol::check_egress_pattern(ok).empty());
  }
  std::string upper = "PyPI.Org.";
  CHECK(pol::check_egress_pattern(upper).empty());
  CHECK(upper == "pypi.org");
  for (const char* text :
       {"", "*", "*.", "a..b", "-a.org", "a-.org", "a b.org", "a_b.org", "*.*.org", "a.*.org",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.org"}) {
    std::string bad = text;
    INFO(bad);
    CHECK_FALSE(pol::check_egress_pattern(bad).empty());
  }
  CHECK(pol::egress_pattern_covers("pypi.org", "pypi.org"));
  CHECK_FALSE(pol::egress_pattern_covers("pypi.org", "x.pypi.org"));
  CHECK(pol::egress_pattern_covers("*.pythonhosted.org", "files.pythonhosted.org"));
  CHECK(pol::egress_pattern_covers("*.pythonhosted.org", "a.b.pythonhosted.org"));
  CHECK(pol::egress_pattern_covers("*.pythonhosted.org", "*.files.pythonhosted.org"));
  CHECK(pol::egress_pattern_covers("*.pythonhosted.org", "*.pythonhosted.org"));
  CHECK_FALSE(pol::egress_pattern_covers("*.pythonhosted.org", "pythonhosted.org"));
  CHECK_FALSE(pol::egress_pattern_covers("*.pythonhosted.org", "evilpythonhosted.org"));
  CHECK_FALSE(pol::egress_pattern_covers("files.pythonhosted.org", "*.pythonhosted.org"));
}

TEST_CASE("policy: --allow-host narrows the policy's egress, never widens it", "[policy][egress]") {
  pol::runtime_config cfg;
  cfg.agent_path = "/opt/corral/corral-agent";
  cfg.policy.egress.allow = {"pypi.org", "*.pythonhosted.org"};
  cfg.policy.egress.deny = {"*.internal.pythonhosted.org"};
  msg::sandbox_spec spec;
  spec.allow_hosts = {"PyPI.org", "files.pythonhosted.org", "pypi.org"};
  auto p = plan(spec, cfg);
  REQUIRE(p);
  CHECK(p->egress_hosts == std::vector<std::string>{"pypi.org", "files.pythonhosted.org"});
  pol::use_agent(*p, cfg, "0123456789abcdef");
  const auto& env = p->sandbox_env;
  for (const char* kv :
       {"HTTP_PROXY=http://127.0.0.1:3128", "https_proxy=http://127.0.0.1:3128",
        "SSL_CERT_FILE=/corral/run/ca.pem", "NODE_EXTRA_CA_CERTS=/corral/run/ca.pem"})
    CHECK(std::find(env.begin(), env.end(), kv) != env.end());

  SECTION("no egress asked: no proxy in the commands' environment") {
    auto q = plan({}, cfg);
    REQUIRE(q);
    CHECK(q->egress_hosts.empty());
    pol::use_agent(*q, cfg, "0123456789abcdef");
    for (const auto& kv : q->sandbox_env) CHECK(kv.find("PROXY") == std::string::npos);
  }
  SECTION("refusals name what is wrong") {
    msg::sandbox_spec other;
    other.allow_hosts = {"github.com"};
    CHECK_REFUSED(plan(other, cfg), policy_violation, "(policy key egress.allow would allow it)");
    other.allow_hosts = {"pythonhosted.org"};
    CHECK_REFUSED(plan(other, cfg), policy_violation, "'pythonhosted.org' is not allowed");
    other.allow_hosts = {"a.internal.pythonhosted.org"};
    CHECK_REFUSED(plan(other, cfg), policy_violation, "(policy key egress.deny would allow it)");
    other.allow_hosts = {"*"};
    CHECK_REFUSED(plan(other, cfg), invalid_request, "not a host name");
    other.allow_hosts = {"pypi.org"};
    other.network_mode = "bridge";
    cfg.policy.networks = {"none", "bridge"};
    CHECK_REFUSED(plan(other, cfg), invalid_request, "needs network none");
    pol::runtime_config no_agent = cfg;
    no_agent.agent_path.clear();
    other.network_mode.clear();
    CHECK_REFUSED(plan(other, no_agent), invalid_request, "needs the sandbox agent");
    pol::runtime_config no_egress;
    no_egress.agent_path = cfg.agent_path;
    CHECK_REFUSED(plan(other, no_egress), policy_violation, "egress.allow");
  }
}

// -- plan_sandbox: env -----------------------------------------------------------------------

TEST_CASE("policy: env keys that redirect traffic or inject code are stripped", "[policy]") {
  msg::sandbox_spec spec;
  spec.env = {{"HTTP_PROXY", "http://evil"},
              {"ld_preload", "/x.so"},
              {"CORRAL_TOKEN", "t"},
              {"FOO", "bar"},
              {"EMPTY", ""},
              {"WITH_EQ", "a=b"}};
  const auto p = plan(spec);
  REQUIRE(p);
  CHECK(p->create.env == std::vector<std::string>{"EMPTY=", "FOO=bar", "WITH_EQ=a=b"});
  CHECK(has_warning(p->warnings, "HTTP_PROXY"));
  CHECK(has_warning(p->warnings, "ld_preload"));
  CHECK(has_warning(p->warnings, "CORRAL_TOKEN"));
  CHECK(p->warnings.size() == 3);
  // The stripped values are not echoed back.
  CHECK_FALSE(has_warning(p->warnings, "http://evil"));
}

TEST_CASE("policy: malformed env keys and NUL values are refused", "[policy]") {
  for (const std::string& key : {"A=B"s, "1X"s, ""s, "A B"s, "A\nB"s, "-A"s, "\xc3\xa9"s}) {
    msg::sandbox_spec spec;
    spec.env = {{key, "v"}};
    INFO("key: " << key);
    const auto err = error_of(plan(spec));
    CHECK(err == corral_errc::invalid_request);
    CHECK_THAT(msg::describe(err), Catch::Contains("env key"));
  }
  msg::sandbox_spec spec;
  spec.env = {{"A=B", "v"}};
  CHECK_REFUSED(plan(spec), invalid_request, "'A=B'");
  spec.env = {{"GOOD", "a\0b"s}};
  CHECK_REFUSED(plan(spec), invalid_request, "GOOD");
  // A reserved key with a bad value is still an error, not a silent strip.
  spec.env = {{"_ok", "v"}, {"HTTP_PROXY", "a\0b"s}};
  CHECK(error_of(plan(spec)) == corral_errc::invalid_request);
}

TEST_CASE("policy: an env allowlist strips every other key", "[policy]") {
  pol::runtime_config cfg;
  cfg.policy.env_allowlist = {"FOO", "HTTP_PROXY"};
  msg::sandbox_spec spec;
  spec.env = {{"FOO", "1"}, {"BAR", "2"}, {"HTTP_PROXY", "x"}};
  const auto p = plan(spec, cfg);
  REQUIRE(p);
  CHECK(p->create.env == std::vector<std::string>{"FOO=1"});
  CHECK(has_warning(p->warnings, "BAR"));
  CHECK(has_warning(p->warnings, "allowlist"));
  // Reserved keys never pass, allowlisted or not.
  CHECK(has_warning(p->warnings, "HTTP_PROXY"));
}
