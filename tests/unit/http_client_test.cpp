// unix_http_client against the scripted fake engine: framing, pooling, deadlines,
// cancellation, shutdown. Its failures (transport, malformed input, error bodies) are in
// http_client_failures_test.cpp, hijacked streams in http_client_upgrade_test.cpp.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/http_client_fixture.hpp"

using namespace corral::http_client_tests;

// -- framing ------------------------------------------------------------------------------

TEST_CASE("content-length body is read whole, headers lower-cased", "[http_client]") {
  fake_engine engine([](const received_request&) {
    return reply::response(200, R"({"ok":true})",
                           {{"Content-Type", "application/json"}, {"Api-Version", "1.43"}});
  });
  docker::unix_http_client client(options_for(engine));

  auto r = get_now(client, "/v1.41/info");
  REQUIRE(r.ok());
  CHECK(r->head.status == 200);
  CHECK(r->body == R"({"ok":true})");
  CHECK(r->head.headers.at("api-version") == "1.43");
  CHECK(r->head.headers.at("content-type") == "application/json");

  const auto req = engine.last_request();
  CHECK(req.method == "GET");
  CHECK(req.target == "/v1.41/info");
  CHECK(req.header("host") == "docker");
  CHECK(req.body.empty());
}

TEST_CASE("a request body goes out with Content-Length and Content-Type", "[http_client]") {
  fake_engine engine([](const received_request&) { return reply::empty(204); });
  docker::unix_http_client client(options_for(engine));

  http_request r;
  r.method = http_method::post;
  r.target = "/v1.41/things";
  r.body = R"({"a":1})";
  r.content_type = "application/json";
  auto reply = send(client, r);
  REQUIRE(reply.ok());
  CHECK(reply->head.status == 204);
  CHECK(reply->body.empty());

  const auto req = engine.last_request();
  CHECK(req.method == "POST");
  CHECK(req.body == R"({"a":1})");
  CHECK(req.header("content-type") == "application/json");
  CHECK(req.header("content-length") == "7");
}

TEST_CASE("chunked bodies split at odd places are reassembled", "[http_client]") {
  // Pauses between the pieces make the client read them separately: a chunk-size line cut
  // in two, a CR apart from its LF, a chunk extension, the last chunk cut from its CRLF.
  fake_engine engine([](const received_request&) {
    return reply::raw(chunked_head + "5\r\nhel")
        .then_pause(5ms)
        .then_write("lo\r\n")
        .then_pause(5ms)
        .then_write("0")  // a size with a leading zero, cut after it
        .then_pause(5ms)
        .then_write("a\r\n, chunked \r")
        .then_pause(5ms)
        .then_write("\n3;ext=1\r\nwor\r\n2\r\nld\r\n0")
        .then_pause(5ms)
        .then_write("\r\n\r\n");
  });
  docker::unix_http_client client(options_for(engine));

  auto r = get_now(client, "/x");
  INFO((r.ok() ? std::string("ok") : r.err().describe()));
  REQUIRE(r.ok());
  CHECK(r->body == "hello, chunked world");

  // The connection is reusable after a chunked body.
  REQUIRE(get_now(client, "/x").ok());
  CHECK(engine.accepted() == 1);
}

TEST_CASE("many small chunks, in one write and in many", "[http_client]") {
  std::string expected;
  std::vector<std::string> pieces;
  for (int i = 0; i < 2000; ++i) {
    std::string piece(static_cast<std::size_t>(1 + i % 7), static_cast<char>('a' + i % 26));
    expected += piece;
    pieces.push_back(std::move(piece));
  }
  std::string one_write = chunked_head;
  for (const auto& p : pieces) one_write += chunk(p);
  one_write += "0\r\n\r\n";

  fake_engine engine([&](const received_request& req) {
    if (req.target == "/one") return reply::raw(one_write);
    return reply::chunked(200, pieces, 0ms, "text/plain");  // one write per chunk
  });
  docker::unix_http_client client(options_for(engine));

  auto a = get_now(client, "/one");
  REQUIRE(a.ok());
  CHECK(a->body == expected);
  auto b = get_now(client, "/many");
  REQUIRE(b.ok());
  CHECK(b->body == expected);
}

