// What a hostile process inside a sandbox would try against its agent: connect to the agent's
// socket and say hello. Static (like the agent) so it runs in any image from a workspace.
// Prints one line: "welcome" (the agent spoke to it), "refused: ..." or "closed" / "no socket".
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "messages/agent_protocol.hpp"

int main(int argc, char** argv) {
  namespace proto = corral::agent_protocol;
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
  if (::write(fd, hello.data(), hello.size()) != static_cast<ssize_t>(hello.size())) {
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
