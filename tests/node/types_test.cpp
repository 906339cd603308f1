// What crosses a real loopback connection between two actor systems arrives equal: every
// message type of messages/type_ids.hpp (CAF 0.17 turns an unregistered type into a silent
// empty message), and the hello handshake of app::connect_node against services that are
// not a corral node of this version.
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <catch2/catch.hpp>

#include "actors/supervisor.hpp"
#include "app/remote.hpp"
#include "messages/type_ids.hpp"
#include "tests/full_messages.hpp"
#include "tests/node/node_process.hpp"

using namespace corral;
using namespace corral::messages;
using namespace corral::node_tests;
using namespace corral::test;

namespace {

// Answers every request with the message it got.
// (get_atom, error) answers with that error, as an error response.
caf::behavior echo(caf::event_based_actor* self) {
  self->set_default_handler(caf::reflect);
  return {
      [](caf::get_atom, caf::error& err) -> caf::result<caf::message> { return std::move(err); }};
}

// Answers hello as a node of another version would; refuses everything else.
supervisor_actor::behavior_type future_node() {
  auto no = [] { return make_error(corral_errc::engine_error, "a fake node"); };
  return {
      [=](acquire_atom, const std::string&, const sandbox_spec&) -> caf::result<sandbox_info> {
        return no();
      },
      [=](lookup_atom, const std::string&) -> caf::result<sandbox_info> { return no(); },
      [=](exec_atom, const std::string&, const exec_request&) -> caf::result<exec_result> {
        return no();
      },
      [=](release_atom, const std::string&, release_mode) -> caf::result<sandbox_info> {
        return no();
      },
      [=](release_all_atom, release_mode) -> caf::result<uint64_t> { return no(); },
      [=](list_atom) -> caf::result<std::vector<sandbox_info>> { return no(); },
      [=](stats_atom) -> caf::result<runtime_stats> { return no(); },
      [=](prune_atom, caf::timespan, caf::timespan) -> caf::result<std::vector<std::string>> {
        return no();
      },
      [](hello_atom, int32_t) -> caf::result<int32_t, std::string> {
        return caf::make_result(int32_t{99}, std::string("9.9.9"));
      },
      [](hello_atom, int32_t, const std::string&) -> caf::result<int32_t, std::string> {
        return caf::make_result(int32_t{99}, std::string("9.9.9"));
      },
  };
}

// Accepts every request and never answers.
caf::behavior silent(caf::event_based_actor* self) {
  self->set_default_handler(
      [self](caf::scheduled_actor*, caf::message_view&) -> caf::result<caf::message> {
        return self->make_response_promise();
      });
  return {[](caf::ok_atom) {}};
}

// Two actor systems in this process, both with the middleman and corral's types; actors
// spawned through `serve` are stopped before the systems go.
struct two_systems {
  plain_net_config server_cfg;
  caf::actor_system server{server_cfg};
  plain_net_config client_cfg;
  caf::actor_system client{client_cfg};
  std::vector<caf::actor> served;

  ~two_systems() {
    for (auto& h : served) caf::anon_send_exit(h, caf::exit_reason::kill);
  }

  template <class Handle>
  uint16_t publish(Handle h) {
    served.push_back(caf::actor_cast<caf::actor>(h));
    auto port = server.middleman().publish(h, 0, "127.0.0.1");
    REQUIRE(port);
    return *port;
  }
};

template <class T>
void check_round_trip(caf::scoped_actor& self, const caf::actor& echo, const T& value,
                      const char* name) {
  INFO("type " << name);
  auto got = ask<T>(self, echo, caf::timespan{10s}, value);
  REQUIRE(what(got) == "ok");
  CHECK(*got == value);
}

}  // namespace