TEST_CASE("stream() hands the body to the sink as it arrives", "[http_client]") {
  fake_engine engine([](const received_request&) {
    return reply::chunked(200, {"one\n", "two\n", "three\n"}, 10ms);
  });
  docker::unix_http_client client(options_for(engine));

  std::string seen;
  int sink_calls = 0;
  int head_status = 0;
  auto r = docker::blocking<docker::http_response_head>([&](auto done) {
    client.stream(
        get("/events"),
        [&](std::string_view piece) -> std::optional<docker::error> {
          seen += piece;
          ++sink_calls;
          return std::nullopt;
        },
        std::move(done), [&](const docker::http_response_head& h) { head_status = h.status; });
  });
  REQUIRE(r.ok());
  CHECK(head_status == 200);
  CHECK(r->status == 200);
  CHECK(seen == "one\ntwo\nthree\n");
  CHECK(sink_calls >= 3);  // the pauses split the delivery
}

TEST_CASE("a sink error aborts the request with it", "[http_client]") {
  fake_engine engine([](const received_request&) {
    return reply::chunked(200, {"one", "two", "three"}, 5ms);
  });
  docker::unix_http_client client(options_for(engine));

  auto r = docker::blocking<docker::http_response_head>([&](auto done) {
    client.stream(
        get("/x"),
        [](std::string_view) -> std::optional<docker::error> {
          return docker::error{errc::invalid_request, "sink says no", 0};
        },
        std::move(done));
  });
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::invalid_request);
  CHECK(r.err().message == "sink says no");
  CHECK(eventually([&] { return client.stats().open_connections == 0; }));
}

// -- pooling ------------------------------------------------------------------------------

TEST_CASE("keep-alive: sequential requests share one connection", "[http_client]") {
  fake_engine engine([](const received_request&) { return reply::json(200, "{}"); });
  docker::unix_http_client client(options_for(engine));

  for (int i = 0; i < 5; ++i) REQUIRE(get_now(client, "/ping").ok());
  CHECK(engine.accepted() == 1);
  CHECK(engine.request_count() == 5);
  const auto s = client.stats();
  CHECK(s.connections_opened == 1);
  CHECK(s.open_connections == 1);
  CHECK(s.idle_connections == 1);
  CHECK(s.requests_completed == 5);
  CHECK(s.active_requests == 0);
}

TEST_CASE("Connection: close from the engine is honoured", "[http_client]") {
  fake_engine engine([](const received_request&) {
    return reply::response(200, "{}", {{"Connection", "close"}}).then_close();
  });
  docker::unix_http_client client(options_for(engine));

  REQUIRE(get_now(client, "/a").ok());
  REQUIRE(get_now(client, "/b").ok());
  CHECK(engine.accepted() == 2);
  CHECK(client.stats().idle_connections == 0);
}

TEST_CASE("bounded pool: 10 slow requests over at most 2 connections", "[http_client]") {
  fake_engine engine([](const received_request&) { return reply::json(200, "{}").after(30ms); });
  collector<http_response> results;
  auto options = options_for(engine);
  options.max_connections = 2;
  docker::unix_http_client client(options);

  std::size_t most_queued = 0;
  for (int i = 0; i < 10; ++i) client.send(get("/slow/" + std::to_string(i)), results.callback(i));
  // While the burst runs, the rest wait in the client's queue.
  for (int spin = 0; spin < 50 && results.calls() < 10; ++spin) {
    most_queued = std::max(most_queued, client.stats().queued_requests);
    std::this_thread::sleep_for(2ms);
  }
  REQUIRE(results.wait_calls(10));
  for (int i = 0; i < 10; ++i) {
    CHECK(results.calls(i) == 1);
    CHECK(results.first(i).ok());
  }
  CHECK(engine.max_open() == 2);
  CHECK(engine.accepted() == 2);
  CHECK(client.stats().connections_opened == 2);
  CHECK(most_queued >= 1);
  CHECK(engine.request_count() == 10);
}

TEST_CASE("a burst of 100 concurrent requests all complete", "[http_client]") {
  fake_engine engine([](const received_request& r) { return reply::json(200, r.target); });
  collector<http_response> results;
  docker::unix_http_client client(options_for(engine));

  for (int i = 0; i < 100; ++i) client.send(get("/n/" + std::to_string(i)), results.callback(i));
  REQUIRE(results.wait_calls(100));
  for (int i = 0; i < 100; ++i) {
    auto r = results.first(i);
    REQUIRE(r.ok());
    CHECK(r->body == "/n/" + std::to_string(i));
  }
  CHECK(engine.max_open() <= client.options().max_connections);
}

