// `corral node` and the operator's policy: a bad policy file keeps the node from starting,
// and a node without one allows only the strict built-in default (README "The policy file").
#include <catch2/catch.hpp>

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tests/node/node_process.hpp"
#include "tests/runtime/http_upstream.hpp"

using namespace corral::node_tests;

TEST_CASE("a node with a bad policy file does not start", "[node][policy]") {
  node_fixture f;
  temp_file bad("{\n  \"limits\": {\n    \"memory\": \"2x\"\n  }\n}\n");
  const auto r = run_cli(
      {"node", "--listen", "127.0.0.1:0", "--name", f.name("bad"), "--policy", bad.path}, {}, 20s);
  INFO(r);
  CHECK(r.code == 125);
  CHECK(contains(r.err, bad.path + ":3: limits.memory: \"2x\" is not a size"));
  CHECK_FALSE(contains(r.out, "listening"));

  temp_file unknown("{\"budget\": {\"sandboxez\": 1}}");
  const auto u = run_cli(
      {"node", "--listen", "127.0.0.1:0", "--name", f.name("unknown"), "--policy", unknown.path},
      {}, 20s);
  INFO(u);
  CHECK(u.code == 125);
  CHECK(contains(u.err, "budget.sandboxez: unknown key"));

  const auto missing = run_cli({"node", "--listen", "127.0.0.1:0", "--name", f.name("missing"),
                                "--policy", "/nonexistent/policy.json"},
                               {}, 20s);
  INFO(missing);
  CHECK(missing.code == 125);
  CHECK(contains(missing.err, "/nonexistent/policy.json"));
}

TEST_CASE("a node without a policy file allows only the strict default", "[node][policy]") {
  node_fixture f;
  auto& node = f.start(f.name("n"));
  // The start line is on stderr, which may be read a moment after the port on stdout.
  CHECK(eventually(5s, [&] { return contains(node.log(), "policy: built-in node default"); }));
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--node", node.address(), "run"});
    args.insert(args.end(), {"--", "true"});
    return run_cli(std::move(args));
  };
  const std::pair<std::vector<std::string>, std::string> refused[] = {
      {{"--workspace", "/tmp"}, "workspace_roots"}, {{"--workspace", "/home"}, "workspace_roots"},
      {{"--network", "bridge"}, "networks"},        {{"--writable-root"}, "writable_root"},
      {{"--user", "0"}, "users.allow_root"},        {{"--memory", "4g"}, "limits.memory"},
  };
  for (const auto& [flags, key] : refused) {
    const auto r = cli(flags);
    INFO(r);
    CHECK(r.code == 125);
    CHECK(contains(r.err, "policy_violation"));
    CHECK(contains(r.err, "(policy key " + key + " would allow it)"));
  }
  const auto fine = cli({"--network", "none"});
  INFO(fine);
  CHECK(fine.code == 0);
  // --policy is the node's business: with --node a client may not give one.
  const auto client_policy = run_cli({"--node", node.address(), "--policy", "/x.json", "ls"});
  INFO(client_policy);
  CHECK(client_policy.code == 125);
  CHECK(contains(client_policy.err, "the node's own policy applies"));
  // `run` detaches its release: the node removes the sandbox just after answering.
  CHECK(eventually(10s, [&] { return f.engine.containers(node.name()).empty(); }));
  CHECK(node.stop() == 0);
}

TEST_CASE("a node's policy file loosens what it lists, and its budget caps sandboxes",
          "[node][policy]") {
  node_fixture f;
  temp_file policy(R"({"networks": ["none", "bridge"], "budget": {"sandboxes": 1}})");
  auto& node = f.start(f.name("n"), {"--policy", policy.path});
  CHECK(eventually(5s, [&] { return contains(node.log(), "policy: " + policy.path); }));
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--node", node.address()});
    return run_cli(std::move(args));
  };
  const auto bridge = cli({"run", "--network", "bridge", "--", "true"});
  INFO(bridge);
  CHECK(bridge.code == 0);
  const auto first = cli({"create", "one"});
  INFO(first);
  REQUIRE(first.code == 0);
  const auto second = cli({"create", "two"});
  INFO(second);
  CHECK(second.code == 125);
  CHECK(contains(second.err, "budget.sandboxes"));
  CHECK(cli({"rm", "one"}).code == 0);
  CHECK(node.stop() == 0);
}

