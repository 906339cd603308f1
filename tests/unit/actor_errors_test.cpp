// Callers branch on corral's error codes: whatever CAF says between actors reaches them as one.
#include <catch2/catch.hpp>

#include <caf/sec.hpp>

#include "actors/actor_errors.hpp"
#include "actors/pending_calls.hpp"

using corral::actors::from_actor;
using corral::actors::pending_calls;
using corral::messages::corral_errc;
using corral::messages::describe;
using corral::messages::make_error;

TEST_CASE("actor errors: CAF's own errors become corral errors", "[actors][errors]") {
  auto timed_out = from_actor(caf::make_error(caf::sec::request_timeout), corral_errc::sandbox_lost,
                              "asking node n1");
  CHECK(timed_out == corral_errc::timeout);
  CHECK(describe(timed_out) == "timeout: asking node n1: request_timeout");

  auto gone = from_actor(caf::make_error(caf::sec::request_receiver_down),
                         corral_errc::sandbox_lost, "running a command in sandbox k");
  CHECK(gone == corral_errc::sandbox_lost);
  CHECK(describe(gone).find("request_receiver_down") != std::string::npos);

  auto unreachable = from_actor(caf::make_error(caf::sec::remote_linking_failed),
                                corral_errc::node_unavailable, "asking node n2");
  CHECK(unreachable == corral_errc::node_unavailable);
}

TEST_CASE("actor errors: a corral error passes unchanged", "[actors][errors]") {
  auto own = make_error(corral_errc::capacity, "full");
  auto passed = from_actor(own, corral_errc::sandbox_lost, "acquiring sandbox k");
  CHECK(passed == corral_errc::capacity);
  CHECK(describe(passed) == "capacity: full");
}

TEST_CASE("pending calls: a gone peer fails exactly its open calls, once", "[actors][errors]") {
  pending_calls calls;
  caf::actor_addr a, b;  // two null addresses compare equal: use one peer and ids
  int failed = 0;
  const auto first = calls.add(a, [&](const caf::error&) { ++failed; });
  const auto second = calls.add(a, [&](const caf::error&) { ++failed; });
  CHECK(calls.size() == 2);
  CHECK(calls.take(a, first));        // answered: its handler runs, not the failure
  CHECK_FALSE(calls.take(a, first));  // a second answer for it is dropped
  calls.fail_all(a, make_error(corral_errc::sandbox_lost, "gone"));
  CHECK(failed == 1);
  CHECK_FALSE(calls.take(a, second));  // failed already: its late answer is dropped
  CHECK(calls.size() == 0);
  calls.fail_all(b, make_error(corral_errc::sandbox_lost, "gone"));
  CHECK(failed == 1);
}
