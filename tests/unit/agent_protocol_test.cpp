// The agent's wire protocol (messages/agent_protocol.hpp) and the agent itself facing a peer
// that lies: frames that claim more than they hold, lengths past the bound, frames before hello.
// The agent runs here as a plain process on a socket of the test's (no container, no command).
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>

#include "messages/agent_protocol.hpp"

namespace proto = corral::agent_protocol;

TEST_CASE("agent protocol: a frame reads back as written", "[agent][protocol]") {
  const auto bytes = proto::writer(proto::frame::start, 7)
                         .strs({"sh", "-c", "echo hi"})
                         .str("")
                         .u32(1000)
                         .i64(-5)
                         .u64(UINT64_MAX)
                         .finish();
  std::size_t used = 0;
  bool bad = false;
  auto f = proto::next_frame(bytes, used, bad);
  REQUIRE(f);
  CHECK_FALSE(bad);
  CHECK(used == bytes.size());
  CHECK(f->type == proto::frame::start);
  CHECK(f->id == 7);
  proto::reader r(f->payload);
  CHECK(r.strs() == std::vector<std::string>{"sh", "-c", "echo hi"});
  CHECK(r.str().empty());
  CHECK(r.u32() == 1000);
  CHECK(r.i64() == -5);
  CHECK(r.u64() == UINT64_MAX);
  CHECK(r.done());
  // Cut anywhere short of the end: not a frame yet, and not bad either.
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    CHECK_FALSE(proto::next_frame(std::string_view(bytes).substr(0, n), used, bad));
    CHECK_FALSE(bad);
  }
}

TEST_CASE("agent protocol: lies about sizes are caught, never read past", "[agent][protocol]") {
  std::size_t used = 0;
  bool bad = false;
  // A length over the bound, and one shorter than the header.
  std::string huge = "\xff\xff\xff\xff";
  huge += std::string(16, 'x');
  CHECK_FALSE(proto::next_frame(huge, used, bad));
  CHECK(bad);
  CHECK_FALSE(proto::next_frame(std::string("\x02\x00\x00\x00\x01\x00", 6), used, bad));
  CHECK(bad);
  // A string claiming 1 GiB in a 4-byte payload; a list claiming 2^32-1 items.
  std::string payload("\x00\x00\x00\x40", 4);
  proto::reader r(payload);
  CHECK(r.str().empty());
  CHECK_FALSE(r.ok());
  CHECK(r.u64() == 0);  // everything after a failure reads as zero
  std::string list("\xff\xff\xff\xff", 4);
  proto::reader l(list);
  CHECK(l.strs().empty());
  CHECK_FALSE(l.ok());
}

namespace {

int connect_to(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  timeval five{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &five, sizeof five);
  return fd;
}

// The next frame from fd, or nullopt when the agent closed the connection (or said nothing in 5 s).
std::optional<std::pair<proto::frame, std::string>> read_frame(int fd) {
  std::string in;
  char buf[4096];
  for (;;) {
    std::size_t used = 0;
    bool bad = false;
    if (auto f = proto::next_frame(in, used, bad))
      return std::make_pair(f->type, std::string(f->payload));
    const auto n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return std::nullopt;
    in.append(buf, static_cast<std::size_t>(n));
  }
}

bool hello_answered(int fd) {
  const auto hello = proto::writer(proto::frame::hello, 0).u32(proto::version).finish();
  if (::write(fd, hello.data(), hello.size()) != static_cast<ssize_t>(hello.size())) return false;
  auto f = read_frame(fd);
  return f && f->first == proto::frame::welcome;
}

}  // namespace

TEST_CASE("the agent closes a lying peer's connection and serves the next", "[agent][protocol]") {
  const auto dir =
      std::filesystem::temp_directory_path() / ("corral-agent-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string sock = (dir / "agent.sock").string();
  const char* argv[] = {CORRAL_AGENT_PATH, "--socket", sock.c_str(), nullptr};
  pid_t agent = 0;
  REQUIRE(::posix_spawn(&agent, CORRAL_AGENT_PATH, nullptr, nullptr, const_cast<char**>(argv),
                        environ) == 0);
  int probe = -1;
  for (int i = 0; i < 200 && probe < 0; ++i) {
    probe = connect_to(sock);
    if (probe < 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(probe >= 0);
  CHECK(hello_answered(probe));
  ::close(probe);

  SECTION("a frame before hello is refused by name, then the connection closes") {
    const int fd = connect_to(sock);
    const auto start = proto::writer(proto::frame::start, 1).strs({"true"}).finish();
    REQUIRE(::write(fd, start.data(), start.size()) == static_cast<ssize_t>(start.size()));
    auto refused = read_frame(fd);
    REQUIRE(refused);
    CHECK(refused->first == proto::frame::refused);
    CHECK_FALSE(read_frame(fd));
    ::close(fd);
  }
  SECTION("a length past the bound closes the connection") {
    const int fd = connect_to(sock);
    REQUIRE(hello_answered(fd));
    const std::string lie = "\xff\xff\xff\x7f\x03\x01\x00\x00\x00";
    REQUIRE(::write(fd, lie.data(), lie.size()) == static_cast<ssize_t>(lie.size()));
    CHECK_FALSE(read_frame(fd));
    ::close(fd);
  }
  SECTION("a start whose argv claims more than the frame holds is refused") {
    const int fd = connect_to(sock);
    REQUIRE(hello_answered(fd));
    auto start = proto::writer(proto::frame::start, 9).u32(1000000).str("x").finish();
    REQUIRE(::write(fd, start.data(), start.size()) == static_cast<ssize_t>(start.size()));
    auto refused = read_frame(fd);
    REQUIRE(refused);
    CHECK(refused->first == proto::frame::refused);
    ::close(fd);
  }
  SECTION("a well-formed start before the sandbox is bound is refused by name") {
    // An unbound sandbox (a pool member, a cold one before its claim) runs nothing: no uid
    // has been bound for its commands.
    const int fd = connect_to(sock);
    REQUIRE(hello_answered(fd));
    const auto start = proto::writer(proto::frame::start, 4)
                           .strs({"/bin/true"})
                           .strs({})
                           .str("")
                           .u32(0)
                           .u32(0)
                           .i64(1000)
                           .u64(1024)
                           .u64(1024)
                           .u8(0)
                           .u64(1024)
                           .finish();
    REQUIRE(::write(fd, start.data(), start.size()) == static_cast<ssize_t>(start.size()));
    auto refused = read_frame(fd);
    REQUIRE(refused);
    CHECK(refused->first == proto::frame::refused);
    proto::reader r(refused->second);
    CHECK(r.str().find("not bound") != std::string::npos);
    ::close(fd);
  }
  // Whatever the liar did, the agent still serves a new connection.
  const int next = connect_to(sock);
  REQUIRE(next >= 0);
  CHECK(hello_answered(next));
  ::close(next);
  ::kill(agent, SIGTERM);
  int status = 0;
  ::waitpid(agent, &status, 0);
  CHECK(WIFEXITED(status));
  std::filesystem::remove_all(dir);
}
