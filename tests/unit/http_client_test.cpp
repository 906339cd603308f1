// unix_http_client against the scripted fake engine: framing, pooling, deadlines,
// cancellation, shutdown, malformed input, error bodies, hijacked streams.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "docker/blocking.hpp"
#include "docker/http_client.hpp"
#include "tests/unit/eventually.hpp"
#include "tests/unit/fake_engine.hpp"

namespace docker = corral::docker;
using corral::test::fake_engine;
using corral::test::http_head;
using corral::test::mux_frame;
using corral::test::received_request;
using corral::test::reply;
using docker::errc;
using docker::http_method;
using docker::http_request;
using docker::http_response;
using docker::result;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

docker::http_client_options options_for(const fake_engine& engine) {
  docker::http_client_options o;
  o.socket_path = engine.socket_path();
  o.default_timeout = 5s;  // a hung test fails in seconds, not minutes
  return o;
}

http_request get(std::string target, std::chrono::milliseconds timeout = 0ms) {
  http_request r;
  r.method = http_method::get;
  r.target = std::move(target);
  r.timeout = timeout;
  return r;
}

result<http_response> send(docker::unix_http_client& client, http_request request) {
  return docker::blocking<http_response>(
      [&](auto done) { client.send(std::move(request), std::move(done)); });
}

result<http_response> get_now(docker::unix_http_client& client, std::string target,
                              std::chrono::milliseconds timeout = 0ms) {
  return send(client, get(std::move(target), timeout));
}

// Collects completions by key and counts them, to check "exactly once". Declare it before
// the client, so it outlives the client's shutdown (which may still complete requests).
template <class T>
class collector {
 public:
  std::function<void(result<T>)> callback(int key) {
    return [this, key](result<T> r) {
      {
        std::lock_guard<std::mutex> guard(mutex_);
        results_[key].push_back(std::move(r));
        ++calls_;
      }
      changed_.notify_all();
    };
  }

  bool wait_calls(std::size_t n, std::chrono::milliseconds timeout = 5s) {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return calls_ >= n; });
  }

  std::size_t calls(int key) {
    std::lock_guard<std::mutex> guard(mutex_);
    auto it = results_.find(key);
    return it == results_.end() ? 0 : it->second.size();
  }

  std::size_t calls() {
    std::lock_guard<std::mutex> guard(mutex_);
    return calls_;
  }

  // The first result for key (which must have completed).
  result<T> first(int key) {
    std::lock_guard<std::mutex> guard(mutex_);
    return results_.at(key).front();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<int, std::vector<result<T>>> results_;
  std::size_t calls_ = 0;
};

using corral::unit_tests::eventually;

std::string chunk(std::string_view data) {
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  return size + std::string(data) + "\r\n";
}

const std::string chunked_head =
    http_head(200, {{"Content-Type", "text/plain"}, {"Transfer-Encoding", "chunked"}});

}  // namespace

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

// -- transport failures -------------------------------------------------------------------

TEST_CASE("a missing socket is engine_unavailable naming the path", "[http_client]") {
  docker::http_client_options options;
  options.socket_path = "/tmp/corral-unit-no-such-dir/docker.sock";
  docker::unix_http_client client(options);
  auto r = get_now(client, "/_ping");
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::engine_unavailable);
  CHECK(r.err().message.find("/tmp/corral-unit-no-such-dir/docker.sock") != std::string::npos);
  CHECK(client.stats().open_connections == 0);
}

TEST_CASE("an overlong socket path is engine_unavailable, not a crash", "[http_client]") {
  docker::http_client_options options;
  options.socket_path = "/tmp/" + std::string(200, 'x') + "/docker.sock";
  docker::unix_http_client client(options);
  auto r = get_now(client, "/_ping");
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::engine_unavailable);
  CHECK(client.stats().open_connections == 0);
}

TEST_CASE("a status below 100 is a protocol error, not a success", "[http_client]") {
  // Found by the http_response fuzz target: Beast takes any three digits as the status.
  fake_engine engine([](const received_request&) {
    return reply::raw("HTTP/1.1 000 Nothing\r\nContent-Length: 0\r\n\r\n");
  });
  docker::unix_http_client client(options_for(engine));
  auto r = get_now(client, "/x");
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::protocol);
  CHECK(r.err().message.find("status 0") != std::string::npos);
}

