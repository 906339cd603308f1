// What the request-shape tests of docker::client share (client_requests_test.cpp,
// client_container_requests_test.cpp, client_stream_requests_test.cpp): the fake engine with a
// client of it, and readers of what the client sent. Test code only.
#pragma once

#include <simdjson.h>

#include <chrono>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "docker/client.hpp"
#include "tests/test_kit.hpp"
#include "tests/unit/fake_engine.hpp"

namespace corral::client_request_tests {

namespace docker = corral::docker;
using corral::test::fake_engine;
using corral::test::http_head;
using corral::test::mux_frame;
using corral::test::mux_header;
using corral::test::received_request;
using corral::test::reply;
using corral::test::url_decode;
using docker::errc;
using docker::result;
using namespace std::chrono_literals;

// The fake engine and a client of it. The client is declared last: it shuts down first.
struct engine_and_client {
  explicit engine_and_client(fake_engine::handler h = {})
      : engine(std::move(h)), client(options(engine)) {}

  static docker::client_options options(const fake_engine& e) {
    docker::client_options o;
    o.http.socket_path = e.socket_path();
    o.http.default_timeout = 5s;
    return o;
  }

  // Answers every request with `r` (copied per request).
  void answer(reply r) {
    engine.set_handler([r](const received_request&) { return r; });
  }

  fake_engine engine;
  docker::client client;
};

template <class T>
std::string why(const result<T>& r) {
  return r.ok() ? std::string("ok") : r.err().describe();
}

// Parses a request body as JSON for field checks.
struct json_body {
  explicit json_body(const std::string& text) : doc(parser.parse(text)) {}
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
};

using corral::test::eventually;

inline std::vector<std::string> strings(simdjson::dom::element array) {
  std::vector<std::string> out;
  for (auto item : array.get_array()) out.emplace_back(std::string_view(item));
  return out;
}

}  // namespace corral::client_request_tests
