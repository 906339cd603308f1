// The egress relay: commands reach the network only through 127.0.0.1:3128 in the sandbox's
// own loopback, and the agent bridges each connection to the proxy's socket outside the
// sandbox (egress.sock in the run directory), which decides what it may reach. Apart from the
// protocol because it carries commands' bytes, not corral's frames.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "app/agent/agent_state.hpp"

namespace corral::agent_detail {

// -- egress: 127.0.0.1:3128 in the sandbox's own loopback, bridged to the proxy ---------------

bool listen_for_egress(std::string& why) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(proto::egress_port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd, 64) != 0) {
    why =
        "cannot listen on 127.0.0.1:" + std::to_string(proto::egress_port) + ": " + strerror(errno);
    if (fd >= 0) close(fd);
    return false;
  }
  A.egress_fd = fd;
  return true;
}

void accept_egress() {
  for (;;) {
    const int inside = accept4(A.egress_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (inside < 0) return;
    if (A.relays.size() >= max_relays) {
      close(inside);  // the proxy would refuse it too: no more than this at once
      continue;
    }
    const int outside = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, A.egress_socket.c_str(),
                std::min(A.egress_socket.size(), sizeof addr.sun_path - 1));
    if (outside < 0 || connect(outside, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      // The proxy is gone (its runtime ended): the command sees a closed connection.
      if (outside >= 0) close(outside);
      close(inside);
      continue;
    }
    relay r;
    r.inside = inside;
    r.outside = outside;
    A.relays.push_back(std::move(r));
  }
}

namespace {

// Reads what `from` has into `buffer`, up to relay_buffer; `eof` once it ended.
void pump(int from, std::string& buffer, bool& eof) {
  char buf[64 * 1024];
  while (!eof && buffer.size() < relay_buffer) {
    const ssize_t n = read(from, buf, std::min(sizeof buf, relay_buffer - buffer.size()));
    if (n > 0) {
      buffer.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    eof = true;
  }
}

// Writes what it can of `buffer` to `to`; false on an error (the peer is gone).
bool drain(int to, std::string& buffer) {
  while (!buffer.empty()) {
    const ssize_t n = send(to, buffer.data(), buffer.size(), MSG_NOSIGNAL);
    if (n > 0) {
      buffer.erase(0, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
    return false;
  }
  return true;
}

}  // namespace

// One step of a relay after poll; false: close it.
bool step_relay(relay& r) {
  pump(r.inside, r.to_outside, r.inside_eof);
  pump(r.outside, r.to_inside, r.outside_eof);
  if (!drain(r.outside, r.to_outside) || !drain(r.inside, r.to_inside)) return false;
  // A side that ended and whose bytes are all delivered: the other side hears its end.
  if (r.inside_eof && r.to_outside.empty()) shutdown(r.outside, SHUT_WR);
  if (r.outside_eof && r.to_inside.empty()) shutdown(r.inside, SHUT_WR);
  return !(r.inside_eof && r.outside_eof && r.to_outside.empty() && r.to_inside.empty());
}

}  // namespace corral::agent_detail