TEST_CASE("an engine that closes without answering is engine_unavailable", "[http_client]") {
  fake_engine engine([](const received_request&) { return reply::close(); });
  docker::unix_http_client client(options_for(engine));
  auto r = get_now(client, "/x");
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::engine_unavailable);
  CHECK(r.err().message.find("without answering") != std::string::npos);
}

TEST_CASE("engine reset mid-request is engine_unavailable", "[http_client]") {
  fake_engine engine;
  // Reset as soon as the head is in, leaving the body unread (so the close is abortive).
  engine.set_header_handler(
      [](const received_request&) -> std::optional<reply> { return reply::reset(); });
  docker::unix_http_client client(options_for(engine));

  SECTION("while the client still writes a large body") {
    http_request r;
    r.method = http_method::put;
    r.target = "/archive";
    r.body = std::string(8u << 20, 't');
    r.content_type = "application/x-tar";
    auto out = send(client, r);
    REQUIRE_FALSE(out.ok());
    CHECK(out.err().code == errc::engine_unavailable);
  }
  SECTION("while the client waits for the answer") {
    http_request r;
    r.method = http_method::post;
    r.target = "/small";
    r.body = "{}";
    r.content_type = "application/json";
    auto out = send(client, r);
    REQUIRE_FALSE(out.ok());
    CHECK(out.err().code == errc::engine_unavailable);
  }
  CHECK(engine.last_request().body_read == false);
  CHECK(eventually([&] { return client.stats().open_connections == 0; }));
}

TEST_CASE("a parked connection the engine closed is retried on a fresh one", "[http_client]") {
  // The engine answers keep-alive, then drops the connection behind the client's back.
  fake_engine engine([](const received_request&) { return reply::json(200, "{}").then_close(); });
  docker::unix_http_client client(options_for(engine));

  REQUIRE(get_now(client, "/first").ok());
  REQUIRE(engine.wait_for_open_at_most(0));
  CHECK(client.stats().idle_connections == 1);

  auto r = get_now(client, "/second");
  REQUIRE(r.ok());
  CHECK(engine.accepted() == 2);
  CHECK(engine.request_count() == 2);
  CHECK(client.stats().connections_opened == 2);
}

TEST_CASE("stale retry: all parked connections dead (engine restarted) still succeeds",
          "[http_client]") {
  fake_engine engine(
      [](const received_request&) { return reply::json(200, "{}").after(30ms).then_close(); });
  collector<http_response> results;
  docker::unix_http_client client(options_for(engine));

  // Two concurrent requests park two connections; the engine then closes both.
  client.send(get("/a"), results.callback(1));
  client.send(get("/b"), results.callback(2));
  REQUIRE(results.wait_calls(2));
  REQUIRE(engine.wait_for_open_at_most(0));
  REQUIRE(client.stats().idle_connections == 2);

  engine.set_handler([](const received_request&) { return reply::json(200, "{}"); });
  auto r = get_now(client, "/after-restart");
  REQUIRE(r.ok());
  CHECK(engine.accepted() == 3);
}

TEST_CASE("stale retry happens only once", "[http_client]") {
  fake_engine engine([](const received_request&) { return reply::json(200, "{}").then_close(); });
  docker::unix_http_client client(options_for(engine));

  REQUIRE(get_now(client, "/first").ok());
  REQUIRE(engine.wait_for_open_at_most(0));
  // From now on the engine accepts, reads the request and hangs up without a word.
  engine.set_handler([](const received_request&) { return reply::close(); });

  auto r = get_now(client, "/second");
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::engine_unavailable);
  CHECK(r.err().message.find("without answering") != std::string::npos);
  CHECK(engine.accepted() == 2);       // the parked one, then exactly one fresh one
  CHECK(engine.request_count() == 2);  // /first, and /second once on the fresh one
}

