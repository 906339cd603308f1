// Shutdown and restart: a runtime that keeps its sandboxes hands them to its next start; one
// that does not leaves nothing behind.
#include <set>

#include "runtime_fixture.hpp"

using namespace corral::runtime_tests;

TEST_CASE_METHOD(runtime_fixture, "a restarted runtime adopts the sandboxes it kept",
                 "[runtime][restart]") {
  rt.keep_sandboxes_on_shutdown = true;
  std::map<std::string, std::string> ids;
  for (const std::string key : {"one", "two", "three"}) {
    auto info = acquire(key);
    REQUIRE_OK(info);
    ids[key] = info->container_id;
  }
  REQUIRE_OK(exec("one", sh("echo kept > /tmp/mark")));
  REQUIRE(stop_supervisor());
  auto left = containers();
  REQUIRE(left.size() == 3);
  for (const auto& c : left) CHECK(c.state == "running");

  // The next start, same runtime name.
  rt.keep_sandboxes_on_shutdown = false;
  auto listed = list();
  REQUIRE_OK(listed);
  REQUIRE(listed->size() == 3);
  for (const auto& info : *listed) {
    INFO("key " << info.key);
    REQUIRE(ids.count(info.key) == 1);
    CHECK(info.container_id == ids[info.key]);
    CHECK(info.status == sandbox_status::ready);
    CHECK(info.image == test_image);
  }
  auto st = stats();
  REQUIRE_OK(st);
  CHECK(st->adopted_total == 3);
  CHECK(st->created_total == 0);

  // The same containers, state and all.
  auto r = exec("one", {"cat", "/tmp/mark"});
  REQUIRE_OK(r);
  CHECK(r->stdout_data == "kept\n");
  auto uid = exec("two", {"id", "-u"});
  REQUIRE_OK(uid);
  CHECK(uid->stdout_data == "1000\n");
  // An acquire of an adopted key finds it rather than making another.
  auto again = acquire("three");
  REQUIRE_OK(again);
  CHECK(again->container_id == ids["three"]);

  auto released = release_all();
  REQUIRE_OK(released);
  CHECK(*released == 3);
  CHECK(containers().empty());
  auto after = list();
  REQUIRE_OK(after);
  CHECK(after->empty());
}

TEST_CASE_METHOD(runtime_fixture, "a shutdown without keep leaves no container",
                 "[runtime][restart]") {
  // Running commands get this long at shutdown, then they are cancelled.
  rt.shutdown_grace = 1s;
  for (const std::string key : {"x", "y", "z"}) REQUIRE_OK(acquire(key));
  REQUIRE(containers().size() == 3);
  // One with a command still running: the shutdown does not wait for it beyond the grace.
  auto pending = self->request(sup(), caf::timespan{60s}, exec_atom_v, std::string("x"),
                               make_exec({"sleep", "30"}));
  REQUIRE(eventually(10s, [&] {
    auto s = stats();
    return s && s->execs_in_flight == 1;
  }));
  const auto t0 = steady::now();
  REQUIRE(stop_supervisor());
  CHECK(steady::now() - t0 < 10s);
  CHECK(containers().empty());
  // Cancelled at the end of the grace period: a result that says so, never an error.
  pending.receive(
      [](exec_result& r) {
        CHECK(r.end == exec_end::killed);
        CHECK(r.exit_code == 137);
      },
      [](caf::error& err) { FAIL_CHECK("the cancelled exec got an error: " << describe(err)); });
}
