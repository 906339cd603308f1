// Owned sandboxes: keys are per principal. Another principal's sandbox is not_found for
// lookup, exec and release, absent from ls, untouched by rm --all and prune; a key squatted
// with another spec is a conflict naming the fields; admins see and manage everyone's. All
// through the real CLI and a real node; every attempt lands in the audit log.
#include <unistd.h>

#include <sstream>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <catch2/catch.hpp>

#include "tests/node/node_process.hpp"

using namespace corral;
using namespace corral::messages;
using namespace corral::node_tests;

TEST_CASE("keys are per principal: foreign sandboxes are invisible and untouchable",
          "[node][principals]") {
  node_fixture f;
  char audit_path[] = "/tmp/corral-audit-XXXXXX";
  const int fd = ::mkstemp(audit_path);
  REQUIRE(fd >= 0);
  ::close(fd);
  temp_file policy(R"({"admins": ["ops"]})");
  auto& node = f.start(f.name("n"), {"--policy", policy.path, "--audit-log", audit_path});
  auto as = [&](const std::string& principal, std::vector<std::string> args) {
    args.insert(args.begin(), {"--node", node.address(), "--principal", principal});
    return run_cli(std::move(args));
  };

  const auto made = as("alice", {"create", "session-42", "--env", "NOTE=alice"});
  INFO(made);
  REQUIRE(made.code == 0);
  REQUIRE(as("alice", {"exec", "session-42", "--", "sh", "-c", "echo mine > /tmp/state"}).code ==
          0);

  // bob cannot reach alice's sandbox by its key: not_found, as for a key nobody holds.
  const auto foreign_exec = as("bob", {"exec", "session-42", "--", "cat", "/proc/1/environ"});
  INFO(foreign_exec);
  CHECK(foreign_exec.code == 125);
  CHECK(contains(foreign_exec.err, "not_found"));
  CHECK_FALSE(contains(foreign_exec.out, "NOTE"));
  const auto foreign_rm = as("bob", {"rm", "session-42"});
  INFO(foreign_rm);
  CHECK(foreign_rm.code == 125);
  CHECK(contains(foreign_rm.err, "not_found"));
  // Nor by naming alice: PRINCIPAL/KEY is for admins.
  const auto named = as("bob", {"exec", "alice/session-42", "--", "true"});
  INFO(named);
  CHECK(named.code == 125);
  CHECK(contains(named.err, "invalid_request"));
  CHECK(contains(named.err, "admins"));
  // Nothing of it in bob's ls; rm --all and prune take only bob's own.
  const auto bob_ls = as("bob", {"ls"});
  INFO(bob_ls);
  CHECK(bob_ls.code == 0);
  CHECK_FALSE(contains(bob_ls.out, "session-42"));
  const auto bob_rm_all = as("bob", {"rm", "--all"});
  INFO(bob_rm_all);
  CHECK(bob_rm_all.code == 0);
  CHECK(contains(bob_rm_all.out, "released 0 sandboxes"));
  CHECK(as("bob", {"prune", "--idle", "1ms"}).code == 0);

  // bob's own "session-42" is another sandbox; alice's state is where she left it.
  REQUIRE(as("bob", {"create", "session-42"}).code == 0);
  CHECK(f.engine.keys(node.name()) == std::set<std::string>{"alice/session-42", "bob/session-42"});
  const auto state = as("alice", {"exec", "session-42", "--", "cat", "/tmp/state"});
  INFO(state);
  CHECK(state.out == "mine\n");

  // The same principal asking its key with another spec: a conflict naming what differs.
  const auto squat = as("alice", {"create", "session-42", "--memory", "256m"});
  INFO(squat);
  CHECK(squat.code == 125);
  CHECK(contains(squat.err, "conflict"));
  CHECK(contains(squat.err, "env.NOTE, memory"));

  // An admin sees everyone's, can name one, and rm --all takes them all.
  const auto ops_ls = as("ops", {"ls"});
  INFO(ops_ls);
  CHECK(contains(ops_ls.out, "alice/session-42"));
  CHECK(contains(ops_ls.out, "bob/session-42"));
  const auto ops_exec = as("ops", {"exec", "bob/session-42", "--", "echo", "admin"});
  INFO(ops_exec);
  CHECK(ops_exec.out == "admin\n");
  const auto ops_rm = as("ops", {"rm", "--all"});
  INFO(ops_rm);
  CHECK(contains(ops_rm.out, "released 2 sandboxes"));
  CHECK(f.engine.keys(node.name()).empty());
  REQUIRE(node.stop() == 0);

  // Every attempt is in the audit log, under the principal that made it.
  const auto audit = lines_of(audit_path);
  std::ostringstream all;
  for (const auto& l : audit) all << l << "\n";
  INFO("audit log:\n" << all.str());
  CHECK(count_with(audit, {R"("principal":"bob")", R"("op":"exec")", R"("key":"session-42")",
                           R"("decision":"denied")", "not_found"}) == 1);
  CHECK(count_with(audit, {R"("principal":"bob")", R"("op":"exec")", R"("key":"alice/session-42")",
                           R"("decision":"denied")"}) == 1);
  CHECK(count_with(audit, {R"("principal":"alice")", R"("op":"acquire")", "conflict"}) == 1);
  CHECK(count_with(audit, {R"("principal":"ops")", R"("op":"release_all")",
                           R"("result":"2 released")"}) == 1);
  std::remove(audit_path);
}

