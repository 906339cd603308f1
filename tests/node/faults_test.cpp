// Faults around a node: it dies under a client; it gets garbage, silent or idle connections,
// huge or ill-typed requests; its client dies mid-exec. The node keeps serving, clients get
// a bounded, clear answer, and nothing leaks.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <filesystem>
#include <fstream>
#include <random>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <catch2/catch.hpp>

#include "app/remote.hpp"
#include "messages/type_ids.hpp"
#include "tests/node/node_process.hpp"

using namespace corral;
using namespace corral::messages;
using namespace corral::node_tests;

namespace {

// A TCP connection to 127.0.0.1:port; closed on destruction.
class raw_connection {
 public:
  explicit raw_connection(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~raw_connection() {
    if (fd_ >= 0) ::close(fd_);
  }
  raw_connection(const raw_connection&) = delete;
  raw_connection& operator=(const raw_connection&) = delete;

  // True once the peer closed (a read gives EOF or a reset) within `limit`.
  bool closed_by_peer(std::chrono::milliseconds limit) {
    pollfd p{fd_, POLLIN, 0};
    const auto deadline = steady::now() + limit;
    char buf[4096];
    while (steady::now() < deadline) {
      if (::poll(&p, 1, 100) <= 0) continue;
      const auto n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return true;
    }
    return false;
  }

  // Writes what the peer takes (it may close on us: no SIGPIPE); returns bytes written.
  std::size_t send(const std::string& bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      const auto n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    return done;
  }

 private:
  int fd_ = -1;
};

void append_be(std::string& out, uint64_t x, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out += static_cast<char>((x >> (8 * i)) & 0xff);
}

// A BASP header (CAF 0.17: 32 bytes, network byte order) that announces a payload of
// `payload_len` bytes.
std::string basp_header(uint8_t operation, uint32_t payload_len, uint64_t source = 0,
                        uint64_t dest = 0) {
  std::string h;
  h += static_cast<char>(operation);
  h += '\0';
  h += '\0';
  h += '\0';  // flags
  append_be(h, payload_len, 4);
  append_be(h, 0, 8);  // operation data
  append_be(h, source, 8);
  append_be(h, dest, 8);
  return h;
}

long status_kib(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  return -1;
}

// `corral --node ADDRESS run -- echo ok` succeeds.
void check_serves(node_process& node, const char* after) {
  INFO("after " << after);
  REQUIRE(node.running());
  const auto r = run_cli({"--node", node.address(), "run", "--", "echo", "ok"}, {}, 30s);
  INFO(r << "\nnode log:\n" << node.log());
  CHECK(r.code == 0);
  CHECK(r.out == "ok\n");
}

}  // namespace

TEST_CASE("a client whose node dies mid-exec gets an error at once", "[node][faults]") {
  node_fixture f;
  auto& node = f.start(f.name("n"));
  auto client =
      start_cli({"--node", node.address(), "run", "--", "sh", "-c", "echo started; exec sleep 30"});
  REQUIRE(client->wait_for_stdout("started", 15s));
  node.signal(SIGKILL);
  const auto killed = steady::now();
  const auto code = client->finish(30s);
  INFO("client stderr: " << client->err());
  REQUIRE(code);
  CHECK(*code == 125);
  CHECK(since(killed) < 3s);
  CHECK(contains(client->err(), "node_unavailable"));
  CHECK(contains(client->err(), node.address()));
  // The killed node could not clean up: its sandbox is still on the engine, ours to remove.
  CHECK(node.wait(5s) == 128 + SIGKILL);
  CHECK(f.engine.remove_all(node.name()) == 1);
}

TEST_CASE("garbage, silent and idle connections do not stop a node", "[node][faults]") {
  node_fixture f;
  auto& node = f.start(f.name("n"));
  check_serves(node, "start");

  {
    raw_connection garbage{node.port()};
    std::mt19937 random{42};
    std::string bytes(64 << 10, '\0');
    for (auto& c : bytes) c = static_cast<char>(random());
    garbage.send(bytes);
    CHECK(garbage.closed_by_peer(10s));  // no TLS hello in it: the node hangs up
  }
  check_serves(node, "64 KiB of random bytes");

  raw_connection silent{node.port()};  // connects, never speaks; open to the end
  check_serves(node, "a connection that never speaks");

  {
    // Connections that never finish a handshake: the node keeps at most 64 of them (its
    // handshake budget), each new one pushing out the oldest; a client still gets in.
    const auto fds_before = open_fds(node.process().pid());
    std::vector<std::unique_ptr<raw_connection>> idle;
    for (int i = 0; i < 200; ++i) idle.push_back(std::make_unique<raw_connection>(node.port()));
    CHECK(eventually(5s, [&] { return open_fds(node.process().pid()) <= fds_before + 64 + 2; }));
    INFO("node fds: " << fds_before << " before, " << open_fds(node.process().pid())
                      << " with 200 idle connections");
    CHECK(open_fds(node.process().pid()) <= fds_before + 64 + 2);
    check_serves(node, "200 idle connections");
  }
  check_serves(node, "200 idle connections closed");
  CHECK(node.stop() == 0);
}

TEST_CASE("32 connections announcing 4 GiB payloads without a certificate cost the node nothing",
          "[node][faults][tls]") {
  // Before mutual TLS, one BASP header announcing 4 GiB made the node allocate (and zero)
  // 4 GiB in its I/O thread. Now every byte before a verified certificate goes to OpenSSL:
  // the header is no TLS record, and the node closes the connection.
  node_fixture f;
  auto& node = f.start(f.name("n"));
  check_serves(node, "start");
  const auto pid = node.process().pid();
  const long rss_before = status_kib(pid, "VmRSS");
  std::vector<std::unique_ptr<raw_connection>> attackers;
  for (int i = 0; i < 32; ++i) {
    attackers.push_back(std::make_unique<raw_connection>(node.port()));
    attackers.back()->send(basp_header(0x01, 0xffffffffu));  // a server handshake: 4 GiB
  }
  int closed = 0;
  for (auto& a : attackers) closed += a->closed_by_peer(5s) ? 1 : 0;
  CHECK(closed == 32);
  const long rss_after = status_kib(pid, "VmRSS");
  const long peak = status_kib(pid, "VmHWM");
  INFO("node RSS " << rss_before << " KiB before, " << rss_after << " KiB after, peak " << peak
                   << " KiB");
  CHECK(rss_after - rss_before < 16 * 1024);
  CHECK(peak < rss_before + 64 * 1024);
  attackers.clear();
  check_serves(node, "32 connections announcing 4 GiB payloads");
  CHECK(node.stop() == 0);
}

TEST_CASE("huge and ill-typed requests are refused and the node keeps serving", "[node][faults]") {
  node_fixture f;
  auto& node = f.start(f.name("n"));
  net_config cfg;
  caf::actor_system sys{cfg};
  auto transport = tls_client(sys);
  caf::scoped_actor self{sys};
  auto sup = app::connect_node(self, {"127.0.0.1", node.port()}, 2000ms, "tester");
  REQUIRE(what(sup) == "ok");

  auto info = ask<sandbox_info>(self, *sup, caf::timespan{60s}, acquire_atom_v, std::string("big"),
                                sandbox_spec{});
  REQUIRE(what(info) == "ok");

  SECTION("argv of 2 MiB") {
    exec_request req;
    req.argv = {"echo", std::string(2 << 20, 'a')};
    auto r = ask<exec_result>(self, *sup, caf::timespan{30s}, exec_atom_v, std::string("big"), req);
    REQUIRE_FALSE(r);
    INFO(describe(r.error()));
    CHECK(r.error() == corral_errc::invalid_request);
    CHECK(contains(describe(r.error()), "argv"));
    CHECK(contains(describe(r.error()), std::to_string(1 << 20)));
  }
  SECTION("env of 1 MiB") {
    exec_request req;
    req.argv = {"true"};
    req.env = {{"BIG", std::string(1 << 20, 'b')}};
    auto r = ask<exec_result>(self, *sup, caf::timespan{30s}, exec_atom_v, std::string("big"), req);
    REQUIRE_FALSE(r);
    INFO(describe(r.error()));
    CHECK(r.error() == corral_errc::invalid_request);
    CHECK(contains(describe(r.error()), "env"));
  }
  SECTION("messages outside the interface") {
    auto untyped = caf::actor_cast<caf::actor>(*sup);
    caf::anon_send(untyped, std::string("garbage"));
    caf::anon_send(untyped, exec_atom_v, std::string("big"));  // an exec without its request
    auto r = ask<std::string>(self, untyped, caf::timespan{10s}, std::string("hello?"));
    REQUIRE_FALSE(r);
    CHECK(r.error() == caf::sec::unexpected_message);
    auto hello = app::connect_node(self, {"127.0.0.1", node.port()}, 2000ms, "tester");
    CHECK(what(hello) == "ok");
  }

  // The node still serves: an exec in the same sandbox works, and so does a CLI client.
  exec_request ok;
  ok.argv = {"echo", "still"};
  auto r = ask<exec_result>(self, *sup, caf::timespan{30s}, exec_atom_v, std::string("big"), ok);
  REQUIRE(what(r) == "ok");
  CHECK(r->stdout_data == "still\n");
  check_serves(node, "huge or ill-typed requests");
  auto released = ask<sandbox_info>(self, *sup, caf::timespan{60s}, release_atom_v,
                                    std::string("big"), release_mode::cancel_execs);
  CHECK(what(released) == "ok");
  CHECK(node.stop() == 0);
}

TEST_CASE("a run whose client dies mid-exec: the node releases its sandbox", "[node][faults]") {
  node_fixture f;
  auto& node = f.start(f.name("n"));
  net_config cfg;
  caf::actor_system sys{cfg};
  auto transport = tls_client(sys);
  caf::scoped_actor self{sys};
  auto sup = app::connect_node(self, {"127.0.0.1", node.port()}, 2000ms, "tester");
  REQUIRE(what(sup) == "ok");
  auto running = [&] {
    auto stats = ask<runtime_stats>(self, *sup, caf::timespan{10s}, stats_atom_v);
    return stats ? stats->execs_in_flight : uint64_t{0};
  };

  auto client = start_cli({"--node", node.address(), "run", "--", "sleep", "60"});
  REQUIRE(eventually(30s, [&] { return running() == 1; }));
  client->signal(SIGKILL);
  REQUIRE(client->finish(5s) == 128 + SIGKILL);
  const auto killed = steady::now();

  // Its connection closed: the node cancels the command and removes the sandbox, long before
  // the command would have ended by itself.
  CHECK(eventually(20s, [&] { return f.engine.containers(node.name()).empty(); }));
  INFO("released " << since(killed).count() << " ms after the client died");
  CHECK(running() == 0);
  auto listed = ask<std::vector<sandbox_info>>(self, *sup, caf::timespan{10s}, list_atom_v);
  REQUIRE(what(listed) == "ok");
  CHECK(listed->empty());
  CHECK(node.stop() == 0);
}
