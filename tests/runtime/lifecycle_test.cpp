// A sandbox's life: its lifetime limit, idle pruning, the runtime's capacity, and
// containers killed or removed behind corral's back.
#include "runtime_fixture.hpp"

using namespace corral::runtime_tests;

namespace {

bool gone_from_engine(runtime_fixture& f, const std::string& id) {
  auto ins = f.inspect(id);
  return !ins && ins.err().code == corral::docker::errc::not_found;
}

}  // namespace

TEST_CASE_METHOD(runtime_fixture, "a sandbox ends at its lifetime limit", "[runtime][lifecycle]") {
  sandbox_spec spec;
  spec.lifetime = caf::timespan{2s};
  const auto t0 = steady::now();
  auto info = acquire("short", spec);
  REQUIRE_OK(info);
  const auto id = info->container_id;

  caf::expected<sandbox_info> seen{caf::error{}};
  CHECK(eventually(4s, [&] {
    seen = lookup("short");
    return seen && seen->status == sandbox_status::timed_out;
  }));
  REQUIRE_OK(seen);
  CHECK(seen->status == sandbox_status::timed_out);
  CHECK(contains(seen->detail, "lifetime"));
  CHECK(steady::now() - t0 >= 2s);
  CHECK(eventually(2s, [&] { return gone_from_engine(*this, id); }));
  CHECK(containers().empty());

  // The key is free again, and execs on the old sandbox say what happened to it.
  auto ex = exec("short", {"true"});
  REQUIRE_FALSE(ex);
  CHECK(ex.error() == corral_errc::sandbox_lost);
  CHECK(contains(describe(ex.error()), "timed_out"));
  auto again = acquire("short");
  REQUIRE_OK(again);
  CHECK(again->container_id != id);
  CHECK_OK(release("short"));
}

TEST_CASE_METHOD(runtime_fixture, "idle sandboxes are pruned, busy ones are not",
                 "[runtime][lifecycle]") {
  rt.prune_interval = 500ms;
  sandbox_spec spec;
  spec.idle_limit = caf::timespan{1s};
  auto idle = acquire("idle", spec);
  auto busy = acquire("busy", spec);
  REQUIRE_OK(idle);
  REQUIRE_OK(busy);
  const auto t0 = steady::now();

  // A 6 s command on "busy": sent now, answered later.
  auto pending = self->request(sup(), caf::timespan{60s}, exec_atom_v, std::string("busy"),
                               make_exec({"sleep", "6"}));

  // "idle" goes (idle limit 1 s, pruned every 0.5 s); "busy" stays while its command runs. The
  // command outlasts the watch by a margin, so a loaded machine cannot end it early.
  bool idle_gone = false;
  bool busy_stayed = true;
  while (steady::now() - t0 < 5s) {
    auto i = lookup("idle");
    if (!i && i.error() == corral_errc::not_found) idle_gone = true;
    auto b = lookup("busy");
    if (!b || b->status != sandbox_status::ready) busy_stayed = false;
    std::this_thread::sleep_for(100ms);
  }
  CHECK(idle_gone);
  CHECK(busy_stayed);
  CHECK(gone_from_engine(*this, idle->container_id));

  exec_result result;
  bool answered = false;
  pending.receive([&](exec_result& r) { result = std::move(r), answered = true; },
                  [&](caf::error& err) { FAIL_CHECK("exec failed: " << describe(err)); });
  REQUIRE(answered);
  CHECK(result.exit_code == 0);
  CHECK(result.end == exec_end::exited);
  auto b = lookup("busy");
  REQUIRE_OK(b);
  CHECK(b->status == sandbox_status::ready);

  // Idle again after its command: pruned in turn.
  CHECK(eventually(3s, [&] {
    auto x = lookup("busy");
    return !x && x.error() == corral_errc::not_found;
  }));
  auto s = stats();
  REQUIRE_OK(s);
  CHECK(s->pruned_total == 2);
  CHECK(containers().empty());
}

