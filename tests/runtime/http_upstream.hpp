// A test upstream for egress: an HTTP server on 127.0.0.1 (never another address), plain or
// over TLS, that records what reached it. Used by the runtime and node egress tests.
#pragma once

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace corral::runtime_tests {

// An HTTP server on 127.0.0.1 (an ephemeral port), plain or over TLS with the given context:
// "/hello" answers a line, "/big" 1 MiB; it keeps every request head it got, to show what
// reached it.
class upstream {
 public:
  explicit upstream(SSL_CTX* tls = nullptr) : tls_(tls) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(fd_, 16) != 0 || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len))
      throw std::runtime_error("upstream: cannot listen on 127.0.0.1");
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~upstream() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }
  std::vector<std::string> heads() {
    std::lock_guard<std::mutex> guard(mutex_);
    return heads_;
  }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      const timeval five{5, 0};
      ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &five, sizeof five);
      ::setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &five, sizeof five);
      SSL* ssl = nullptr;
      if (tls_) {
        ssl = SSL_new(tls_);
        SSL_set_fd(ssl, c);
        if (SSL_accept(ssl) != 1) {
          SSL_free(ssl);
          ::close(c);
          continue;
        }
      }
      auto receive = [&](char* buf, std::size_t n) -> ssize_t {
        return ssl ? SSL_read(ssl, buf, static_cast<int>(n)) : ::read(c, buf, n);
      };
      auto deliver = [&](const char* buf, std::size_t n) -> ssize_t {
        return ssl ? SSL_write(ssl, buf, static_cast<int>(n)) : ::send(c, buf, n, MSG_NOSIGNAL);
      };
      std::string head;
      char buf[4096];
      while (head.find("\r\n\r\n") == std::string::npos && head.size() < 65536) {
        const ssize_t n = receive(buf, sizeof buf);
        if (n <= 0) break;
        head.append(buf, static_cast<std::size_t>(n));
      }
      {
        std::lock_guard<std::mutex> guard(mutex_);
        heads_.push_back(head);
      }
      const bool big = head.rfind("GET /big ", 0) == 0;
      const std::string body = big ? std::string(1 << 20, 'x') : "hello from upstream\n";
      const std::string reply =
          "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
          "\r\nConnection: close\r\n\r\n" + body;
      for (std::size_t done = 0; done < reply.size();) {
        const ssize_t n = deliver(reply.data() + done, reply.size() - done);
        if (n <= 0) break;
        done += static_cast<std::size_t>(n);
      }
      if (ssl) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
      }
      ::close(c);
    }
  }

  SSL_CTX* tls_ = nullptr;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mutex_;
  std::vector<std::string> heads_;
};

}  // namespace corral::runtime_tests
