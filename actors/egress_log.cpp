// The egress proxy's decision log (see egress_log.hpp): one JSON object a line, written
// whole under a lock so lines from several threads never interleave.
#include "actors/egress_log.hpp"

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string_view>

#include <fcntl.h>
#include <unistd.h>

namespace corral::egress_detail {

namespace {

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      // Bytes beyond ASCII are escaped one by one: the line stays valid JSON whatever a
      // peer or an error message holds.
      std::array<char, 8> esc{};
      std::snprintf(esc.data(), esc.size(), "\\u%04x", c);
      out += esc.data();
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

}  // namespace

decision_log::decision_log(const std::string& path) {
  if (path.empty()) return;
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0 || !(file_ = ::fdopen(fd, "a"))) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("cannot open the egress log " + path + ": " + std::strerror(errno));
  }
}

decision_log::~decision_log() {
  if (file_) std::fclose(file_);
}

void decision_log::write(const log_entry& e) {
  if (!file_) return;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  // What a sandbox chose (its host, method, the reason quoting them) is cut to 256 bytes:
  // a line's size is never the sandbox's to pick.
  const auto cut = [](std::string_view v) { return json_string(v.substr(0, 256)); };
  std::string line = "{\"ts\":" + std::to_string(ms) + ",\"sandbox\":" + json_string(e.sandbox) +
                     ",\"host\":" + cut(e.host) + ",\"port\":" + std::to_string(e.port) +
                     ",\"method\":" + cut(e.method) + ",\"decision\":" + json_string(e.decision) +
                     ",\"why\":" + cut(e.why) + ",\"bytes_up\":" + std::to_string(e.bytes_up) +
                     ",\"bytes_down\":" + std::to_string(e.bytes_down) + "}\n";
  std::lock_guard lock(mutex_);
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

}  // namespace corral::egress_detail