TEST_CASE("a node whose policy reaches host files needs an engine that remaps user namespaces",
          "[node][policy][userns]") {
  node_fixture f;
  const bool remapped = f.engine.userns_remapped();
  INFO("the engine remaps user namespaces: " << remapped);
  temp_file writable(R"({"workspace_roots": [{"path": "/srv/corral-test-ws", "writable": true}]})");
  temp_file root(R"({"users": {"allow_root": true}})");
  temp_file accepted(R"({"workspace_roots": [{"path": "/srv/corral-test-ws", "writable": true}],
                         "require_userns_remap": false})");
  for (auto* policy : {&writable, &root}) {
    INFO(policy->path);
    if (remapped) {
      // On a remapped engine (app/setup.sh's) such a node starts, serves and says so.
      auto& node = f.start(f.name("remapped"), {"--policy", policy->path});
      CHECK(eventually(10s, [&] { return contains(node.log(), "user namespaces remapped"); }));
      CHECK_FALSE(contains(node.log(), "does not remap user namespaces"));
      const auto stopped = node.stop();
      INFO(node.log());
      CHECK(stopped == 0);
      continue;
    }
    const auto r = run_cli(
        {"node", "--listen", "127.0.0.1:0", "--name", f.name("refused"), "--policy", policy->path},
        {}, 30s);
    INFO(r);
    CHECK(r.code == 125);
    CHECK(contains(r.err, "does not remap user namespaces"));
    CHECK(contains(r.err, "require_userns_remap"));
    CHECK(contains(r.err, "--userns-remap=default"));
  }
  // The operator's explicit acceptance: the node starts and says what the engine does.
  auto& node = f.start(f.name("accepted"), {"--policy", accepted.path});
  CHECK(eventually(10s, [&] {
    return contains(node.log(),
                    remapped ? "user namespaces remapped" : "user namespaces NOT remapped");
  }));
  const auto stopped = node.stop();
  INFO(node.log());
  CHECK(stopped == 0);
}

TEST_CASE("through a node, uid 0 writing in an rw workspace makes files of no host user",
          "[node][policy][userns][security]") {
  // The issue's attack, on an engine remapped as app/setup.sh starts it and a node whose policy
  // allows root and a writable root: what uid 0 writes belongs on the host to the remapped
  // root, which is no host user (and not root).
  node_fixture f;
  REQUIRE(f.engine.userns_remapped());
  char tmpl[] = "/tmp/corral-node-ws-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  REQUIRE(::chmod(dir.c_str(), 0755) == 0);
  const std::string ws = dir + "/project";
  REQUIRE(::mkdir(ws.c_str(), 0755) == 0);
  temp_file policy(R"({"workspace_roots": [{"path": ")" + dir +
                   R"(", "writable": true}], "users": {"allow_root": true}})");
  auto& node = f.start(f.name("n"), {"--policy", policy.path});
  const auto r = node_cli(node, {"run", "--user", "0", "--workspace", ws + ":rw", "--", "sh", "-c",
                                 "echo x > /workspace/owned && id -u"});
  INFO(r);
  CHECK(r.code == 0);
  CHECK(r.out == "0\n");
  struct stat st {};
  REQUIRE(::stat((ws + "/owned").c_str(), &st) == 0);
  CHECK(st.st_uid != 0);
  CHECK(::getpwuid(st.st_uid) == nullptr);
  CHECK(node.stop() == 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE(
    "through a node, a sandbox made with --allow-host reaches its host with the node's "
    "credential, for its whole life",
    "[node][policy][egress]") {
  node_fixture f;
  corral::runtime_tests::upstream up;
  const std::string secret = "node-egress-secret-" + std::to_string(::getpid());
  temp_file secret_file(secret);
  temp_file policy(
      R"({"egress": {"allow": ["up.test"], "ports": [)" + std::to_string(up.port()) +
      R"(], "allow_private_cidrs": ["127.0.0.0/8"], "resolve": {"up.test": "127.0.0.1"},
      "credentials": [{"host": "up.test", "header": "X-Api-Key", "value_file": ")" +
      secret_file.path + R"("}]}})");
  auto& node = f.start(f.name("n"), {"--policy", policy.path});
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--node", node.address()});
    return run_cli(std::move(args));
  };
  const auto created = cli({"create", "--allow-host", "up.test", "web"});
  INFO(created);
  REQUIRE(created.code == 0);
  const std::string url = "http://up.test:" + std::to_string(up.port()) + "/hello";
  // Two commands, each from its own CLI process: the proxy is the node's, not a client's.
  for (int i = 0; i < 2; ++i) {
    const auto got = cli({"exec", "web", "--", "wget", "-q", "-O", "-", url});
    INFO(got);
    CHECK(got.code == 0);
    CHECK(got.out == "hello from upstream\n");
  }
  const auto heads = up.heads();
  REQUIRE(heads.size() == 2);
  for (const auto& head : heads) CHECK(contains(head, "X-Api-Key: " + secret + "\r\n"));
  const auto env = cli({"exec", "web", "--", "sh", "-c", "env; cat /proc/[0-9]*/environ"});
  CHECK_FALSE(contains(env.out, secret));
  CHECK(cli({"rm", "web"}).code == 0);
  CHECK(node.stop() == 0);
}
