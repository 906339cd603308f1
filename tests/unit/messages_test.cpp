// The protocol's messages survive CAF 0.17's binary wire format, on their own and inside a
// caf::message (which needs the type registry add_message_types fills), and corral's errors
// render through the registered category.
#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/error.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>

#include "messages/errors.hpp"
#include "messages/registration.hpp"
#include "messages/type_ids.hpp"
#include "tests/full_messages.hpp"

namespace msg = corral::messages;
using namespace std::chrono_literals;
using namespace corral::test;

namespace {

// One actor system per test case: the serializers take it as their context.
struct system_fixture {
  static caf::actor_system_config& registered(caf::actor_system_config& cfg) {
    msg::add_message_types(cfg);
    return cfg;
  }
  caf::actor_system_config cfg;
  caf::actor_system sys{registered(cfg)};
};

template <class T>
T round_trip(caf::actor_system& sys, const T& in) {
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  T copy = in;
  auto err = sink(copy);
  INFO("serialize: " << sys.render(err));
  REQUIRE_FALSE(err);
  REQUIRE_FALSE(buf.empty());
  T out{};
  caf::binary_deserializer source{sys, buf};
  err = source(out);
  INFO("deserialize: " << sys.render(err));
  REQUIRE_FALSE(err);
  CHECK(source.remaining() == 0);
  return out;
}

// A value through a caf::message, the way it crosses the network: the message carries the
// type's registered name, and the receiving side builds the value from its registry.
template <class T>
T message_round_trip(caf::actor_system& sys, const T& in) {
  auto m = caf::make_message(in);
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  auto err = sink(m);
  INFO("serialize: " << sys.render(err));
  REQUIRE_FALSE(err);
  caf::message out;
  caf::binary_deserializer source{sys, buf};
  err = source(out);
  INFO("deserialize: " << sys.render(err));
  REQUIRE_FALSE(err);
  REQUIRE(out.size() == 1);
  REQUIRE(out.match_element<T>(0));
  return out.get_as<T>(0);
}

}  // namespace

TEST_CASE_METHOD(system_fixture, "messages: the equality operators see every field", "[messages]") {
  // Guards the round-trip tests below: they are only as strong as operator==.
  auto spec = full_spec();
  CHECK(spec == full_spec());
  CHECK_FALSE(spec == msg::sandbox_spec{});
  spec.idle_limit = 1s;
  CHECK_FALSE(spec == full_spec());
  spec = full_spec();
  spec.workspace.access = msg::access_mode::ro;
  CHECK_FALSE(spec == full_spec());
  spec = full_spec();
  spec.tmpfs[1].options = "x";
  CHECK_FALSE(spec == full_spec());

  auto info = full_info();
  info.warnings.pop_back();
  CHECK_FALSE(info == full_info());
  auto req = full_exec_request();
  req.stdin_data.pop_back();
  CHECK_FALSE(req == full_exec_request());
  auto res = full_result();
  res.end = msg::exec_end::exited;
  CHECK_FALSE(res == full_result());
  auto stats = full_stats();
  stats.execs_in_flight = 0;
  CHECK_FALSE(stats == full_stats());
}

