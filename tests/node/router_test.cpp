// The router over three real nodes sharing one engine: placement spreads keys over all
// three; a node killed under it makes its keys lost (the others keep working, new keys go
// elsewhere); restarted on its port under its name, it adopts its containers and the router
// routes to them again.
#include <algorithm>
#include <map>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <catch2/catch.hpp>

#include "actors/router.hpp"
#include "messages/type_ids.hpp"
#include "tests/node/node_process.hpp"

using namespace corral;
using namespace corral::messages;
using namespace corral::node_tests;

namespace {

// Acquires all `keys` at once (every request in flight before the first answer is read).
std::map<std::string, caf::expected<sandbox_info>> acquire_all(
    caf::scoped_actor& self, const supervisor_actor& router, const std::vector<std::string>& keys) {
  std::vector<decltype(self->request(router, caf::timespan{1s}, acquire_atom_v, std::string(),
                                     sandbox_spec{}))>
      pending;
  for (const auto& key : keys)
    pending.push_back(
        self->request(router, caf::timespan{120s}, acquire_atom_v, key, sandbox_spec{}));
  std::map<std::string, caf::expected<sandbox_info>> out;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    caf::expected<sandbox_info> got{caf::error{}};
    pending[i].receive([&](sandbox_info& info) { got = std::move(info); },
                       [&](caf::error& err) { got = std::move(err); });
    out.emplace(keys[i], std::move(got));
  }
  return out;
}

caf::expected<exec_result> exec_echo(caf::scoped_actor& self, const supervisor_actor& router,
                                     const std::string& key) {
  exec_request req;
  req.argv = {"echo", key};
  return ask<exec_result>(self, router, caf::timespan{30s}, exec_atom_v, key, req);
}

}  // namespace

