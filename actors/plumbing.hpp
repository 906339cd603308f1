// Plumbing the actors share (the supervisor, the container actor, the router): the wall
// clock in the unit sandbox_info uses, work that waits until an actor is ready to serve, and
// answers gathered from several peers into one. One copy of each, so the actors cannot drift
// on them. Everything here runs inside one actor: nothing is thread-safe, nothing needs to be.
// (Calls that die with their peer are actors/pending_calls.hpp.)
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

namespace corral::actors {

// Unix time in milliseconds: sandbox_info's created_ms and last_used_ms.
inline int64_t unix_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Requests that came before their actor could serve them (the supervisor adopting at
// start-up, the router's first connections), run in arrival order once it can.
class deferred_work {
 public:
  void add(std::function<void()> work) { waiting_.push_back(std::move(work)); }

  // Runs what waited; work added meanwhile waits for the next call.
  void run_all() {
    auto now = std::move(waiting_);
    waiting_.clear();
    for (auto& work : now) work();
  }

  std::size_t size() const { return waiting_.size(); }

 private:
  std::vector<std::function<void()>> waiting_;
};

// Answers from several peers gathered into one value. The sender holds one part until it
// has sent every request (its own done()); each request adds a part (expect()) that its
// answer or its failure ends (done()); the last part to end runs `finish` with the value.
// Shared by the answer handlers (gather() makes it).
template <class T>
class fan_in {
 public:
  fan_in(std::function<void(T&)> finish, T initial)
      : value_(std::move(initial)), finish_(std::move(finish)) {}

  T& value() { return value_; }
  void expect() { ++open_; }
  void done() {
    if (--open_ == 0) finish_(value_);
  }

 private:
  T value_;
  std::size_t open_ = 1;  // the sender's own part
  std::function<void(T&)> finish_;
};

template <class T>
std::shared_ptr<fan_in<T>> gather(std::function<void(T&)> finish, T initial = T{}) {
  return std::make_shared<fan_in<T>>(std::move(finish), std::move(initial));
}

}  // namespace corral::actors