TEST_CASE("a stale connection is not retried once the response started", "[http_client]") {
  fake_engine engine([](const received_request&) { return reply::json(200, "{}"); });
  docker::unix_http_client client(options_for(engine));
  REQUIRE(get_now(client, "/first").ok());

  // On the parked connection: half a head, then the engine goes away.
  engine.set_handler([](const received_request&) {
    return reply::raw("HTTP/1.1 200 OK\r\nContent-Le").then_close();
  });
  auto r = get_now(client, "/second");
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::protocol);
  CHECK(engine.accepted() == 1);
  CHECK(engine.request_count() == 2);
}

// -- malformed input ----------------------------------------------------------------------

TEST_CASE("a socket that speaks garbage is a protocol error", "[http_client]") {
  SECTION("garbage, then close") {
    fake_engine engine([](const received_request&) {
      return reply::raw("SSH-2.0-OpenSSH_9.2p1\r\n").then_close();
    });
    docker::unix_http_client client(options_for(engine));
    auto r = get_now(client, "/x");
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::protocol);
  }
  SECTION("a complete head that is not HTTP, connection kept open") {
    fake_engine engine([](const received_request&) {
      return reply::raw("hello there, this is not HTTP\r\n\r\n").then_hang();
    });
    docker::unix_http_client client(options_for(engine));
    const auto start = steady::now();
    auto r = get_now(client, "/x");
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::protocol);
    CHECK(steady::now() - start < 2s);  // decided on the bytes, not by the deadline
  }
  SECTION("binary noise") {
    std::string noise;
    for (int i = 0; i < 4096; ++i) noise.push_back(static_cast<char>((i * 7919) & 0xFF));
    fake_engine engine([&](const received_request&) { return reply::raw(noise).then_close(); });
    docker::unix_http_client client(options_for(engine));
    auto r = get_now(client, "/x");
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::protocol);
  }
}

TEST_CASE("a bad chunk size is a protocol error", "[http_client]") {
  const std::string body =
      GENERATE(std::string("zz\r\nhello\r\n0\r\n\r\n"), std::string("-5\r\nhello\r\n0\r\n\r\n"),
               std::string("fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"));
  fake_engine engine(
      [&](const received_request&) { return reply::raw(chunked_head + body).then_hang(); });
  docker::unix_http_client client(options_for(engine));
  auto r = get_now(client, "/x");
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::protocol);
  CHECK(eventually([&] { return client.stats().open_connections == 0; }));
}

TEST_CASE("an endless response head is a protocol error, read no further", "[http_client]") {
  auto options_with = [](const fake_engine& e) {
    auto o = options_for(e);
    o.max_header_bytes = 8192;
    return o;
  };
  SECTION("endless header fields") {
    fake_engine engine([](const received_request&) {
      return reply::raw("HTTP/1.1 200 OK\r\n")
          .then_write_forever("X-Filler: " + std::string(1000, 'a') + "\r\n");
    });
    docker::unix_http_client client(options_with(engine));
    auto r = get_now(client, "/x");
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::protocol);
    CHECK(r.err().message.find("8192") != std::string::npos);
    CHECK(engine.wait_for_open_at_most(0));  // the client hung up; the engine stopped writing
  }
  SECTION("one endless line") {
    fake_engine engine([](const received_request&) {
      return reply::raw("HTTP/1.1 200 OK\r\nX-Filler: ").then_write_forever(std::string(4096, 'b'));
    });
    docker::unix_http_client client(options_with(engine));
    auto r = get_now(client, "/x");
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::protocol);
    CHECK(engine.wait_for_open_at_most(0));
  }
}

TEST_CASE("a connection closed mid-body is a protocol error", "[http_client]") {
  SECTION("content-length body cut short") {
    fake_engine engine([](const received_request&) {
      return reply::raw(http_head(200, {{"Content-Length", "100"}}) + std::string(50, 'b'))
          .then_close();
    });
    docker::unix_http_client client(options_for(engine));
    auto r = get_now(client, "/x");
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::protocol);
    CHECK(r.err().message.find("mid-response") != std::string::npos);
  }
  SECTION("cut_after inside the body") {
    fake_engine engine([](const received_request&) {
      return reply::text(200, std::string(1000, 'c')).cut_after(300);
    });
    docker::unix_http_client client(options_for(engine));
    auto r = get_now(client, "/x");
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::protocol);
  }
  SECTION("closed inside the head") {
    fake_engine engine(
        [](const received_request&) { return reply::text(200, "hello").cut_after(20); });
    docker::unix_http_client client(options_for(engine));
    auto r = get_now(client, "/x");
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::protocol);
  }
}

