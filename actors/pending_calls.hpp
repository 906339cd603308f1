// Requests an actor sent to its peers and not answered yet, by peer. CAF 0.17 has no broken
// promises: a peer that dies holding a request answers nothing, and only a timeout would
// fire. The owner fails a gone peer's calls at once, from its down handler.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <utility>

#include <caf/actor_addr.hpp>
#include <caf/error.hpp>

namespace corral::actors {

class pending_calls {
 public:
  using fail_fn = std::function<void(const caf::error&)>;

  // Registers a call to `peer`; the id goes with its answer.
  uint64_t add(const caf::actor_addr& peer, fail_fn fail) {
    calls_[peer].emplace(++last_, std::move(fail));
    return last_;
  }

  // The answer (value or error) for call `id` came: true if the call was still open, so the
  // caller handles it; false if it was failed already (the peer went down first).
  bool take(const caf::actor_addr& peer, uint64_t id) {
    auto it = calls_.find(peer);
    if (it == calls_.end() || it->second.erase(id) == 0) return false;
    if (it->second.empty()) calls_.erase(it);
    return true;
  }

  // `peer` is gone: every call still open on it fails with `err`.
  void fail_all(const caf::actor_addr& peer, const caf::error& err) {
    auto it = calls_.find(peer);
    if (it == calls_.end()) return;
    auto open = std::move(it->second);
    calls_.erase(it);
    for (auto& [id, fail] : open) fail(err);
  }

  std::size_t size() const {
    std::size_t n = 0;
    for (const auto& [peer, open] : calls_) n += open.size();
    return n;
  }

 private:
  uint64_t last_ = 0;
  std::map<caf::actor_addr, std::map<uint64_t, fail_fn>> calls_;
};

}  // namespace corral::actors
