// The operator's policy file: every key read, every default filled in, and every bad file
// refused with the key (and line) named. Also the units it shares with the command line.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include "actors/policy_file.hpp"
#include "actors/units.hpp"

namespace pol = corral::actors;
using namespace std::chrono_literals;

namespace {

// The issue's example: every key, each with a value other than its default where it can.
const char* full_file = R"({
  "images": ["corral/", "ghcr.io/org/tool"],
  "users": {"uids": {"min": 2000, "max": 3000}, "gids": {"min": 4000, "max": 5000}, "allow_root": true},
  "workspace_roots": [{"path": "/srv/corral/workspaces", "writable": true}, {"path": "/data"}],
  "networks": ["none", "bridge"],
  "capabilities": ["cap_chown", "NET_BIND_SERVICE"],
  "env_allowlist": ["LANG"],
  "limits": {"memory": "4g", "cpus": 3.5, "pids": 2048, "timeout": "2h", "lifetime": "48h", "max_output": "32m"},
  "defaults": {"image": "corral/other:1", "memory": "256m", "cpus": 0.5, "pids": 128, "timeout": "10m",
               "max_output": "2m", "lifetime": "12h", "idle": "30m"},
  "writable_root": true,
  "budget": {"sandboxes": 32, "memory": "64g", "execs": 128},
  "per_principal": {"sandboxes": 8, "execs": 16, "queued_execs": 0},
  "run_lifetime": "2h",
  "admins": ["alice", "ops@example.org"],
  "pools": [{"image": "corral/other:1", "memory": "128m", "cpus": 0.25, "pids": 64, "min": 2, "max": 5},
            {"min": 3}],
  "egress": {"allow": ["pypi.org", "*.PythonHosted.org.", "api.github.com", "10.0.0.7"],
             "deny": ["*.internal"], "ports": [443, 8080],
             "allow_private_cidrs": ["127.0.0.0/8", "::1/128"],
             "credentials": [{"host": "api.github.com", "header": "Authorization",
                              "value_file": "/etc/corral/secrets/github", "scheme": "Bearer"}],
             "max_bytes_per_sandbox": "2g", "resolve": {"up.test": "127.0.0.1"},
             "upstream_ca": "/etc/corral/upstream-ca.pem"}
})";

std::string error_of(std::string_view json) {
  auto parsed = pol::parse_policy(json, "p.json");
  return parsed ? std::string("(parsed)") : parsed.error;
}

}  // namespace