TEST_CASE_METHOD(runtime_fixture, "prune on request releases what is idle longer than asked",
                 "[runtime][lifecycle]") {
  rt.prune_interval = 1h;  // no automatic pruning here
  REQUIRE_OK(acquire("old"));
  std::this_thread::sleep_for(600ms);  // an age, not a condition: "old" idles 600 ms longer
  REQUIRE_OK(acquire("new"));

  auto none = prune(caf::timespan{1h});
  REQUIRE_OK(none);
  CHECK(none->empty());

  auto pruned = prune(caf::timespan{500ms});
  REQUIRE_OK(pruned);
  CHECK(*pruned == std::vector<std::string>{"old"});
  CHECK(eventually(3s, [&] {
    auto x = lookup("old");
    return !x && x.error() == corral_errc::not_found;
  }));
  auto kept = lookup("new");
  REQUIRE_OK(kept);
  CHECK(kept->status == sandbox_status::ready);

  auto negative = prune(caf::timespan{-1s});
  REQUIRE_FALSE(negative);
  CHECK(negative.error() == corral_errc::invalid_request);
  CHECK_OK(release("new"));
}

TEST_CASE_METHOD(runtime_fixture, "capacity limits live sandboxes", "[runtime][lifecycle]") {
  rt.policy.budget.sandboxes = 2;
  REQUIRE_OK(acquire("a"));
  REQUIRE_OK(acquire("b"));
  auto third = acquire("c");
  REQUIRE_FALSE(third);
  CHECK(third.error() == corral_errc::capacity);
  CHECK(contains(describe(third.error()), "maximum of 2"));
  CHECK(contains(describe(third.error()), "budget.sandboxes"));
  // An existing key is no new sandbox.
  CHECK_OK(acquire("a"));

  REQUIRE_OK(release("a"));
  auto retry = acquire("c");
  INFO(what(retry));
  REQUIRE_OK(retry);
  CHECK(retry->status == sandbox_status::ready);
  auto s = stats();
  REQUIRE_OK(s);
  CHECK(s->live_sandboxes == 2);
  CHECK(s->capacity == 2);
  CHECK(containers().size() == 2);
  REQUIRE_OK(release_all());
}

TEST_CASE_METHOD(runtime_fixture,
                 "an acquire of an existing key with another spec is a conflict naming the fields",
                 "[runtime][lifecycle][conflict]") {
  sandbox_spec squatter;
  squatter.env = {{"TOKEN", "squatters-secret"}};
  squatter.memory_bytes = 128 << 20;
  REQUIRE_OK(acquire("session-42", squatter));
  // The real owner's strict spec never gets the squatter's sandbox.
  auto strict = acquire("session-42");
  REQUIRE_FALSE(strict);
  CHECK(strict.error() == corral_errc::conflict);
  CHECK(contains(describe(strict.error()), "env.TOKEN, memory"));
  CHECK_FALSE(contains(describe(strict.error()), "squatters-secret"));
  // The same spec again is the same sandbox.
  auto same = acquire("session-42", squatter);
  REQUIRE_OK(same);
  // The env value is in no label, in clear or otherwise recognisable.
  for (const auto& c : containers()) {
    for (const auto& [name, value] : c.labels) {
      INFO(name << "=" << value);
      CHECK_FALSE(contains(value, "squatters-secret"));
    }
  }
  REQUIRE_OK(release("session-42"));
  // Released, the key is free for any spec.
  CHECK_OK(acquire("session-42"));
  REQUIRE_OK(release_all());
}

