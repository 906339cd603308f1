// egress_bench: what the egress proxy costs, in one run beside its peers. An HTTP server of its
// own on 127.0.0.1 serves 100 MiB and a two-byte answer; they are fetched
//   - directly from the host, by this program's client and by busybox wget;
//   - through the proxy's unix socket from the host (the proxy alone);
//   - from inside a sandbox by busybox wget, through its agent's 127.0.0.1:3128 and the proxy
//     (the whole path a command takes), timed by corral's exec.
// Prints a Markdown table (README.md, "Egress"). Needs the engine and the sandbox image.
//
//   egress_bench [--requests N]   (small requests per row, default 100)
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <caf/all.hpp>

#include "actors/agent_link.hpp"
#include "actors/egress_proxy.hpp"
#include "actors/policy.hpp"
#include "actors/runtime_config.hpp"
#include "actors/supervisor.hpp"
#include "docker/client.hpp"
#include "messages/ask.hpp"
#include "messages/errors.hpp"
#include "messages/registration.hpp"
#include "messages/type_ids.hpp"

namespace msg = corral::messages;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr std::size_t big_bytes = 100u << 20;

double ms_since(clock_type::time_point start) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
}

double p50(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

void send_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w <= 0) throw std::runtime_error("send failed");
    data += w;
    n -= static_cast<std::size_t>(w);
  }
}

// The upstream: one thread per connection, one request each ("GET /big" or anything else).
class upstream {
 public:
  upstream() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(fd_, 128) != 0 || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len))
      throw std::runtime_error("cannot listen on 127.0.0.1");
    port = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] {
      for (;;) {
        const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) return;  // shut down
        std::thread([c] { serve(c); }).detach();
      }
    });
  }
  ~upstream() {
    ::shutdown(fd_, SHUT_RDWR);
    acceptor_.join();
    ::close(fd_);
  }
  uint16_t port = 0;

 private:
  static void serve(int c) {
    std::string head;
    char buf[4096];
    while (head.find("\r\n\r\n") == std::string::npos) {
      const ssize_t n = ::read(c, buf, sizeof buf);
      if (n <= 0) return void(::close(c));
      head.append(buf, static_cast<std::size_t>(n));
    }
    const bool big = head.find(" /big ") != std::string::npos;
    const std::size_t size = big ? big_bytes : 2;
    const std::string reply_head = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(size) +
                                   "\r\nConnection: close\r\n\r\n";
    try {
      send_all(c, reply_head.data(), reply_head.size());
      static const std::string chunk(1 << 20, 'x');
      for (std::size_t left = size; left > 0;) {
        const std::size_t n = std::min(left, chunk.size());
        send_all(c, chunk.data(), n);
        left -= n;
      }
    } catch (const std::exception&) {
    }
    ::close(c);
  }
  int fd_ = -1;
  std::thread acceptor_;
};

// One GET over a fresh connection (TCP to the upstream, or the proxy's unix socket with an
// absolute-form target); returns the body's size.
std::size_t fetch(const std::string& unix_path, uint16_t port, const std::string& path) {
  int fd = -1;
  std::string request;
  if (unix_path.empty()) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      throw std::runtime_error("cannot connect to the upstream");
    request = "GET " + path + " HTTP/1.1\r\nHost: up.test\r\n\r\n";
  } else {
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", unix_path.c_str());
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      throw std::runtime_error("cannot connect to the proxy");
    request =
        "GET http://up.test:" + std::to_string(port) + path + " HTTP/1.1\r\nHost: up.test\r\n\r\n";
  }
  send_all(fd, request.data(), request.size());
  std::vector<char> buf(1 << 20);
  std::string head;
  std::size_t body = 0;
  bool in_body = false;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n <= 0) break;
    if (in_body) {
      body += static_cast<std::size_t>(n);
      continue;
    }
    head.append(buf.data(), static_cast<std::size_t>(n));
    if (auto at = head.find("\r\n\r\n"); at != std::string::npos) {
      in_body = true;
      body = head.size() - at - 4;
      if (head.rfind("HTTP/1.1 200", 0) != 0)
        throw std::runtime_error("answered " + head.substr(0, head.find("\r\n")));
    }
  }
  ::close(fd);
  return body;
}

struct row_figures {
  double big_ms = 0;
  double small_p50 = 0;
};

void print_row(const char* what, const row_figures& r, const row_figures& base) {
  const double mib_s = (big_bytes / double(1 << 20)) / (r.big_ms / 1000.0);
  std::printf("| %s | %.0f ms | %.0f MiB/s | %.2f ms | %+.2f ms |\n", what, r.big_ms, mib_s,
              r.small_p50, r.small_p50 - base.small_p50);
}

}  // namespace

