// unix_http_client against the scripted fake engine when things go wrong: transport failures
// and stale connections, malformed responses, error statuses and oversized bodies. Apart from
// http_client_test.cpp (the working paths) by area.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/http_client_fixture.hpp"

using namespace corral::http_client_tests;

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