TEST_CASE_METHOD(system_fixture, "messages: every protocol type survives the binary format",
                 "[messages]") {
  SECTION("sandbox_spec with every field set") {
    CHECK(round_trip(sys, full_spec()) == full_spec());
    CHECK(round_trip(sys, msg::sandbox_spec{}) == msg::sandbox_spec{});
  }
  SECTION("sandbox_info") {
    CHECK(round_trip(sys, full_info()) == full_info());
  }
  SECTION("exec_request with no subscriber") {
    const auto out = round_trip(sys, full_exec_request());
    CHECK(out == full_exec_request());
    CHECK(out.stdin_data.size() == 12);
    CHECK_FALSE(out.subscriber);
  }
  SECTION("output_chunk") {
    CHECK(round_trip(sys, full_chunk()) == full_chunk());
  }
  SECTION("exec_result") {
    CHECK(round_trip(sys, full_result()) == full_result());
  }
  SECTION("runtime_stats") {
    CHECK(round_trip(sys, full_stats()) == full_stats());
  }
  SECTION("workspace_mount and tmpfs_mount") {
    CHECK(round_trip(sys, some_workspace()) == some_workspace());
    CHECK(round_trip(sys, some_tmpfs()) == some_tmpfs());
  }
  SECTION("enums") {
    for (auto x : {msg::access_mode::none, msg::access_mode::ro, msg::access_mode::rw}) {
      CHECK(round_trip(sys, x) == x);
    }
    for (auto x : {msg::sandbox_status::creating, msg::sandbox_status::ready,
                   msg::sandbox_status::timed_out, msg::sandbox_status::lost}) {
      CHECK(round_trip(sys, x) == x);
    }
    for (auto x : {msg::exec_end::exited, msg::exec_end::timed_out, msg::exec_end::killed,
                   msg::exec_end::oom_killed, msg::exec_end::sandbox_lost}) {
      CHECK(round_trip(sys, x) == x);
    }
    for (auto x : {msg::output_stream::stdout_stream, msg::output_stream::stderr_stream}) {
      CHECK(round_trip(sys, x) == x);
    }
    for (auto x : {msg::release_mode::wait_for_execs, msg::release_mode::cancel_execs}) {
      CHECK(round_trip(sys, x) == x);
    }
  }
  SECTION("std::vector<sandbox_info>") {
    const std::vector<msg::sandbox_info> list{full_info(), msg::sandbox_info{}, full_info()};
    CHECK(round_trip(sys, list) == list);
    CHECK(round_trip(sys, std::vector<msg::sandbox_info>{}).empty());
  }
}

TEST_CASE_METHOD(system_fixture, "messages: a truncated buffer is an error, not garbage",
                 "[messages]") {
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  auto spec = full_spec();
  REQUIRE_FALSE(sink(spec));
  buf.resize(buf.size() / 2);
  msg::sandbox_spec out;
  caf::binary_deserializer source{sys, buf};
  CHECK(source(out));
}

TEST_CASE_METHOD(system_fixture, "messages: add_message_types registers every type by name",
                 "[messages]") {
  auto& types = sys.types();
  auto registered = [&](const std::type_info& ti) {
    return types.portable_name(0, &ti) != types.default_type_name();
  };
  CHECK(registered(typeid(msg::access_mode)));
  CHECK(registered(typeid(msg::sandbox_status)));
  CHECK(registered(typeid(msg::workspace_mount)));
  CHECK(registered(typeid(msg::tmpfs_mount)));
  CHECK(registered(typeid(msg::sandbox_spec)));
  CHECK(registered(typeid(msg::sandbox_info)));
  CHECK(registered(typeid(std::vector<msg::sandbox_info>)));
  CHECK(registered(typeid(msg::exec_end)));
  CHECK(registered(typeid(msg::output_stream)));
  CHECK(registered(typeid(msg::exec_request)));
  CHECK(registered(typeid(msg::output_chunk)));
  CHECK(registered(typeid(msg::exec_result)));
  CHECK(registered(typeid(msg::runtime_stats)));
  CHECK(registered(typeid(msg::release_mode)));
  CHECK(types.portable_name(0, &typeid(msg::sandbox_spec)) ==
        caf::type_name<msg::sandbox_spec>::value);
  CHECK(types.make_value(caf::type_name<msg::exec_result>::value) != nullptr);
}

TEST_CASE_METHOD(system_fixture, "messages: values cross the wire inside a caf::message",
                 "[messages]") {
  CHECK(message_round_trip(sys, full_spec()) == full_spec());
  CHECK(message_round_trip(sys, full_info()) == full_info());
  CHECK(message_round_trip(sys, full_exec_request()) == full_exec_request());
  CHECK(message_round_trip(sys, full_chunk()) == full_chunk());
  CHECK(message_round_trip(sys, full_result()) == full_result());
  CHECK(message_round_trip(sys, full_stats()) == full_stats());
  CHECK(message_round_trip(sys, msg::release_mode::cancel_execs) ==
        msg::release_mode::cancel_execs);
  CHECK(message_round_trip(sys, std::vector<msg::sandbox_info>{full_info()}) ==
        std::vector<msg::sandbox_info>{full_info()});
  CHECK(message_round_trip(sys, std::vector<std::string>{"a", "b"}) ==
        std::vector<std::string>{"a", "b"});

  SECTION("a request as the supervisor receives it: atom, key, spec") {
    auto m = caf::make_message(msg::acquire_atom_v, std::string("k1"), full_spec());
    std::vector<char> buf;
    caf::binary_serializer sink{sys, buf};
    REQUIRE_FALSE(sink(m));
    caf::message out;
    caf::binary_deserializer source{sys, buf};
    REQUIRE_FALSE(source(out));
    REQUIRE(out.match_elements<msg::acquire_atom, std::string, msg::sandbox_spec>());
    CHECK(out.get_as<std::string>(1) == "k1");
    CHECK(out.get_as<msg::sandbox_spec>(2) == full_spec());
  }
}