TEST_CASE_METHOD(runtime_fixture, "the memory budget sums the live sandboxes' memory",
                 "[runtime][lifecycle]") {
  rt.policy.budget.memory = 100LL << 20;
  sandbox_spec small;
  small.memory_bytes = 40LL << 20;
  REQUIRE_OK(acquire("a", small));
  REQUIRE_OK(acquire("b", small));
  auto third = acquire("c", small);  // 120m of 100m
  REQUIRE_FALSE(third);
  CHECK(third.error() == corral_errc::capacity);
  CHECK(contains(describe(third.error()), "budget.memory"));
  sandbox_spec tiny;
  tiny.memory_bytes = 20LL << 20;  // exactly fits
  REQUIRE_OK(acquire("d", tiny));
  REQUIRE_OK(release("a"));
  CHECK_OK(acquire("c", small));
  REQUIRE_OK(release_all());
}

TEST_CASE_METHOD(runtime_fixture, "a container killed outside corral", "[runtime][lifecycle]") {
  auto info = acquire("victim");
  REQUIRE_OK(info);
  const auto id = info->container_id;

  // A long command in flight when the kill comes.
  auto pending = self->request(sup(), caf::timespan{60s}, exec_atom_v, std::string("victim"),
                               make_exec({"sleep", "30"}));
  // The command runs before the kill (the supervisor counts an exec in flight when it takes
  // the request, before the command starts: that count would not say so).
  REQUIRE(eventually(10s, [&] {
    auto ps = exec("victim", {"ps", "-o", "args"});
    return ps && contains(ps->stdout_data, "sleep 30");
  }));
  const auto t0 = steady::now();
  auto killed = corral::docker::blocking<void>(
      [&](auto done) { engine().container_kill(id, "SIGKILL", std::move(done)); });
  REQUIRE_OK(killed);

  exec_result result;
  bool answered = false;
  pending.receive([&](exec_result& r) { result = std::move(r), answered = true; },
                  [&](caf::error& err) { FAIL_CHECK("exec failed: " << describe(err)); });
  const auto took = steady::now() - t0;
  REQUIRE(answered);
  CHECK((result.end == exec_end::sandbox_lost || result.end == exec_end::killed));
  CHECK(took < 3s);

  caf::expected<sandbox_info> seen{caf::error{}};
  CHECK(eventually(1s, [&] {
    seen = lookup("victim");
    return seen && (seen->status == sandbox_status::killed || seen->status == sandbox_status::lost);
  }));
  INFO(
      what(seen) << (seen ? std::string(" ") + to_string(seen->status) + ": " + seen->detail : ""));
  REQUIRE_OK(seen);
  CHECK(seen->status == sandbox_status::killed);

  auto later = exec("victim", {"true"});
  REQUIRE_FALSE(later);
  CHECK(later.error() == corral_errc::sandbox_lost);
  CHECK(eventually(3s, [&] { return gone_from_engine(*this, id); }));
  CHECK(containers().empty());
}

TEST_CASE_METHOD(runtime_fixture, "a container removed outside corral is lost",
                 "[runtime][lifecycle]") {
  auto info = acquire("vanish");
  REQUIRE_OK(info);
  auto removed = corral::docker::blocking<void>(
      [&](auto done) { engine().container_remove(info->container_id, true, std::move(done)); });
  REQUIRE_OK(removed);

  // The engine's die event may show as killed for a moment; once corral finds the container
  // gone, it is lost.
  caf::expected<sandbox_info> seen{caf::error{}};
  CHECK(eventually(2s, [&] {
    seen = lookup("vanish");
    return seen && seen->status == sandbox_status::lost;
  }));
  INFO(
      what(seen) << (seen ? std::string(" ") + to_string(seen->status) + ": " + seen->detail : ""));
  REQUIRE_OK(seen);
  CHECK(seen->status == sandbox_status::lost);
  auto later = exec("vanish", {"true"});
  REQUIRE_FALSE(later);
  CHECK(later.error() == corral_errc::sandbox_lost);
  // A tombstone is released without an engine call.
  auto gone = release("vanish");
  REQUIRE_OK(gone);
  auto after = lookup("vanish");
  REQUIRE_FALSE(after);
  CHECK(after.error() == corral_errc::not_found);
}