TEST_CASE("streams holding their whole budget leave control requests their connections",
          "[http_client]") {
  // Long-lived requests hang, as execs of `sleep` do; everything else answers at once.
  fake_engine engine([](const received_request& r) {
    if (r.path().starts_with("/stream/")) return reply::hang();
    return reply::json(200, r.target);
  });
  collector<docker::http_response_head> streams;
  collector<http_response> controls;
  docker::unix_http_client client(options_for(engine));  // the default budgets
  const auto budget = static_cast<int>(client.options().max_stream_connections);
  REQUIRE(budget < static_cast<int>(client.options().max_connections));

  auto open_stream = [&](int i) {
    auto r = get("/stream/" + std::to_string(i), 60s);  // outlives the test's waits
    r.long_lived = true;
    return client.stream(std::move(r), {}, streams.callback(i));
  };
  std::vector<docker::unix_http_client::request_id> ids;
  for (int i = 0; i < budget; ++i) ids.push_back(open_stream(i));
  REQUIRE(engine.wait_for_requests(budget));
  // One more stream than the budget waits for a stream's connection, not for a control one.
  open_stream(budget);
  REQUIRE(eventually([&] { return client.stats().queued_requests == 1; }));
  CHECK(client.stats().stream_connections == static_cast<std::size_t>(budget));

  // More control requests than the connections left: they take turns on those and each
  // gets its answer, long before its 5 s deadline.
  const int control_count = 2 * static_cast<int>(client.options().max_connections);
  for (int i = 0; i < control_count; ++i) {
    const char* targets[] = {"/containers/create", "/containers/c/stop", "/containers/c",
                             "/containers/json", "/containers/c/exec"};
    client.send(get(targets[i % 5] + std::string("?n=") + std::to_string(i)), controls.callback(i));
  }
  REQUIRE(controls.wait_calls(control_count, 10s));
  for (int i = 0; i < control_count; ++i) {
    auto r = controls.first(i);
    INFO("control request " << i << ": " << (r.ok() ? "ok" : r.err().describe()));
    CHECK(r.ok());
  }
  CHECK(streams.calls() == 0);  // every stream still runs
  CHECK(engine.request_count() == static_cast<std::size_t>(budget + control_count));

  // A stream that ends hands its connection to the one waiting.
  client.cancel(ids.front());
  REQUIRE(engine.wait_for_requests(budget + control_count + 1));
  CHECK(engine.last_request().target == "/stream/" + std::to_string(budget));
  // Waited for: the client publishes its stats after it hands the connection on, and Asio's
  // first write may reach the engine before that (a loaded run saw 1 here).
  CHECK(eventually([&] { return client.stats().queued_requests == 0; }));

  client.shutdown();
  REQUIRE(streams.calls() == static_cast<std::size_t>(budget + 1));
  for (int i = 0; i <= budget; ++i) CHECK(streams.calls(i) == 1);
  CHECK(client.stats().stream_connections == 0);
}

// -- deadlines, cancellation, shutdown ----------------------------------------------------

TEST_CASE("deadline: a hanging engine gives timeout, and the pool recovers", "[http_client]") {
  fake_engine engine([](const received_request&) { return reply::hang(); });
  docker::unix_http_client client(options_for(engine));

  const auto start = steady::now();
  auto r = get_now(client, "/hang", 200ms);
  const auto took = steady::now() - start;
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::timeout);
  CHECK(r.err().message.find("200 ms") != std::string::npos);
  CHECK(took >= 190ms);
  CHECK(took < 2s);
  CHECK(eventually([&] { return client.stats().open_connections == 0; }));
  CHECK(engine.wait_for_open_at_most(0));  // the client closed its side

  engine.set_handler([](const received_request&) { return reply::json(200, "{}"); });
  auto again = get_now(client, "/ok");
  REQUIRE(again.ok());
  CHECK(again->head.status == 200);
}

TEST_CASE("deadline covers time spent queued", "[http_client]") {
  fake_engine engine([](const received_request&) { return reply::hang(); });
  collector<http_response> results;
  auto options = options_for(engine);
  options.max_connections = 1;
  docker::unix_http_client client(options);

  client.send(get("/hang", 2s), results.callback(1));
  REQUIRE(engine.wait_for_requests(1));
  const auto start = steady::now();
  client.send(get("/queued", 100ms), results.callback(2));
  REQUIRE(results.wait_calls(1));
  CHECK(steady::now() - start < 1s);
  REQUIRE(results.calls(2) == 1);
  CHECK(results.first(2).err().code == errc::timeout);
  CHECK(results.calls(1) == 0);
  CHECK(engine.request_count() == 1);  // the queued one never reached the engine
}

