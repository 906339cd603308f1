// unix_http_client's hijacked (upgraded) streams against the scripted fake engine: stdin
// upload, half-close, output, deadlines and cancel, and requests racing shutdown. Apart from
// http_client_test.cpp by area.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/http_client_fixture.hpp"

using namespace corral::http_client_tests;

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
