// The supervisor answers every request with a corral error, whatever the timing: a container
// actor can be gone (its mailbox closed) before the supervisor hears of it, or die holding a
// request. These tests put the supervisor in those states on purpose, with container actors
// of their own, instead of waiting for a one-in-forty race under load.
#include <atomic>

#include "scale_fixture.hpp"

using namespace corral;
using namespace corral::scale_tests;

namespace {

actors::runtime_config window_config(const app::fake_engine& fake, const std::string& what) {
  actors::runtime_config cfg;
  cfg.name = unique_runtime_name(what);
  cfg.socket_path = fake.socket_path();
  return cfg;
}

// A container actor that is gone before anyone can ask it anything: it quits as it starts.
container_actor gone_at_birth(caf::actor_system& sys) {
  return sys.spawn([](container_actor::pointer self) -> container_actor::behavior_type {
    self->quit();
    return {
        [](acquire_atom) { return sandbox_info{}; },
        [](lookup_atom) { return sandbox_info{}; },
        [](exec_atom, exec_request&) { return exec_result{}; },
        [](release_atom, release_mode) { return sandbox_info{}; },
    };
  });
}

// A container actor whose sandbox is ready at once, and which dies holding the next request
// it gets (as an actor that throws in a handler would): CAF 0.17 then answers nothing.
container_actor dies_holding_a_request(caf::actor_system& sys, std::string key) {
  return sys.spawn([key](container_actor::pointer self) -> container_actor::behavior_type {
    auto die = [self]<class T>(caf::typed_response_promise<T> rp) {
      self->quit(caf::sec::runtime_error);
      return rp;
    };
    return {
        [key](acquire_atom) {
          sandbox_info info;
          info.key = key;
          info.status = sandbox_status::ready;
          return info;
        },
        [self, die](lookup_atom) { return die(self->make_response_promise<sandbox_info>()); },
        [self, die](exec_atom, exec_request&) {
          return die(self->make_response_promise<exec_result>());
        },
        [self, die](release_atom, release_mode) {
          return die(self->make_response_promise<sandbox_info>());
        },
    };
  });
}

exec_request command(std::vector<std::string> argv) {
  exec_request req;
  req.argv = std::move(argv);
  return req;
}

std::string what_came(const caf::error& err) {
  return corral_code(err) ? describe(err) : "UNTYPED " + caf::to_string(err);
}

}  // namespace

TEST_CASE("supervisor: an acquire that meets a container actor already gone gets a sandbox",
          "[scale][runtime][window]") {
  app::fake_engine fake(fast_options());
  std::atomic<int> made{0};
  runtime_harness rt(window_config(fake, "gone-at-birth"),
                     [&made](caf::actor_system& sys, actors::container_args args) {
                       // The first container actor of the run is gone before it is asked.
                       if (made++ == 0) return gone_at_birth(sys);
                       return actors::spawn_container(sys, std::move(args));
                     });
  auto info =
      rt.ask<sandbox_info>(caf::timespan{20s}, acquire_atom_v, std::string("k1"), sandbox_spec{});
  INFO("acquire answered: " << (info ? "a sandbox" : what_came(info.error())));
  REQUIRE(info);
  CHECK(info->status == sandbox_status::ready);
  CHECK(made == 2);  // retried once, on a fresh sandbox
  auto ran = rt.ask<exec_result>(caf::timespan{20s}, exec_atom_v, std::string("k1"),
                                 command({"echo", "hi"}));
  REQUIRE(ran);
  CHECK(ran->stdout_data == "hi\n");
  auto released = rt.ask<sandbox_info>(caf::timespan{20s}, release_atom_v, std::string("k1"),
                                       release_mode::cancel_execs);
  REQUIRE(released);
  CHECK(fake.containers().empty());
}