TEST_CASE("a truncated chunked body is a protocol error", "[http_client]") {
  const std::string body = GENERATE(std::string("5\r\nhello\r\n"),        // no last chunk
                                    std::string("a\r\nhel"),              // inside a chunk
                                    std::string("5\r\nhello\r\n0\r\n"));  // no final CRLF
  fake_engine engine(
      [&](const received_request&) { return reply::raw(chunked_head + body).then_close(); });
  docker::unix_http_client client(options_for(engine));
  auto r = get_now(client, "/x");
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::protocol);
}

// -- error responses ----------------------------------------------------------------------

TEST_CASE("error statuses map to errc with the engine's message", "[http_client]") {
  SECTION("500 with a non-JSON body keeps the text") {
    fake_engine engine(
        [](const received_request&) { return reply::text(500, "internal kaboom\n"); });
    docker::unix_http_client client(options_for(engine));
    auto r = get_now(client, "/x");
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::engine_error);
    CHECK(r.err().http_status == 500);
    CHECK(r.err().message == "internal kaboom");
  }
  SECTION("500 with Docker's JSON error") {
    fake_engine engine(
        [](const received_request&) { return reply::json(500, R"({"message":"boom"})"); });
    docker::unix_http_client client(options_for(engine));
    auto r = get_now(client, "/x");
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::engine_error);
    CHECK(r.err().message == "boom");
  }
  SECTION("400, 404, 409, 503") {
    fake_engine engine([](const received_request& req) {
      return reply::error(std::stoi(req.target.substr(1)), "because " + req.target.substr(1));
    });
    docker::unix_http_client client(options_for(engine));
    const std::vector<std::pair<int, errc>> cases = {{400, errc::invalid_request},
                                                     {404, errc::not_found},
                                                     {409, errc::conflict},
                                                     {503, errc::engine_error}};
    for (const auto& [status, code] : cases) {
      auto r = get_now(client, "/" + std::to_string(status));
      REQUIRE_FALSE(r.ok());
      CHECK(r.err().code == code);
      CHECK(r.err().http_status == status);
      CHECK(r.err().message == "because " + std::to_string(status));
    }
    // Error bodies are read to the end: the connection stays usable and is reused.
    CHECK(engine.accepted() == 1);
  }
  SECTION("a chunked error body") {
    fake_engine engine([](const received_request&) {
      return reply::chunked(404, {R"({"messa)", R"(ge":"No such container: x"})"}, 5ms);
    });
    docker::unix_http_client client(options_for(engine));
    auto r = get_now(client, "/x");
    REQUIRE_FALSE(r.ok());
    CHECK(r.err().code == errc::not_found);
    CHECK(r.err().message == "No such container: x");
  }
}

TEST_CASE("an error body over max_error_body is cut, and read to its end", "[http_client]") {
  fake_engine engine(
      [](const received_request&) { return reply::text(500, std::string(100000, 'x')); });
  auto options = options_for(engine);
  options.max_error_body = 1000;
  docker::unix_http_client client(options);

  auto r = get_now(client, "/x");
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::engine_error);
  CHECK(r.err().message == std::string(1000, 'x'));
  engine.set_handler([](const received_request&) { return reply::json(200, "{}"); });
  REQUIRE(get_now(client, "/y").ok());
}

TEST_CASE("send(): a 4 GB Content-Length is too_large at once", "[http_client]") {
  // The engine announces 4 GiB and sends nothing more: the client must not wait for it, nor
  // allocate for it.
  fake_engine engine([](const received_request&) {
    return reply::raw(http_head(200, {{"Content-Length", "4294967296"}})).then_hang();
  });
  docker::unix_http_client client(options_for(engine));
  const auto start = steady::now();
  auto r = get_now(client, "/huge");
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::too_large);
  CHECK(steady::now() - start < 1s);
  CHECK(eventually([&] { return client.stats().open_connections == 0; }));
}