TEST_CASE("a principal's share of sandboxes and commands is bounded", "[node][principals]") {
  node_fixture f;
  temp_file policy(R"({"per_principal": {"sandboxes": 2, "execs": 1, "queued_execs": 1}})");
  auto& node = f.start(f.name("n"), {"--policy", policy.path});
  auto as = [&](const std::string& principal, std::vector<std::string> args) {
    args.insert(args.begin(), {"--node", node.address(), "--principal", principal});
    return run_cli(std::move(args));
  };
  REQUIRE(as("alice", {"create", "a1"}).code == 0);
  REQUIRE(as("alice", {"create", "a2"}).code == 0);
  const auto third = as("alice", {"create", "a3"});
  INFO(third);
  CHECK(third.code == 125);
  CHECK(contains(third.err, "capacity"));
  CHECK(contains(third.err, "per_principal.sandboxes"));
  // Another principal's share is its own.
  CHECK(as("bob", {"create", "b1"}).code == 0);
  // Released, the share is free again.
  REQUIRE(as("alice", {"rm", "a2"}).code == 0);
  CHECK(as("alice", {"create", "a3"}).code == 0);
  CHECK(f.engine.keys(node.name()) == std::set<std::string>{"alice/a1", "alice/a3", "bob/b1"});
  REQUIRE(node.stop() == 0);
  CHECK(f.engine.keys(node.name()).empty());
}

TEST_CASE("a raw peer cannot act without saying who it is, nor change who it is",
          "[node][principals]") {
  node_fixture f;
  auto& node = f.start(f.name("n"));
  net_config cfg;
  caf::actor_system sys{cfg};
  auto transport = tls_client(sys);
  caf::scoped_actor self{sys};
  // Connected as corral's own client would, but without its hello.
  auto mm = caf::actor_cast<caf::io::middleman_actor>(sys.registry().get(caf::atom("corral-tls")));
  REQUIRE(mm);
  caf::actor face;
  self->request(mm, caf::timespan{10s}, caf::connect_atom_v, std::string("127.0.0.1"), node.port())
      .receive([&](const caf::node_id&, caf::strong_actor_ptr& ptr,
                   const std::set<std::string>&) { face = caf::actor_cast<caf::actor>(ptr); },
               [&](caf::error& err) { FAIL("connect: " << sys.render(err)); });
  REQUIRE(face);
  auto hello = [&](const std::string& principal) {
    caf::error failure;
    self->request(face, caf::timespan{10s}, hello_atom_v, protocol_version, principal)
        .receive([](int32_t, std::string&) {}, [&](caf::error& err) { failure = err; });
    return failure;
  };

  // Every request before a hello is refused, and makes nothing.
  auto early = ask<sandbox_info>(self, face, caf::timespan{30s}, acquire_atom_v,
                                 std::string("sneaky"), sandbox_spec{});
  INFO(what(early));
  REQUIRE_FALSE(early);
  CHECK(early.error() == corral_errc::invalid_request);
  CHECK(contains(describe(early.error()), "has not said who it is"));
  auto early_ls = ask<std::vector<sandbox_info>>(self, face, caf::timespan{30s}, list_atom_v);
  REQUIRE_FALSE(early_ls);
  CHECK(early_ls.error() == corral_errc::invalid_request);

  // A principal that is not a name (a path, a prefix of another's keys) is refused.
  for (const char* bad : {"../root", "alice/x", "", "a b"}) {
    INFO("principal '" << bad << "'");
    const auto refused = hello(bad);
    CHECK(refused == corral_errc::invalid_request);
  }
  // Once alice, this client stays alice: a second hello as bob is refused.
  REQUIRE_FALSE(hello("alice"));
  const auto switched = hello("bob");
  CHECK(switched == corral_errc::invalid_request);
  CHECK(contains(describe(switched), "already said it is principal alice"));
  auto made = ask<sandbox_info>(self, face, caf::timespan{60s}, acquire_atom_v, std::string("mine"),
                                sandbox_spec{});
  REQUIRE(what(made) == "ok");
  CHECK(made->key == "mine");  // the caller's own name for it
  CHECK(f.engine.keys(node.name()) == std::set<std::string>{"alice/mine"});
  CHECK(f.engine.keys(node.name()).count("sneaky") == 0);
  REQUIRE(node.stop() == 0);
  CHECK(f.engine.keys(node.name()).empty());
}
