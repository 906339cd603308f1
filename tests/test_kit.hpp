// Small helpers the suites share (the real-engine fixtures tests/runtime/runtime_fixture.hpp
// and tests/node/node_process.hpp, the unit and scale tests' waits): one copy of each.
#pragma once

#include <atomic>
#include <cctype>
#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include <caf/expected.hpp>
#include <catch2/catch.hpp>

#include "messages/errors.hpp"

namespace corral::test {

inline bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// Polls `f` every `step` until it returns true or `limit` passes; returns the last answer.
template <class F>
bool eventually(std::chrono::milliseconds limit, F&& f,
                std::chrono::milliseconds step = std::chrono::milliseconds(100)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (f()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(step);
  }
}

// The same for a condition this process makes true on another thread (a client's stats, a
// log line, the fake engine's state): polled every 5 ms, for up to 5 s.
template <class F>
bool eventually(F&& f) {
  return eventually(std::chrono::seconds(5), std::forward<F>(f), std::chrono::milliseconds(5));
}

// The running test's name as a name part: lower-case letters and digits, other runs as one
// '-', at most `max` characters ("test" when nothing is left). Names made from it tell which
// test made a leftover container.
inline std::string test_slug(std::size_t max) {
  std::string slug;
  for (unsigned char c : Catch::getResultCapture().getCurrentTestName()) {
    if (slug.size() >= max) break;
    if (std::isalnum(c))
      slug += static_cast<char>(std::tolower(c));
    else if (!slug.empty() && slug.back() != '-')
      slug += '-';
  }
  while (!slug.empty() && slug.back() == '-') slug.pop_back();
  return slug.empty() ? std::string("test") : slug;
}

// "ok", or the error as corral renders it: the text a failed check shows.
template <class T>
std::string what(const caf::expected<T>& x) {
  return x ? std::string("ok") : messages::describe(x.error());
}

}  // namespace corral::test
