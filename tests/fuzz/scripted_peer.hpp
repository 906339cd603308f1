// The far end of a unix socket for the fuzz targets that go through docker/http_client: it
// accepts one connection at a time, reads the request (head and Content-Length body), writes
// the current input's bytes verbatim, half-closes, and drains until the client closes. Every
// connection of one input gets the same bytes (a retry sees what the first try saw).
//
// One peer lives for the whole fuzzing run (a thread and a socket per input would dominate
// the time). The harness sets the reply, runs the client call and waits for its completion
// before the next input, so replies never mix.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace corral::fuzz {

class scripted_peer {
 public:
  scripted_peer() {
    path_ = "/tmp/corral-fuzz-" + std::to_string(::getpid()) + ".sock";
    ::unlink(path_.c_str());
    listener_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listener_, 64) != 0) {
      std::perror("scripted_peer: cannot listen");
      std::abort();
    }
    thread_ = std::thread([this] { serve(); });
    thread_.detach();  // lives until the process ends (libFuzzer exits without unwinding)
  }

  const std::string& path() const { return path_; }

  void set_reply(std::string_view bytes) {
    std::lock_guard<std::mutex> guard(mutex_);
    reply_.assign(bytes.data(), bytes.size());
  }

 private:
  void serve() {
    for (;;) {
      const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::string reply;
      {
        std::lock_guard<std::mutex> guard(mutex_);
        reply = reply_;
      }
      read_request(fd);
      write_all(fd, reply);
      ::shutdown(fd, SHUT_WR);
      drain(fd);
      ::close(fd);
    }
  }

  // Reads up to the end of the head and then Content-Length bytes of body (at most 1 MiB).
  static void read_request(int fd) {
    std::string got;
    char buf[4096];
    std::size_t need = std::string::npos;
    while (got.size() < need) {
      if (!readable(fd, 2000)) return;
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) return;
      got.append(buf, static_cast<std::size_t>(n));
      if (need == std::string::npos) {
        const auto end = got.find("\r\n\r\n");
        if (end == std::string::npos) continue;
        std::size_t length = 0;
        const auto cl = got.find("Content-Length: ");
        if (cl != std::string::npos && cl < end)
          length = std::strtoul(got.c_str() + cl + 16, nullptr, 10);
        need = end + 4 + std::min<std::size_t>(length, 1 << 20);
      }
    }
  }

  static void write_all(int fd, std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
  }

  // Reads (an upload, a pipelined request) until the client closes, for at most 5 s.
  static void drain(int fd) {
    char buf[4096];
    for (int i = 0; i < 50 && readable(fd, 100); ++i) {
      if (::read(fd, buf, sizeof buf) <= 0) return;
    }
  }

  static bool readable(int fd, int ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, ms) > 0;
  }

  std::string path_;
  int listener_ = -1;
  std::thread thread_;
  std::mutex mutex_;
  std::string reply_;
};

}  // namespace corral::fuzz