TEST_CASE("send(): a chunked body over max_buffered_body is too_large", "[http_client]") {
  fake_engine engine([](const received_request&) {
    return reply::chunked(200, std::vector<std::string>(50, std::string(100, 'z')));
  });
  auto options = options_for(engine);
  options.max_buffered_body = 1024;
  docker::unix_http_client client(options);
  auto r = get_now(client, "/big");
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::too_large);

  // stream() has no such cap: the sink decides.
  std::size_t seen = 0;
  auto s = docker::blocking<docker::http_response_head>([&](auto done) {
    client.stream(
        get("/big"),
        [&](std::string_view piece) -> std::optional<docker::error> {
          seen += piece.size();
          return std::nullopt;
        },
        std::move(done));
  });
  REQUIRE(s.ok());
  CHECK(seen == 5000);
}

// -- hijacked streams ---------------------------------------------------------------------

namespace {

struct raw_outcome {
  result<docker::http_response_head> head;
  std::string bytes;
  int status_seen = 0;
};

raw_outcome run_upgraded(docker::unix_http_client& client, std::optional<std::string> upload,
                         std::chrono::milliseconds timeout = 0ms) {
  http_request r;
  r.method = http_method::post;
  r.target = "/v1.41/exec/abc/start";
  r.body = R"({"Detach":false,"Tty":false})";
  r.content_type = "application/json";
  r.upgrade = true;
  r.upload = std::move(upload);
  r.timeout = timeout;
  std::string bytes;
  int status = 0;
  auto head = docker::blocking<docker::http_response_head>([&](auto done) {
    client.stream(
        std::move(r),
        [&](std::string_view piece) -> std::optional<docker::error> {
          bytes += piece;
          return std::nullopt;
        },
        std::move(done), [&](const docker::http_response_head& h) { status = h.status; });
  });
  return raw_outcome{std::move(head), std::move(bytes), status};
}

}  // namespace

TEST_CASE("upgraded stream: stdin upload, half-close, echoed output", "[http_client]") {
  fake_engine engine([](const received_request&) {
    return reply::upgraded([](const std::string& upload) {
      return mux_frame(1, "echo:" + upload) + mux_frame(2, "warning\n");
    });
  });
  docker::unix_http_client client(options_for(engine));

  auto out = run_upgraded(client, std::string("hello stdin\n"));
  REQUIRE(out.head.ok());
  CHECK(out.status_seen == 101);
  CHECK(out.head->status == 101);
  CHECK(out.bytes == mux_frame(1, "echo:hello stdin\n") + mux_frame(2, "warning\n"));

  const auto req = engine.last_request();
  CHECK(req.method == "POST");
  CHECK(req.header("connection") == "Upgrade");
  CHECK(req.header("upgrade") == "tcp");
  CHECK(req.body == R"({"Detach":false,"Tty":false})");
  // A hijacked connection is never parked for reuse.
  CHECK(eventually([&] { return client.stats().open_connections == 0; }));
}

TEST_CASE("upgraded stream: a large upload crosses the socket buffer", "[http_client]") {
  std::string upload;
  for (int i = 0; i < 300000; ++i) upload.push_back(static_cast<char>('a' + i % 26));
  fake_engine engine([](const received_request&) {
    return reply::upgraded([](const std::string& in) {
      return mux_frame(1, std::to_string(in.size()) + ":" + in.substr(in.size() - 5));
    });
  });
  docker::unix_http_client client(options_for(engine));
  auto out = run_upgraded(client, upload);
  REQUIRE(out.head.ok());
  CHECK(out.bytes == mux_frame(1, "300000:" + upload.substr(upload.size() - 5)));
}