TEST_CASE("supervisor: an acquire whose every container actor is gone gets sandbox_lost",
          "[scale][runtime][window]") {
  app::fake_engine fake(fast_options());
  runtime_harness rt(
      window_config(fake, "always-gone"),
      [](caf::actor_system& sys, actors::container_args) { return gone_at_birth(sys); });
  auto info =
      rt.ask<sandbox_info>(caf::timespan{20s}, acquire_atom_v, std::string("k1"), sandbox_spec{});
  REQUIRE_FALSE(info);
  INFO(what_came(info.error()));
  CHECK(corral_code(info.error()) == corral_errc::sandbox_lost);
  // The runtime goes on: the key is a tombstone that says what happened.
  auto looked = rt.ask<sandbox_info>(caf::timespan{20s}, lookup_atom_v, std::string("k1"));
  REQUIRE(looked);
  CHECK(looked->status == sandbox_status::lost);
}

TEST_CASE("supervisor: a container actor that dies holding a request: every caller gets an answer",
          "[scale][runtime][window]") {
  app::fake_engine fake(fast_options());
  runtime_harness rt(window_config(fake, "dies-holding"),
                     [](caf::actor_system& sys, actors::container_args args) {
                       return dies_holding_a_request(sys, args.key);
                     });
  // Well under this, the supervisor answers; a caller left to its own timeout would see CAF's
  // request_timeout instead.
  const caf::timespan patience{10s};
  for (const std::string key : {"lookup", "exec", "release"}) {
    auto info = rt.ask<sandbox_info>(patience, acquire_atom_v, key, sandbox_spec{});
    REQUIRE(info);
    REQUIRE(info->status == sandbox_status::ready);
  }

  auto looked = rt.ask<sandbox_info>(patience, lookup_atom_v, std::string("lookup"));
  REQUIRE_FALSE(looked);
  INFO("lookup: " << what_came(looked.error()));
  CHECK(corral_code(looked.error()) == corral_errc::sandbox_lost);

  auto ran = rt.ask<exec_result>(patience, exec_atom_v, std::string("exec"), command({"true"}));
  REQUIRE_FALSE(ran);
  INFO("exec: " << what_came(ran.error()));
  CHECK(corral_code(ran.error()) == corral_errc::sandbox_lost);

  // A release of a sandbox whose actor died says what became of it.
  auto released = rt.ask<sandbox_info>(patience, release_atom_v, std::string("release"),
                                       release_mode::wait_for_execs);
  INFO("release: " << (released ? "a sandbox" : what_came(released.error())));
  REQUIRE(released);
  CHECK(released->status == sandbox_status::lost);

  // Afterwards the keys are tombstones (or gone), and the supervisor answers at once.
  auto exec_again =
      rt.ask<exec_result>(patience, exec_atom_v, std::string("exec"), command({"true"}));
  REQUIRE_FALSE(exec_again);
  CHECK(corral_code(exec_again.error()) == corral_errc::sandbox_lost);
  auto stats = rt.ask<runtime_stats>(patience, stats_atom_v);
  REQUIRE(stats);
  CHECK(stats->live_sandboxes == 0);
}

// Requests that come while the supervisor is still connecting to the engine wait for it to
// serve; a shutdown then must answer them, even though the supervisor quits before the
// engine's answer arrives (CAF 0.17 tells a caller nothing of a promise dropped with its actor).
TEST_CASE("supervisor: requests waiting for the engine's first answer are refused by a shutdown",
          "[scale][supervisor]") {
  auto options = exact_latency_options();
  options.latency.ping = 3s;  // the negotiation is in flight for the whole test
  app::fake_engine fake(options);
  runtime_harness rt(window_config(fake, "shutdown-while-connecting"));
  auto acquire =
      rt.self->request(rt.sup, caf::timespan{20s}, acquire_atom_v, "early", sandbox_spec{});
  auto list = rt.self->request(rt.sup, caf::timespan{20s}, list_atom_v);
  REQUIRE(rt.stop());

  std::string acquired;
  acquire.receive([&](sandbox_info&) { acquired = "a sandbox"; },
                  [&](caf::error& err) { acquired = what_came(err); });
  CHECK_THAT(acquired, Catch::Contains("shutting_down"));
  std::string listed;
  list.receive([&](std::vector<sandbox_info>& all) { listed = std::to_string(all.size()); },
               [&](caf::error& err) { listed = what_came(err); });
  CHECK_FALSE(listed.find("UNTYPED") != std::string::npos);
  CHECK(fake.containers().empty());
}
