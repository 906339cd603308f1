// Waiting on a condition another thread makes true (a client's stats, updated on its I/O
// thread): polled every millisecond, up to a limit. The answer is the condition's.
#pragma once

#include <chrono>
#include <thread>

namespace corral::unit_tests {

template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(2)) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return pred();
}

}  // namespace corral::unit_tests