TEST_CASE("upgraded stream without upload; stream bytes arriving with the head", "[http_client]") {
  const std::string frames = mux_frame(1, "out") + mux_frame(2, "err") + mux_frame(1, "more");
  SECTION("separate writes") {
    fake_engine engine([&](const received_request&) {
      return reply::upgraded([&](const std::string& in) { return in.empty() ? frames : "?"; },
                             /*read_stdin=*/false);
    });
    docker::unix_http_client client(options_for(engine));
    auto out = run_upgraded(client, std::nullopt);
    REQUIRE(out.head.ok());
    CHECK(out.bytes == frames);
  }
  SECTION("head and frames in one write") {
    fake_engine engine([&](const received_request&) {
      return reply::raw(http_head(101, {{"Connection", "Upgrade"}, {"Upgrade", "tcp"}}) + frames)
          .then_close();
    });
    docker::unix_http_client client(options_for(engine));
    auto out = run_upgraded(client, std::nullopt);
    REQUIRE(out.head.ok());
    CHECK(out.bytes == frames);
  }
  SECTION("200 with a raw stream (engines that answer without 101)") {
    fake_engine engine([&](const received_request&) {
      return reply::raw(http_head(200, {{"Content-Type", "application/vnd.docker.raw-stream"}}) +
                        frames)
          .then_close();
    });
    docker::unix_http_client client(options_for(engine));
    auto out = run_upgraded(client, std::nullopt);
    REQUIRE(out.head.ok());
    CHECK(out.head->status == 200);
    CHECK(out.bytes == frames);
  }
}

TEST_CASE("upgraded stream: an error status is an error with the message", "[http_client]") {
  fake_engine engine(
      [](const received_request&) { return reply::error(409, "container abc is not running"); });
  docker::unix_http_client client(options_for(engine));
  auto out = run_upgraded(client, std::string("x"));
  REQUIRE_FALSE(out.head.ok());
  CHECK(out.head.err().code == errc::conflict);
  CHECK(out.head.err().message == "container abc is not running");
  CHECK(out.bytes.empty());
}

TEST_CASE("upgraded stream: the deadline and cancel end it", "[http_client]") {
  fake_engine engine([](const received_request&) {
    return reply::raw(http_head(101, {{"Connection", "Upgrade"}, {"Upgrade", "tcp"}}) +
                      mux_frame(1, "started\n"))
        .then_hang();
  });
  docker::unix_http_client client(options_for(engine));

  SECTION("deadline") {
    auto out = run_upgraded(client, std::nullopt, 200ms);
    REQUIRE_FALSE(out.head.ok());
    CHECK(out.head.err().code == errc::timeout);
    CHECK(out.bytes == mux_frame(1, "started\n"));
  }
  SECTION("cancel") {
    collector<docker::http_response_head> results;
    http_request r;
    r.method = http_method::post;
    r.target = "/exec";
    r.upgrade = true;
    std::atomic<bool> got_output{false};
    const auto id = client.stream(
        std::move(r),
        [&](std::string_view) -> std::optional<docker::error> {
          got_output = true;
          return std::nullopt;
        },
        results.callback(1));
    REQUIRE(eventually([&] { return got_output.load(); }));
    client.cancel(id);
    REQUIRE(results.wait_calls(1, 2s));
    CHECK(results.first(1).err().code == errc::cancelled);
    client.shutdown();
    CHECK(results.calls(1) == 1);
  }
}

TEST_CASE("requests racing shutdown from another thread each complete exactly once",
          "[http_client]") {
  fake_engine engine([](const received_request&) { return reply::json(200, "{}"); });
  for (int round = 0; round < 20; ++round) {
    collector<http_response> results;
    auto client = std::make_unique<docker::unix_http_client>(options_for(engine));
    std::atomic<int> submitted{0};
    std::thread submitter([&] {
      for (int i = 0; i < 200; ++i) {
        client->send(get("/race"), results.callback(i));
        ++submitted;
      }
    });
    while (submitted < 20) std::this_thread::yield();
    client->shutdown();
    submitter.join();
    REQUIRE(results.wait_calls(200, 2s));
    for (int i = 0; i < 200; ++i) REQUIRE(results.calls(i) == 1);
  }
}

TEST_CASE("upgraded stream: the engine ends the stream without reading all stdin",
          "[http_client]") {
  // A process that exits without reading its stdin: the engine writes the output and closes
  // while our upload is still going. The output is what counts.
  fake_engine engine([](const received_request&) {
    return reply::upgraded([](const std::string&) { return mux_frame(1, "bye\n"); },
                           /*read_stdin=*/false);
  });
  docker::unix_http_client client(options_for(engine));
  auto out = run_upgraded(client, std::string(4u << 20, 'i'));
  INFO((out.head.ok() ? std::string("ok") : out.head.err().describe()));
  CHECK(out.bytes == mux_frame(1, "bye\n"));
  CHECK(out.head.ok());
}
