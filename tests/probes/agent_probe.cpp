// What a hostile process inside a sandbox would try against its agent. Static (like the agent)
// so it runs in any image from a workspace.
//   agent_probe [SOCKET]: connect to the agent's socket and say hello; prints one line:
//     "welcome" (the agent spoke to it), "refused: ..." or "closed" / "no socket".
//   agent_probe --impersonate KEY [SOCKET]: as the sandbox's root, put a listener of its own
//     in the agent's place that answers every hello with a welcome naming KEY (another
//     principal's sandbox, say), for a process that adopts the sandbox later.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "messages/agent_protocol.hpp"

namespace proto = corral::agent_protocol;

int impersonate(const std::string& key, const char* path) {
  ::unlink(path);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(fd, 16) != 0) {
    std::printf("cannot listen: %s\n", std::strerror(errno));
    return 2;
  }
  std::printf("listening\n");
  std::fflush(stdout);
  for (;;) {
    const int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    char buf[4096];
    if (::read(c, buf, sizeof buf) > 0) {
      const auto welcome = proto::writer(proto::frame::welcome, 0)
                               .u32(proto::version)
                               .str("0000000000000000")
                               .str(key)
                               .i64(0)
                               .i64(0)
                               .str("")
                               .u32(0)
                               .strs({})
                               .finish();
      (void)!::write(c, welcome.data(), welcome.size());
    }
    // Kept open: the adopter waits on it for frames that never come.
  }
}

int main(int argc, char** argv) {
  if (argc > 2 && std::string(argv[1]) == "--impersonate")
    return impersonate(argv[2], argc > 3 ? argv[3] : "/corral/run/agent.sock");
  const char* path = argc > 1 ? argv[1] : "/corral/run/agent.sock";
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    std::printf("no socket: %s\n", std::strerror(errno));
    return 2;
  }
  const auto hello = proto::writer(proto::frame::hello, 0).u32(proto::version).finish();
  // MSG_NOSIGNAL: a connection the agent closed at once is "closed", not a SIGPIPE.
  if (::send(fd, hello.data(), hello.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(hello.size())) {
    std::printf("closed\n");
    return 1;
  }
  std::string in;
  char buf[4096];
  for (;;) {
    std::size_t used = 0;
    bool bad = false;
    if (auto f = proto::next_frame(in, used, bad)) {
      if (f->type == proto::frame::welcome) {
        std::printf("welcome\n");
        return 0;
      }
      std::printf("refused: frame %u\n", static_cast<unsigned>(f->type));
      return 1;
    }
    const auto n = ::read(fd, buf, sizeof buf);
    if (n <= 0) {
      std::printf("closed\n");
      return 1;
    }
    in.append(buf, static_cast<std::size_t>(n));
  }
}