TEST_CASE("cancel an in-flight request: cancelled, exactly once", "[http_client]") {
  fake_engine engine([](const received_request&) { return reply::hang(); });
  collector<http_response> results;
  docker::unix_http_client client(options_for(engine));

  const auto id = client.send(get("/hang"), results.callback(1));
  REQUIRE(engine.wait_for_requests(1));
  client.cancel(id);
  REQUIRE(results.wait_calls(1, 2s));
  auto r = results.first(1);
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::cancelled);

  client.cancel(id);  // finished ids are ignored
  client.cancel(12345);
  CHECK(engine.wait_for_open_at_most(0));  // the connection was closed, not parked
  client.shutdown();
  CHECK(results.calls(1) == 1);
  CHECK(client.stats().open_connections == 0);
}

TEST_CASE("cancel a queued request: cancelled at once, the running one unaffected",
          "[http_client]") {
  fake_engine engine([](const received_request&) { return reply::hang(); });
  collector<http_response> results;
  auto options = options_for(engine);
  options.max_connections = 1;
  docker::unix_http_client client(options);

  const auto running = client.send(get("/running"), results.callback(1));
  const auto queued = client.send(get("/queued"), results.callback(2));
  REQUIRE(engine.wait_for_requests(1));
  REQUIRE(eventually([&] { return client.stats().queued_requests == 1; }));

  client.cancel(queued);
  REQUIRE(results.wait_calls(1, 2s));
  REQUIRE(results.calls(2) == 1);
  CHECK(results.first(2).err().code == errc::cancelled);
  CHECK(results.calls(1) == 0);
  CHECK(client.stats().queued_requests == 0);

  client.cancel(running);
  REQUIRE(results.wait_calls(2, 2s));
  CHECK(results.first(1).err().code == errc::cancelled);

  // The slot is free again, and the cancelled queued request never reached the engine.
  engine.set_handler([](const received_request&) { return reply::json(200, "{}"); });
  REQUIRE(get_now(client, "/after").ok());
  client.shutdown();
  CHECK(results.calls(1) == 1);
  CHECK(results.calls(2) == 1);
  const auto seen = engine.requests();
  REQUIRE(seen.size() == 2);
  CHECK(seen[0].target == "/running");
  CHECK(seen[1].target == "/after");
}

TEST_CASE("shutdown completes in-flight and queued requests with cancelled, promptly",
          "[http_client]") {
  fake_engine engine([](const received_request&) { return reply::hang(); });
  collector<http_response> results;
  auto options = options_for(engine);
  options.max_connections = 2;
  docker::unix_http_client client(options);

  for (int i = 0; i < 5; ++i) client.send(get("/hang"), results.callback(i));
  REQUIRE(engine.wait_for_requests(2));
  REQUIRE(eventually([&] { return client.stats().queued_requests == 3; }));

  const auto start = steady::now();
  client.shutdown();
  CHECK(steady::now() - start < 1s);
  REQUIRE(results.calls() == 5);  // all done by the time shutdown() returns
  for (int i = 0; i < 5; ++i) {
    CHECK(results.calls(i) == 1);
    CHECK(results.first(i).err().code == errc::cancelled);
  }
  const auto s = client.stats();
  CHECK(s.open_connections == 0);
  CHECK(s.idle_connections == 0);
  CHECK(s.active_requests == 0);
  CHECK(s.queued_requests == 0);

  // After shutdown: completes at once with cancelled; shutdown is idempotent.
  collector<http_response> late;
  client.send(get("/late"), late.callback(1));
  REQUIRE(late.calls(1) == 1);
  CHECK(late.first(1).err().code == errc::cancelled);
  client.shutdown();
  CHECK(engine.wait_for_open_at_most(0));
}

TEST_CASE("shutdown closes parked connections", "[http_client]") {
  fake_engine engine([](const received_request&) { return reply::json(200, "{}"); });
  docker::unix_http_client client(options_for(engine));
  REQUIRE(get_now(client, "/a").ok());
  CHECK(client.stats().idle_connections == 1);
  client.shutdown();
  CHECK(client.stats().open_connections == 0);
  CHECK(engine.wait_for_open_at_most(0));
}