int main(int argc, char** argv) {
  int requests = 100;
  for (int i = 1; i + 1 < argc; i += 2)
    if (std::string(argv[i]) == "--requests") requests = std::max(5, std::atoi(argv[i + 1]));
  try {
    upstream up;
    char tmpl[] = "/tmp/corral-egress-bench-XXXXXX";
    const std::string dir = ::mkdtemp(tmpl);

    corral::egress_rules rules;
    rules.allow = {"up.test"};
    rules.ports = {up.port};
    rules.allow_private_cidrs = {"127.0.0.0/8"};
    rules.resolve = {{"up.test", "127.0.0.1"}};
    corral::egress_proxy_options popt;
    popt.ca_dir = dir + "/ca";
    corral::egress_proxy proxy(popt);
    const std::string sock = dir + "/egress.sock";
    if (auto err = proxy.open("bench", sock, rules, ::getuid(), ::getgid()); !err.empty())
      throw std::runtime_error(err);

    auto measure = [&](const std::function<std::size_t(const std::string&)>& get) {
      row_figures r;
      get("/small");  // warm-up
      auto t = clock_type::now();
      if (get("/big") != big_bytes) throw std::runtime_error("short download");
      r.big_ms = ms_since(t);
      std::vector<double> small;
      for (int i = 0; i < requests; ++i) {
        t = clock_type::now();
        if (get("/small") != 2) throw std::runtime_error("short answer");
        small.push_back(ms_since(t));
      }
      r.small_p50 = p50(small);
      return r;
    };
    auto busybox = [&](const std::string& path) -> std::size_t {
      const std::string cmd =
          "busybox wget -q -O /dev/null http://127.0.0.1:" + std::to_string(up.port) + path;
      if (std::system(cmd.c_str()) != 0) throw std::runtime_error("host busybox wget failed");
      return path == "/big" ? big_bytes : 2;
    };
    const auto direct = measure([&](const std::string& p) { return fetch("", up.port, p); });
    const auto proxied = measure([&](const std::string& p) { return fetch(sock, up.port, p); });
    const auto host_wget = measure(busybox);
    proxy.close("bench");

    // The whole path, from a sandbox: its wget, its agent's relay, the runtime's proxy.
    caf::actor_system_config cfg;
    msg::add_message_types(cfg);
    cfg.set("logger.verbosity", caf::atom("quiet"));
    cfg.set("scheduler.policy", caf::atom("sharing"));
    caf::actor_system sys{cfg};
    corral::actors::runtime_config rc;
    rc.name = "bench-egress-" + std::to_string(::getpid());
    rc.agent_path = corral::actors::default_agent_path();
    rc.policy.egress.allow = {"up.test"};
    rc.policy.egress.ports = {up.port};
    rc.policy.egress.allow_private_cidrs = {"127.0.0.0/8"};
    rc.policy.egress.resolve = {{"up.test", "127.0.0.1"}};
    rc.policy.egress.max_bytes_per_sandbox = int64_t{1} << 40;
    rc.egress_options.ca_dir = dir + "/ca";
    rc.egress_options.log_path.clear();
    auto sup = corral::actors::spawn_supervisor(sys, rc);
    row_figures in_sandbox;
    {
      caf::scoped_actor self{sys};
      auto ask = [&](auto expected, auto... xs) {
        using result = typename decltype(expected)::type;
        auto out = msg::ask<result>(self, sup, std::chrono::minutes(2), xs...);
        if (!out) throw std::runtime_error("corral: " + msg::describe(out.error()));
        return std::move(*out);
      };
      const auto info = std::type_identity<msg::sandbox_info>{};
      const auto done = std::type_identity<msg::exec_result>{};
      msg::sandbox_spec spec;
      spec.allow_hosts = {"up.test"};
      ask(info, msg::acquire_atom_v, std::string("egress"), spec);
      auto wget = [&](const std::string& path) -> std::size_t {
        msg::exec_request req;
        req.argv = {"wget", "-q", "-O", "/dev/null",
                    "http://up.test:" + std::to_string(up.port) + path};
        auto r = ask(done, msg::exec_atom_v, std::string("egress"), req);
        if (r.exit_code != 0) throw std::runtime_error("sandbox wget failed: " + r.stderr_data);
        return path == "/big" ? big_bytes : 2;
      };
      in_sandbox = measure(wget);
      ask(info, msg::release_atom_v, std::string("egress"), msg::release_mode::cancel_execs);
      self->send_exit(sup, caf::exit_reason::user_shutdown);
      self->wait_for(sup);
    }
    std::filesystem::remove_all(dir);

    std::printf(
        "\n| path (100 MiB download; %d two-byte requests, a new connection each) | download "
        "| throughput | request p50 | added p50 |\n|---|---|---|---|---|\n",
        requests);
    print_row("host, direct (this program's client)", direct, direct);
    print_row("host, through the proxy's socket (the proxy alone)", proxied, direct);
    print_row("host, busybox wget direct", host_wget, host_wget);
    print_row("sandbox, busybox wget → agent → proxy (timed by corral's exec)", in_sandbox,
              host_wget);
    std::printf("\nadded p50: beside the row above it (the same client without the proxy).\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "egress_bench: %s\n", e.what());
    return 1;
  }
}