TEST_CASE_METHOD(system_fixture, "messages: a system without add_message_types cannot read them",
                 "[messages]") {
  // The negative control for the registration tests above: the receiving side builds values
  // by their registered names, so a node that skipped add_message_types gets nothing.
  auto m = caf::make_message(full_spec());
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  REQUIRE_FALSE(sink(m));

  caf::actor_system_config bare_cfg;
  caf::actor_system bare{bare_cfg};
  caf::message out;
  caf::binary_deserializer source{bare, buf};
  // CAF 0.17 reports no error here: the receiver just gets an empty message.
  CHECK_FALSE(source(out));
  CHECK(out.empty());
  CHECK_FALSE(out.match_elements<msg::sandbox_spec>());
}

TEST_CASE_METHOD(system_fixture, "messages: corral errors describe and render by category",
                 "[messages]") {
  const auto err = msg::make_error(msg::corral_errc::capacity, "x");
  CHECK(err == msg::corral_errc::capacity);
  CHECK(err.category() == caf::atom("corral"));
  CHECK(msg::describe(err) == "capacity: x");
  CHECK(msg::describe(msg::make_error(msg::corral_errc::policy_violation, "")) ==
        "policy_violation");
  CHECK(msg::describe(caf::error{}) == "no error");
  CHECK(msg::describe(caf::make_error(caf::sec::request_timeout)) == "request_timeout");

  const auto rendered = sys.render(err);
  INFO("rendered: " << rendered);
  CHECK_THAT(rendered, Catch::Contains("capacity"));
  CHECK_THAT(rendered, Catch::Contains("x"));

  for (auto code : {msg::corral_errc::policy_violation, msg::corral_errc::invalid_request,
                    msg::corral_errc::not_found, msg::corral_errc::capacity,
                    msg::corral_errc::timeout, msg::corral_errc::sandbox_lost,
                    msg::corral_errc::shutting_down, msg::corral_errc::engine_unavailable,
                    msg::corral_errc::engine_error, msg::corral_errc::version_mismatch,
                    msg::corral_errc::node_unavailable, msg::corral_errc::conflict,
                    msg::corral_errc::name_in_use, msg::corral_errc::egress_unavailable}) {
    const std::string name = msg::to_string(code);
    CHECK(name != "?");
    CHECK_THAT(sys.render(msg::make_error(code, "why")), Catch::Contains(name));
  }

  SECTION("an error crosses the wire with its code and message") {
    const auto out = round_trip(sys, err);
    CHECK(out == msg::corral_errc::capacity);
    CHECK(msg::describe(out) == "capacity: x");
  }
}

TEST_CASE("messages: enum names", "[messages]") {
  CHECK(std::string(msg::to_string(msg::access_mode::ro)) == "ro");
  CHECK(std::string(msg::to_string(msg::sandbox_status::oom_killed)) == "oom_killed");
  CHECK(std::string(msg::to_string(msg::exec_end::sandbox_lost)) == "sandbox_lost");
  CHECK(std::string(msg::to_string(msg::output_stream::stderr_stream)) == "stderr");
  CHECK(std::string(msg::to_string(msg::release_mode::cancel_execs)) == "cancel_execs");
}

TEST_CASE("messages: the four live statuses are the only ones not terminal", "[messages]") {
  using msg::sandbox_status;
  for (auto s : {sandbox_status::creating, sandbox_status::starting, sandbox_status::ready,
                 sandbox_status::stopping}) {
    CAPTURE(msg::to_string(s));
    CHECK_FALSE(msg::is_terminal(s));
  }
  for (auto s : {sandbox_status::removed, sandbox_status::exited, sandbox_status::failed,
                 sandbox_status::timed_out, sandbox_status::oom_killed, sandbox_status::killed,
                 sandbox_status::lost}) {
    CAPTURE(msg::to_string(s));
    CHECK(msg::is_terminal(s));
  }
}