TEST_CASE("policy file: every key is read", "[policy][policy-file]") {
  const auto parsed = pol::parse_policy(full_file, "full.json");
  INFO(parsed.error);
  REQUIRE(parsed);
  const auto& p = *parsed.value;
  CHECK(p.images == std::vector<std::string>{"corral/", "ghcr.io/org/tool"});
  CHECK(p.users.uids == pol::id_range{2000, 3000});
  CHECK(p.users.gids == pol::id_range{4000, 5000});
  CHECK(p.users.allow_root);
  REQUIRE(p.workspace_roots.size() == 2);
  CHECK(p.workspace_roots[0] == pol::workspace_root{"/srv/corral/workspaces", true});
  CHECK(p.workspace_roots[1] == pol::workspace_root{"/data", false});  // read-only by default
  CHECK(p.networks == std::vector<std::string>{"none", "bridge"});
  CHECK(p.capabilities == std::vector<std::string>{"CHOWN", "NET_BIND_SERVICE"});  // normalised
  CHECK(p.env_allowlist == std::vector<std::string>{"LANG"});
  CHECK(p.limits.memory == 4LL << 30);
  CHECK(p.limits.nano_cpus == 3'500'000'000);
  CHECK(p.limits.pids == 2048);
  CHECK(p.limits.timeout == 2h);
  CHECK(p.limits.lifetime == 48h);
  CHECK(p.limits.max_output == 32u << 20);
  CHECK(p.defaults.image == "corral/other:1");
  CHECK(p.defaults.memory == 256LL << 20);
  CHECK(p.defaults.nano_cpus == 500'000'000);
  CHECK(p.defaults.pids == 128);
  CHECK(p.defaults.timeout == 10min);
  CHECK(p.defaults.max_output == 2u << 20);
  CHECK(p.defaults.lifetime == 12h);
  CHECK(p.defaults.idle == 30min);
  CHECK(p.writable_root);
  CHECK(p.budget.sandboxes == 32);
  CHECK(p.budget.memory == 64LL << 30);
  CHECK(p.budget.execs == 128);
  CHECK(p.per_principal.sandboxes == 8);
  CHECK(p.per_principal.execs == 16);
  CHECK(p.per_principal.queued_execs == 0);
  CHECK(p.run_lifetime == 2h);
  CHECK(p.admins == std::vector<std::string>{"alice", "ops@example.org"});
  const auto& eg = p.egress;
  // Host entries are lower-cased and lose a trailing dot.
  CHECK(eg.allow ==
        std::vector<std::string>{"pypi.org", "*.pythonhosted.org", "api.github.com", "10.0.0.7"});
  CHECK(eg.deny == std::vector<std::string>{"*.internal"});
  CHECK(eg.ports == std::vector<uint16_t>{443, 8080});
  CHECK(eg.allow_private_cidrs == std::vector<std::string>{"127.0.0.0/8", "::1/128"});
  REQUIRE(eg.credentials.size() == 1);
  CHECK(eg.credentials[0] == pol::egress_credential_entry{"api.github.com", "Authorization",
                                                          "/etc/corral/secrets/github", "Bearer"});
  CHECK(eg.max_bytes_per_sandbox == 2LL << 30);
  CHECK(eg.resolve == std::map<std::string, std::string>{{"up.test", "127.0.0.1"}});
  CHECK(eg.upstream_ca == "/etc/corral/upstream-ca.pem");
  // Left out, a policy allows no egress at all.
  CHECK(pol::policy::node_default().egress.allow.empty());
}

TEST_CASE("policy file: warm pools, and what each leaves out", "[policy][policy-file][pool]") {
  const auto parsed = pol::parse_policy(full_file, "full.json");
  REQUIRE(parsed);
  const auto& pools = parsed.value->pools;
  REQUIRE(pools.size() == 2);
  CHECK(pools[0] == pol::pool_entry{"corral/other:1", 128LL << 20, 250'000'000, 64, 2, 5});
  CHECK(pools[1] == pol::pool_entry{"", 0, 0, 0, 3, 0});  // the defaults' spec, max 2 x min
  CHECK(pol::policy::node_default().pools.empty());
  const auto text = pol::to_json(*parsed.value);
  CHECK_THAT(text, Catch::Contains(R"("pools": [{"image": "corral/other:1", "memory": "128m", )"
                                   R"("cpus": 0.25, "pids": 64, "min": 2, "max": 5}, )"
                                   R"({"image": "corral/other:1", "memory": "256m", "cpus": 0.5, )"
                                   R"("pids": 128, "min": 3, "max": 6}])"));
  const std::pair<const char*, const char*> bad[] = {
      {R"({"pools": {"min": 1}})", "pools: expected an array, got an object"},
      {R"({"pools": [{"min": 0}]})", "pools[0].min: 0 is out of range (1 to 10000)"},
      {R"({"pools": [{"min": 4, "max": 2}]})", "pools[0].max: 2 is below its min (4)"},
      {R"({"pools": [{"image": "docker.io/evil"}]})",
       "pools[0].image: \"docker.io/evil\" is not allowed by images"},
      {R"({"pools": [{"memory": "3g"}]})", "pools[0].memory: 3g is above limits.memory (2g)"},
      {R"({"pools": [{"size": 3}]})", "pools[0].size: unknown key"},
      {R"({"budget": {"sandboxes": 4}, "per_principal": {"sandboxes": 4}, "pools": [{"min": 3}, {"min": 2}]})",
       "pools: the pools' minimums (5 sandboxes) are above budget.sandboxes (4)"},
  };
  for (const auto& [json, expected] : bad) {
    INFO(json);
    CHECK_THAT(error_of(json), Catch::Contains(expected));
  }
}

TEST_CASE("policy file: keys left out take the strict node default", "[policy][policy-file]") {
  const auto empty = pol::parse_policy("{}", "empty.json");
  REQUIRE(empty);
  CHECK(*empty.value == pol::policy::node_default());
  const auto some = pol::parse_policy(R"({"limits": {"memory": "1g"}})", "some.json");
  REQUIRE(some);
  auto expected = pol::policy::node_default();
  expected.limits.memory = 1LL << 30;
  CHECK(*some.value == expected);
}

TEST_CASE("policy file: per_principal left out is at most the budget", "[policy][policy-file]") {
  const auto small = pol::parse_policy(R"({"budget": {"sandboxes": 4, "execs": 8}})", "p.json");
  INFO(small.error);
  REQUIRE(small);
  CHECK(small.value->per_principal.sandboxes == 4);
  CHECK(small.value->per_principal.execs == 8);
  CHECK(small.value->per_principal.queued_execs == 64);
}

TEST_CASE("policy file: the two built-in defaults", "[policy][policy-file]") {
  const auto node = pol::policy::node_default();
  CHECK(node.workspace_roots.empty());
  CHECK_FALSE(node.users.allow_root);
  CHECK(node.capabilities.empty());
  CHECK_FALSE(node.writable_root);
  CHECK(node.networks == std::vector<std::string>{"none"});
  CHECK(node.images == std::vector<std::string>{"corral/"});
  CHECK(node.limits.pids == 1024);
  CHECK(node.budget.sandboxes == 64);
  CHECK(node.run_lifetime == 1h);

  const auto embedded = pol::policy::embedded_default();
  REQUIRE(embedded.workspace_roots.size() == 1);
  CHECK(embedded.workspace_roots[0] == pol::workspace_root{"/", true});
  auto rest = embedded;
  rest.workspace_roots.clear();
  CHECK(rest == node);  // the one difference
}

TEST_CASE("policy file: to_json prints every value, and reads back the same",
          "[policy][policy-file]") {
  for (const auto& p : {pol::policy::node_default(), pol::policy::embedded_default(),
                        *pol::parse_policy(full_file, "full.json").value}) {
    const auto text = pol::to_json(p);
    INFO(text);
    const auto again = pol::parse_policy(text, "printed.json");
    INFO(again.error);
    REQUIRE(again);
    CHECK(pol::to_json(*again.value) == text);
  }
  const auto text = pol::to_json(pol::policy::node_default());
  for (const char* part :
       {R"("images": ["corral/"])", R"("workspace_roots": [])", R"("networks": ["none"])",
        R"("memory": "2g", "cpus": 2, "pids": 1024, "timeout": "1h", "lifetime": "24h")",
        R"("max_output": "16m")", R"("memory": "512m", "cpus": 1, "pids": 256, "timeout": "1m")",
        R"("lifetime": "24h", "idle": "0s")", R"("writable_root": false)",
        R"("budget": {"sandboxes": 64, "memory": "32g", "execs": 256})",
        R"("per_principal": {"sandboxes": 16, "execs": 32, "queued_execs": 64})",
        R"("run_lifetime": "1h")", R"("admins": [])", R"("allow_root": false)"}) {
    CHECK_THAT(text, Catch::Contains(part));
  }
}

TEST_CASE("policy file: unknown and duplicate keys are errors, with their line",
          "[policy][policy-file]") {
  CHECK(error_of("{\n  \"images\": [\"corral/\"],\n  \"imagez\": []\n}") ==
        "p.json:3: imagez: unknown key (known here: images, users, workspace_roots, networks, "
        "capabilities, env_allowlist, limits, defaults, writable_root, budget, per_principal, "
        "run_lifetime, admins, require_userns_remap, pools, egress)");
  CHECK_THAT(error_of("{\"limits\": {\n\"memory\": \"1g\",\n\"swap\": \"1g\"}}"),
             Catch::StartsWith("p.json:3: limits.swap: unknown key"));
  CHECK_THAT(error_of("{\"workspace_roots\": [{\"path\": \"/a\",\n \"mode\": \"rw\"}]}"),
             Catch::StartsWith("p.json:2: workspace_roots[0].mode: unknown key"));
  // The second occurrence is the one named.
  CHECK(error_of("{\n\"run_lifetime\": \"1h\",\n\n\"run_lifetime\": \"2h\"\n}") ==
        "p.json:4: run_lifetime: duplicate key (each key may appear once)");
  CHECK(error_of("{\"users\": {\"uids\": {\"min\": 1000,\n \"min\": 1}}}") ==
        "p.json:2: users.uids.min: duplicate key (each key may appear once)");
  CHECK_THAT(error_of(R"({"networks": ["none", "none"]})"),
             Catch::Contains("networks[1]: \"none\" is listed twice"));
}

TEST_CASE("policy file: bad values name the key path and the line", "[policy][policy-file]") {
  CHECK(error_of("{\n  \"limits\": {\n    \"memory\": \"2x\"\n  }\n}") ==
        "p.json:3: limits.memory: \"2x\" is not a size (like 512k, 256m, 2g)");
  CHECK(error_of("{\"defaults\": {\n\"timeout\": \"soon\"}}") ==
        "p.json:2: defaults.timeout: \"soon\" is not a duration (like 500ms, 30s, 10m, 1h)");
  const std::pair<const char*, const char*> cases[] = {
      {R"({"images": "corral/"})", "images: expected an array of strings, got a string"},
      {R"({"images": []})", "images: allows no image at all"},
      {R"({"images": ["corral/ x"]})", "images[0]: \"corral/ x\" is not an image"},
      {R"({"users": {"uids": {"min": 0}}})", "users.uids.min: 0 is root"},
      {R"({"users": {"gids": {"min": 5000, "max": 10}}})", "users.gids: min 5000 is above max 10"},
      {R"({"users": {"allow_root": "yes"}})", "users.allow_root: expected true or false"},
      {R"({"users": {"uids": {"max": -1}}})", "users.uids.max: expected a whole number"},
      {R"({"workspace_roots": [{"writable": true}]})", "workspace_roots[0]: needs a \"path\""},
      {R"({"workspace_roots": [{"path": "srv"}]})",
       "workspace_roots[0].path: \"srv\" is not an absolute path"},
      {R"({"workspace_roots": [{"path": "/srv/../etc"}]})", "is not normalised"},
      {R"({"workspace_roots": [{"path": "/srv/"}]})", "is not normalised"},
      {R"({"workspace_roots": {"path": "/srv"}})", "workspace_roots: expected an array"},
      {R"({"networks": ["host"]})", "networks[0]: \"host\" is never allowed"},
      {R"({"networks": ["container:db"]})", "networks[0]: \"container:db\" is never allowed"},
      {R"({"networks": ["a b"]})", "networks[0]: \"a b\" is not a network name"},
      {R"({"capabilities": ["SYS_ADMIN"]})", "capabilities[0]: SYS_ADMIN is never granted"},
      {R"({"capabilities": ["all"]})", "capabilities[0]: ALL is never granted"},
      {R"({"capabilities": ["NET BIND"]})", "capabilities[0]: \"NET BIND\" is not a Linux cap"},
      {R"({"capabilities": ["CAP_1"]})", "capabilities[0]: \"CAP_1\" is not a Linux capability"},
      {R"({"capabilities": ["chown", "NET_BIND_SERVIC"]})",
       "capabilities[1]: \"NET_BIND_SERVIC\" is not a Linux capability"},
      {R"({"env_allowlist": ["1X"]})", "env_allowlist[0]: \"1X\" is not an env key"},
      {R"({"limits": {"memory": "1m"}})", "limits.memory: \"1m\" is below the minimum of 6m"},
      {R"({"limits": {"memory": 2048}})", "limits.memory: expected a string, got a number"},
      {R"({"limits": {"cpus": "2"}})", "limits.cpus: expected a number of CPUs"},
      {R"({"limits": {"cpus": 0}})", "limits.cpus: must be a number of CPUs from 0.01"},
      {R"({"limits": {"pids": 4}})", "limits.pids: 4 is out of range (8 to 65536)"},
      {R"({"limits": {"pids": 100000}})", "limits.pids: 100000 is out of range"},
      {R"({"limits": {"timeout": "0s"}})", "limits.timeout: must be longer than 0s"},
      {R"({"limits": {"max_output": "0"}})", "limits.max_output: \"0\" is below the minimum"},
      {R"({"defaults": {"memory": "4g"}})", "defaults.memory: 4g is above limits.memory (2g)"},
      {R"({"defaults": {"cpus": 4}})", "defaults.cpus: 4 is above limits.cpus (2)"},
      {R"({"defaults": {"pids": 2000}})", "defaults.pids: 2000 is above limits.pids (1024)"},
      {R"({"defaults": {"timeout": "2h"}})", "defaults.timeout: 2h is above limits.timeout (1h)"},
      {R"({"defaults": {"max_output": "32m"}})", "defaults.max_output: 32m is above limits"},
      {R"({"defaults": {"lifetime": "25h"}})", "defaults.lifetime: 25h is above limits.lifetime"},
      {R"({"defaults": {"image": "alpine:3"}})", "defaults.image: \"alpine:3\" is not allowed"},
      {R"({"defaults": {"image": "corral/A B"}})", "defaults.image: \"corral/A B\" is not an"},
      {R"({"writable_root": 1})", "writable_root: expected true or false, got a number"},
      {R"({"budget": {"sandboxes": 0}})", "budget.sandboxes: 0 is out of range"},
      {R"({"budget": {"memory": "256m"}})", "budget.memory: 256m is below defaults.memory"},
      {R"({"per_principal": {"sandboxes": 65}})", "per_principal.sandboxes: 65 is above budget"},
      {R"({"per_principal": {"execs": 0}})", "per_principal.execs: 0 is out of range"},
      {R"({"run_lifetime": "25h"})", "run_lifetime: 25h is above limits.lifetime (24h)"},
      {R"({"run_lifetime": 60})", "run_lifetime: expected a string"},
      {R"({"admins": ["a b"]})", "admins[0]: \"a b\" is not a principal"},
      {R"({"admins": [""]})", "admins[0]: \"\" is not a principal"},
      {R"({"admins": ["a/b"]})", "admins[0]: \"a/b\" is not a principal"},
      {R"({"admins": ["x", "x"]})", "admins[1]: \"x\" is listed twice"},
      {R"([])", "p.json:1: expected an object, got an array"},
      {R"({"users": null})", "users: expected an object, got null"},
      {R"({"egress": {"allow": ["*"]}})", "egress.allow[0]: \"*\" is not a host name"},
      {R"({"egress": {"allow": ["a..b"]}})", "egress.allow[0]: \"a..b\" is not a host name"},
      {R"({"egress": {"allow": ["-a.org"]}})", "is not a host name"},
      {R"({"egress": {"deny": ["a b"]}})", "egress.deny[0]: \"a b\" is not a host name"},
      {R"({"egress": {"ports": [0]}})", "egress.ports[0]: 0 is out of range (1 to 65535)"},
      {R"({"egress": {"ports": []}})", "egress.ports: allows no port at all"},
      {R"({"egress": {"allow_private_cidrs": ["127.0.0.1"]}})", "is not a CIDR"},
      {R"({"egress": {"allow_private_cidrs": ["127.0.0.0/33"]}})", "is not a CIDR"},
      {R"({"egress": {"credentials": [{"host": "a.org", "header": "X"}]}})",
       "egress.credentials[0]: needs \"host\", \"header\" and \"value_file\""},
      {R"({"egress": {"credentials": [{"host": "*.a.org", "header": "X", "value_file": "/s"}]}})",
       "egress.credentials[0].host: a credential names one host, not a wildcard"},
      {R"({"egress": {"credentials": [{"host": "a.org", "header": "X:", "value_file": "/s"}]}})",
       "egress.credentials[0].header: \"X:\" is not a header name"},
      {R"({"egress": {"credentials": [{"host": "a.org", "header": "X", "value_file": "s"}]}})",
       "egress.credentials[0].value_file: \"s\" is not an absolute path"},
      {R"({"egress": {"resolve": {"up.test": "localhost"}}})",
       "egress.resolve.up.test: \"localhost\" is not an IP address"},
      {R"({"egress": {"max_bytes_per_sandbox": "0"}})", "egress.max_bytes_per_sandbox"},
      {R"({"egress": {"proxy": true}})", "egress.proxy: unknown key"},
  };
  for (const auto& [json, expected] : cases) {
    INFO(json);
    CHECK_THAT(error_of(json), Catch::Contains(expected));
    CHECK_THAT(error_of(json), Catch::StartsWith("p.json:1: "));
  }
}

TEST_CASE("policy file: malformed JSON says where", "[policy][policy-file]") {
  CHECK_THAT(error_of("{\n\"images\": [\"corral/\"],\n\"limits\": {\"memory\": \"1g\",}\n}"),
             Catch::StartsWith("p.json:3: not valid JSON: "));
  CHECK_THAT(error_of(""), Catch::StartsWith("p.json"));
  CHECK_THAT(error_of("{\"images\": [\"corral/\"]"), Catch::Contains("not valid JSON"));
}

TEST_CASE("policy file: the pids ceiling stays far below the host's pid_max",
          "[policy][policy-file]") {
  auto p = pol::policy::node_default();
  CHECK(pol::check_policy_for_host(p, 32768).empty());  // 1024 <= 4096
  p.limits.pids = 8192;
  CHECK_THAT(pol::check_policy_for_host(p, 32768),
             Catch::Contains("limits.pids: 8192 is too close to this host's kernel.pid_max"));
  CHECK(pol::check_policy_for_host(p, 4194304).empty());
}

TEST_CASE("policy file: load_policy_file reads a file, and refuses one it cannot read",
          "[policy][policy-file]") {
  const std::string path = "/tmp/corral-policy-file-test-" + std::to_string(::getpid()) + ".json";
  std::ofstream(path) << full_file;
  auto loaded = pol::load_policy_file(path);
  INFO(loaded.error);
  CHECK(loaded);
  std::ofstream(path) << "{\"limits\": {\"pids\": 65536}}";
  loaded = pol::load_policy_file(path);
  CHECK_FALSE(loaded);
  std::ofstream(path) << std::string(2 << 20, ' ');
  loaded = pol::load_policy_file(path);
  CHECK_THAT(loaded.error, Catch::Contains("larger than 1 MiB"));
  std::remove(path.c_str());
  CHECK_THAT(pol::load_policy_file(path).error, Catch::Contains("cannot read"));
}

TEST_CASE("units: values are written back in the form they are read", "[policy][cli]") {
  CHECK(pol::format_size(512LL << 20) == "512m");
  CHECK(pol::format_size(2LL << 30) == "2g");
  CHECK(pol::format_size(1536LL << 20) == "1536m");
  CHECK(pol::format_size(100) == "100");
  CHECK(pol::format_size(0) == "0");
  CHECK(pol::format_duration(1h) == "1h");
  CHECK(pol::format_duration(90s) == "90s");
  CHECK(pol::format_duration(1500ms) == "1500ms");
  CHECK(pol::format_duration(0ms) == "0s");
  CHECK(pol::format_cpus(2'000'000'000) == "2");
  CHECK(pol::format_cpus(500'000'000) == "0.5");
  CHECK(pol::format_cpus(1'250'000'000) == "1.25");
  for (int64_t bytes : {1LL, 1024LL, 512LL << 20, 3LL << 30}) {
    CHECK(pol::parse_size(pol::format_size(bytes)) == bytes);
  }
}