TEST_CASE("a router spreads keys over three nodes, survives one dying and takes it back",
          "[node][router]") {
  node_fixture f;
  std::vector<std::string> names = {f.name("n1"), f.name("n2"), f.name("n3")};
  std::vector<node_process*> nodes;
  // 60 keys of one principal over three nodes: more than a principal's default share of one.
  temp_file policy(R"({"per_principal": {"sandboxes": 64}})");
  for (const auto& name : names) nodes.push_back(&f.start(name, {"--policy", policy.path}));

  net_config cfg;
  caf::actor_system sys{cfg};
  auto transport = tls_client(sys);
  caf::scoped_actor self{sys};
  actors::router_options options;
  options.principal = "tester";
  for (auto* n : nodes) options.nodes.push_back({"127.0.0.1", n->port()});
  options.request_timeout = std::chrono::seconds(60);
  auto router = actors::spawn_router(sys, options);
  struct stopper {
    supervisor_actor h;
    ~stopper() { caf::anon_send_exit(h, caf::exit_reason::kill); }
  } stop_router{router};

  // -- 60 keys, spread over all three ---------------------------------------------------
  std::vector<std::string> keys;
  for (int i = 0; i < 60; ++i) keys.push_back("key-" + std::to_string(i));
  const auto start = steady::now();
  for (auto& [key, info] : acquire_all(self, router, keys)) {
    INFO(key);
    CHECK(what(info) == "ok");
  }
  INFO("60 acquires took " << since(start).count() << " ms");
  std::vector<std::set<std::string>> held;
  std::size_t total = 0;
  for (const auto& name : names) {
    held.push_back(f.engine.keys(name, "tester"));
    total += held.back().size();
    INFO(name << " holds " << held.back().size());
    CHECK(held.back().size() >= 10);
  }
  CHECK(total == 60);
  REQUIRE_FALSE(held[1].empty());
  REQUIRE_FALSE(held[0].empty());
  REQUIRE_FALSE(held[2].empty());
  const auto on_n2 = *held[1].begin();
  const auto on_n1 = *held[0].begin();
  const auto on_n3 = *held[2].begin();

  // -- n2 dies ----------------------------------------------------------------------------
  // An exec in flight on n2 when it dies is answered as lost, not left to time out.
  exec_request long_exec;
  long_exec.argv = {"sleep", "30"};
  auto in_flight = self->request(router, caf::timespan{20s}, exec_atom_v, on_n2, long_exec);
  // The command runs on n2 before it dies (a lookup's execs_in_flight counts the request as
  // soon as n2's supervisor takes it, before the command starts).
  REQUIRE(eventually(10s, [&] {
    exec_request ps;
    ps.argv = {"ps", "-o", "args"};
    auto r = ask<exec_result>(self, router, caf::timespan{10s}, exec_atom_v, on_n2, ps);
    return r && contains(r->stdout_data, "sleep 30");
  }));
  const uint16_t n2_port = nodes[1]->port();
  nodes[1]->signal(SIGKILL);
  CHECK(nodes[1]->wait(5s) == 128 + SIGKILL);
  const auto killed = steady::now();
  caf::error in_flight_error;
  in_flight.receive([](exec_result&) { FAIL("the exec on the killed node finished"); },
                    [&](caf::error& err) { in_flight_error = std::move(err); });
  INFO("in-flight exec: " << describe(in_flight_error) << " after " << since(killed).count()
                          << " ms");
  CHECK(in_flight_error == corral_errc::sandbox_lost);
  CHECK(since(killed) < 3s);

  CHECK(eventually(2s, [&] {
    auto info = ask<sandbox_info>(self, router, caf::timespan{5s}, lookup_atom_v, on_n2);
    return info && info->status == sandbox_status::lost;
  }));
  {
    auto r = exec_echo(self, router, on_n2);
    REQUIRE_FALSE(r);
    INFO(describe(r.error()));
    CHECK(r.error() == corral_errc::sandbox_lost);
    CHECK(contains(describe(r.error()), "127.0.0.1:" + std::to_string(n2_port)));
  }
  for (const auto& key : {on_n1, on_n3}) {
    auto r = exec_echo(self, router, key);
    REQUIRE(what(r) == "ok");
    CHECK(r->stdout_data == key + "\n");
  }
  std::vector<std::string> fresh;
  for (int i = 0; i < 6; ++i) fresh.push_back("fresh-" + std::to_string(i));
  for (auto& [key, info] : acquire_all(self, router, fresh)) {
    INFO(key);
    CHECK(what(info) == "ok");
  }
  {
    const auto k1 = f.engine.keys(names[0], "tester");
    const auto k3 = f.engine.keys(names[2], "tester");
    for (const auto& key : fresh) {
      INFO(key);
      CHECK((k1.count(key) + k3.count(key)) == 1);
    }
    CHECK(f.engine.keys(names[1], "tester") ==
          held[1]);  // the dead node's containers are untouched
  }

  // -- n2 comes back on its port, under its name ------------------------------------------
  nodes[1] = &f.start(names[1], {"--policy", policy.path}, "127.0.0.1:" + std::to_string(n2_port));
  const auto restarted = steady::now();
  CHECK(eventually(10s, [&] {
    auto info = ask<sandbox_info>(self, router, caf::timespan{5s}, lookup_atom_v, on_n2);
    return info && info->status == sandbox_status::ready;
  }));
  INFO("n2's keys ready again after " << since(restarted).count() << " ms");
  CHECK(since(restarted) < 8s);
  {
    auto r = exec_echo(self, router, on_n2);
    REQUIRE(what(r) == "ok");
    CHECK(r->stdout_data == on_n2 + "\n");
  }
  for (const auto& key : held[1]) {
    auto info = ask<sandbox_info>(self, router, caf::timespan{10s}, lookup_atom_v, key);
    INFO(key << ": " << what(info));
    CHECK((info && info->status == sandbox_status::ready));
  }
  {
    auto listed = ask<std::vector<sandbox_info>>(self, router, caf::timespan{30s}, list_atom_v);
    REQUIRE(what(listed) == "ok");
    CHECK(listed->size() == 66);
  }

  // -- the end: everything released, every node stopped ----------------------------------
  auto released = ask<uint64_t>(self, router, caf::timespan{120s}, release_all_atom_v,
                                release_mode::cancel_execs);
  REQUIRE(what(released) == "ok");
  CHECK(*released == 66);
  for (auto* n : nodes) CHECK(n->stop() == 0);
  for (const auto& name : names) CHECK(f.engine.containers(name).empty());
}