TEST_CASE("every message type crosses a loopback connection unchanged", "[node][types]") {
  two_systems net;
  const auto port = net.publish(net.server.spawn(echo));
  auto remote = net.client.middleman().remote_actor("127.0.0.1", port);
  REQUIRE(remote);
  caf::scoped_actor self{net.client};
  auto subscriber = net.client.spawn(echo);
  net.served.push_back(subscriber);  // stopped with the others (it lives in `client`)

  check_round_trip(self, *remote, full_spec(), "sandbox_spec");
  check_round_trip(self, *remote, full_info("key-1"), "sandbox_info");
  check_round_trip(self, *remote,
                   std::vector<sandbox_info>{full_info("a"), full_info("b"), sandbox_info{}},
                   "std::vector<sandbox_info>");
  check_round_trip(self, *remote, std::vector<std::string>{"x", "", std::string(5000, 'y')},
                   "std::vector<std::string>");
  check_round_trip(self, *remote, full_result(), "exec_result");
  check_round_trip(self, *remote,
                   output_chunk{77, output_stream::stderr_stream, std::string("\0\1\2", 3)},
                   "output_chunk");
  check_round_trip(self, *remote, release_mode::cancel_execs, "release_mode");
  check_round_trip(self, *remote, sandbox_status::lost, "sandbox_status");
  check_round_trip(self, *remote, exec_end::sandbox_lost, "exec_end");
  check_round_trip(self, *remote, access_mode::ro, "access_mode");
  check_round_trip(self, *remote, output_stream::stderr_stream, "output_stream");
  check_round_trip(self, *remote, workspace_mount{"/a", "/b", access_mode::rw}, "workspace_mount");
  check_round_trip(self, *remote, tmpfs_mount{"/t", 12345, "mode=700"}, "tmpfs_mount");
  check_round_trip(self, *remote, full_stats("node-7"), "runtime_stats");
  {
    // The subscriber is an actor of the client system: it travels out as a handle and
    // comes back as the same local actor.
    exec_request req;
    req.argv = {"sh", "-c", "echo $X"};
    req.env = {{"X", "y"}, {"TOKEN", "secret"}};
    req.workdir = "/w";
    req.timeout = std::chrono::seconds(5);
    req.max_stdout = 10;
    req.max_stderr = 20;
    req.has_stdin = true;
    req.stdin_data = std::string("in\0put", 6);
    req.subscriber = subscriber;
    check_round_trip(self, *remote, req, "exec_request");
    // And the whole request message of the supervisor interface.
    std::string key;
    exec_request back;
    caf::error failure;
    self->request(*remote, caf::timespan{10s}, exec_atom_v, std::string("the-key"), req)
        .receive(
            [&](exec_atom, std::string& k, exec_request& r) {
              key = std::move(k);
              back = std::move(r);
            },
            [&](caf::error& err) { failure = std::move(err); });
    REQUIRE(describe(failure) == "no error");
    CHECK(key == "the-key");
    CHECK(back == req);
    CHECK(back.subscriber == caf::actor{subscriber});
  }
  {
    sandbox_info info;
    sandbox_spec spec;
    std::string key;
    caf::error failure;
    self->request(*remote, caf::timespan{10s}, acquire_atom_v, std::string("k"), full_spec())
        .receive(
            [&](acquire_atom, std::string& k, sandbox_spec& s) {
              key = std::move(k);
              spec = std::move(s);
            },
            [&](caf::error& err) { failure = std::move(err); });
    REQUIRE(describe(failure) == "no error");
    CHECK(key == "k");
    CHECK(spec == full_spec());
  }
  {
    // A corral error, as a value inside a message (out) and as an error response (back).
    // A message holding nothing but an error would go to the receiver's error handler.
    const auto original =
        make_error(corral_errc::sandbox_lost, "sandbox k is lost: node x is down");
    caf::error got;
    self->request(*remote, caf::timespan{10s}, caf::get_atom_v, original)
        .receive([&](caf::message& m) { FAIL("an error came back as " << caf::to_string(m)); },
                 [&](caf::error& err) { got = std::move(err); });
    CHECK(got == corral_errc::sandbox_lost);
    CHECK(describe(got) == describe(original));
    CHECK(net.client.render(got) == net.server.render(original));

    // (std::string, error) is not an error response: it comes back as a message.
    std::string tag;
    caf::error inner;
    caf::error failure;
    self->request(*remote, caf::timespan{10s}, std::string("wrapped"), original)
        .receive(
            [&](std::string& t, caf::error& e) {
              tag = std::move(t);
              inner = std::move(e);
            },
            [&](caf::error& err) { failure = std::move(err); });
    REQUIRE(describe(failure) == "no error");
    CHECK(tag == "wrapped");
    CHECK(inner == corral_errc::sandbox_lost);
    CHECK(describe(inner) == describe(original));
  }
}

TEST_CASE("connect_node names both versions when the node speaks another protocol",
          "[node][types][version]") {
  two_systems net;
  const auto port = net.publish(net.server.spawn(future_node));
  caf::scoped_actor self{net.client};
  const auto start = steady::now();
  auto connected = app::connect_node(self, {"127.0.0.1", port}, 2000ms, "tester");
  CHECK(since(start) < 3s);
  REQUIRE_FALSE(connected);
  const auto text = describe(connected.error());
  INFO(text);
  CHECK(connected.error() == corral_errc::version_mismatch);
  CHECK(contains(text, "0.1.0"));
  CHECK(contains(text, "protocol " + std::to_string(corral::messages::protocol_version)));
  CHECK(contains(text, "9.9.9"));
  CHECK(contains(text, "protocol 99"));
  CHECK(contains(text, "127.0.0.1:" + std::to_string(port)));
}

TEST_CASE("connect_node refuses a service of another interface quickly", "[node][types][version]") {
  two_systems net;
  SECTION("an untyped echo") {
    const auto port = net.publish(net.server.spawn(echo));
    caf::scoped_actor self{net.client};
    const auto start = steady::now();
    auto connected = app::connect_node(self, {"127.0.0.1", port}, 2000ms, "tester");
    CHECK(since(start) < 3s);
    REQUIRE_FALSE(connected);
    INFO(describe(connected.error()));
    CHECK(connected.error() == corral_errc::version_mismatch);
    CHECK(contains(describe(connected.error()), "does not speak corral's protocol"));
  }
  SECTION("an actor that never answers") {
    const auto port = net.publish(net.server.spawn(silent));
    caf::scoped_actor self{net.client};
    const auto start = steady::now();
    auto connected = app::connect_node(self, {"127.0.0.1", port}, 1000ms, "tester");
    CHECK(since(start) < 3s);
    REQUIRE_FALSE(connected);
    INFO(describe(connected.error()));
    CHECK(connected.error() == corral_errc::version_mismatch);
    CHECK(contains(describe(connected.error()), "does not speak corral's protocol"));
  }
  SECTION("a closed port") {
    caf::scoped_actor self{net.client};
    const auto start = steady::now();
    auto connected = app::connect_node(self, {"127.0.0.1", 1}, 2000ms, "tester");
    CHECK(since(start) < 2s);
    REQUIRE_FALSE(connected);
    CHECK(connected.error() == corral_errc::node_unavailable);
    CHECK(contains(describe(connected.error()), "127.0.0.1:1"));
  }
}
