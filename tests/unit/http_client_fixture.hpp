// What the tests of unix_http_client share (http_client_test.cpp,
// http_client_failures_test.cpp, http_client_upgrade_test.cpp): requests against the scripted
// fake engine, a collector of completions, chunked-body makers. Test code only.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "docker/blocking.hpp"
#include "docker/http_client.hpp"
#include "tests/test_kit.hpp"
#include "tests/unit/fake_engine.hpp"

namespace corral::http_client_tests {

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

inline docker::http_client_options options_for(const fake_engine& engine) {
  docker::http_client_options o;
  o.socket_path = engine.socket_path();
  o.default_timeout = 5s;  // a hung test fails in seconds, not minutes
  return o;
}

inline http_request get(std::string target, std::chrono::milliseconds timeout = 0ms) {
  http_request r;
  r.method = http_method::get;
  r.target = std::move(target);
  r.timeout = timeout;
  return r;
}

inline result<http_response> send(docker::unix_http_client& client, http_request request) {
  return docker::blocking<http_response>(
      [&](auto done) { client.send(std::move(request), std::move(done)); });
}

inline result<http_response> get_now(docker::unix_http_client& client, std::string target,
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

using corral::test::eventually;

inline std::string chunk(std::string_view data) {
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  return size + std::string(data) + "\r\n";
}

inline const std::string chunked_head =
    http_head(200, {{"Content-Type", "text/plain"}, {"Transfer-Encoding", "chunked"}});

}  // namespace corral::http_client_tests
