// The egress proxy's decision log (internal to actors/egress_*.cpp): a JSON line per decision
// or connection end, appended to the operator's file. Apart from the proxy because what may
// be written there (names, reasons, counts; never a header value) is a rule of its own.
#pragma once

#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>

namespace corral::egress_detail {

struct log_entry {
  std::string sandbox, host, method, decision, why;
  uint16_t port = 0;
  uint64_t bytes_up = 0, bytes_down = 0;
};

class decision_log {
 public:
  // Appends to `path` (made 0600); an empty path logs nothing. Throws std::runtime_error if
  // the file cannot be opened.
  explicit decision_log(const std::string& path);
  ~decision_log();
  decision_log(const decision_log&) = delete;
  decision_log& operator=(const decision_log&) = delete;

  // Never given a header value: entries hold names, reasons and counts only.
  void write(const log_entry& e);

 private:
  std::mutex mutex_;
  std::FILE* file_ = nullptr;
};

}  // namespace corral::egress_detail
