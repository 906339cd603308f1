// Benchmark: the docker/ adapter against the docker CLI and a minimal raw-socket client, in
// one run on the real engine. Prints a markdown table of p50/p95 and ratios, and the
// adapter's own CPU time per exec.
//
// Usage: corral_bench [--iterations N] [--image IMAGE]
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "docker/blocking.hpp"
#include "docker/client.hpp"

using namespace corral::docker;
using clock_type = std::chrono::steady_clock;

namespace {


struct samples {
  std::vector<double> ms;
  double percentile(double p) const {
    if (ms.empty()) return 0;
    auto sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    const auto rank = static_cast<std::size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
    return sorted[std::min(rank, sorted.size() - 1)];
  }
};

double cpu_ms() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto ms = [](const timeval& t) { return t.tv_sec * 1e3 + t.tv_usec / 1e3; };
  return ms(usage.ru_utime) + ms(usage.ru_stime);
}

template <class F>
double time_ms(F&& f) {
  const auto start = clock_type::now();
  f();
  return std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
}

void check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what);
}

template <class T>
T must(result<T> r, const char* what) {
  if (!r) throw std::runtime_error(std::string(what) + ": " + r.err().describe());
  return std::move(r).value();
}

void must(result<void> r, const char* what) {
  if (!r) throw std::runtime_error(std::string(what) + ": " + r.err().describe());
}

// -- the minimal raw-socket client: one connection per request, read to EOF ---------------

struct raw_reply {
  int status = 0;
  std::string body;
};

raw_reply raw_http(const std::string& socket_path, const std::string& method,
                   const std::string& target, const std::string& body = {},
                   bool upgrade = false) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  check(fd >= 0, "socket()");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof(addr.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    throw std::runtime_error("connect " + socket_path);
  }
  std::string request = method + " " + target + " HTTP/1.1\r\nHost: docker\r\n";
  request += upgrade ? "Connection: Upgrade\r\nUpgrade: tcp\r\n" : "Connection: close\r\n";
  if (!body.empty()) {
    request += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  request += "\r\n" + body;
  for (std::size_t sent = 0; sent < request.size();) {
    const auto n = ::write(fd, request.data() + sent, request.size() - sent);
    check(n > 0, "write()");
    sent += static_cast<std::size_t>(n);
  }
  std::string in;
  char buf[16384];
  for (;;) {
    const auto n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    in.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  raw_reply reply;
  if (in.size() > 12) reply.status = std::atoi(in.c_str() + 9);
  const auto head_end = in.find("\r\n\r\n");
  if (head_end != std::string::npos) reply.body = in.substr(head_end + 4);
  return reply;
}

std::string json_id(const std::string& body) {
  const auto key = body.find("\"Id\":\"");
  check(key != std::string::npos, "no Id in " + body);
  const auto start = key + 6;
  return body.substr(start, body.find('"', start) - start);
}

// -- the docker CLI ------------------------------------------------------------------------

int shell(const std::string& command) { return std::system((command + " >/dev/null 2>&1").c_str()); }

// -- the operations ------------------------------------------------------------------------

container_create_request hardened(const std::string& image) {
  container_create_request r;
  r.image = image;
  r.cmd = {"sleep", "3600"};
  r.user = "1000:1000";
  r.labels = {{"corral.managed-by", "corral-bench"}};
  r.host.network_mode = "none";
  r.host.readonly_rootfs = true;
  r.host.cap_drop = {"ALL"};
  r.host.security_opt = {"no-new-privileges"};
  r.host.memory = 256LL << 20;
  r.host.memory_swap = 256LL << 20;
  r.host.pids_limit = 256;
  return r;
}

const char* hardened_cli_flags =
    "--network none --read-only --cap-drop ALL --security-opt no-new-privileges "
    "--user 1000:1000 --memory 256m --memory-swap 256m --pids-limit 256 "
    "--label corral.managed-by=corral-bench";

std::string hardened_raw_body(const std::string& image) {
  return R"({"Image":")" + image +
         R"(","Cmd":["sleep","3600"],"User":"1000:1000","Labels":{"corral.managed-by":"corral-bench"},)"
         R"("HostConfig":{"NetworkMode":"none","ReadonlyRootfs":true,"CapDrop":["ALL"],)"
         R"("SecurityOpt":["no-new-privileges"],"Memory":268435456,"MemorySwap":268435456,"PidsLimit":256}})";
}

struct row {
  std::string operation;
  samples corral, cli, raw;
};

void print_table(const std::vector<row>& rows) {
  std::printf("\n| operation | corral p50 | corral p95 | raw p50 | raw p95 | docker CLI p50 | docker CLI p95 | corral/raw p50 | CLI/corral p50 |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& r : rows) {
    const double c50 = r.corral.percentile(0.5), w50 = r.raw.percentile(0.5), d50 = r.cli.percentile(0.5);
    std::printf("| %s | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %.2fx | %.2fx |\n",
                r.operation.c_str(), c50, r.corral.percentile(0.95), w50, r.raw.percentile(0.95), d50,
                r.cli.percentile(0.95), w50 > 0 ? c50 / w50 : 0.0, c50 > 0 ? d50 / c50 : 0.0);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int iterations = 30;
  std::string image = "corral/sandbox:busybox";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--iterations" && i + 1 < argc) iterations = std::max(3, std::atoi(argv[++i]));
    else if (arg == "--image" && i + 1 < argc) image = argv[++i];
    else {
      std::fprintf(stderr, "usage: corral_bench [--iterations N] [--image IMAGE]\n");
      return 2;
    }
  }
  auto socket = resolve_engine_socket();
  if (!socket) {
    std::fprintf(stderr, "corral_bench: %s\n", socket.err().describe().c_str());
    return 125;
  }
  client_options options;
  options.http.socket_path = *socket;
  client docker(options);
  std::vector<std::string> made;  // every container, removed at the end whatever happens
  int rc = 0;
  try {
    must(blocking<version_response>([&](auto done) { docker.negotiate(done); }), "negotiate");
    const std::string api = "/v" + docker.api_version();
    std::printf("corral_bench: %d iterations per operation and client, image %s, API %s\n",
                iterations, image.c_str(), docker.api_version().c_str());

    // One long-lived sandbox for the exec measurements.
    auto target = must(blocking<container_create_response>([&](auto done) { docker.container_create(hardened(image), done); }), "create");
    made.push_back(target.id);
    must(blocking<change_outcome>([&](auto done) { docker.container_start(target.id, done); }), "start");

    row exec_row{"exec round trip (`echo hello`)", {}, {}, {}};
    row create_row{"create + start (hardened)", {}, {}, {}};
    row remove_row{"remove (force)", {}, {}, {}};
    double exec_cpu = 0;

    auto corral_exec = [&] {
      exec_create_request e;
      e.cmd = {"echo", "hello"};
      auto id = must(blocking<exec_create_response>([&](auto done) { docker.exec_create(target.id, e, done); }), "exec create");
      auto out = must(blocking<exec_output>([&](auto done) { docker.exec_start(id.id, {}, done); }), "exec start");
      check(out.stdout_data.data == "hello\n", "exec output: " + out.stdout_data.data);
      auto inspected = must(blocking<exec_inspect_response>([&](auto done) { docker.exec_inspect(id.id, done); }), "exec inspect");
      check(inspected.exit_code == 0, "exec exit code");
    };
    auto raw_exec = [&] {
      auto created = raw_http(*socket, "POST", api + "/containers/" + target.id + "/exec",
                              R"({"AttachStdout":true,"AttachStderr":true,"Cmd":["echo","hello"]})");
      check(created.status == 201, "raw exec create");
      const auto id = json_id(created.body);
      auto started = raw_http(*socket, "POST", api + "/exec/" + id + "/start", R"({"Detach":false,"Tty":false})", true);
      check(started.body.find("hello") != std::string::npos, "raw exec output");
      auto inspected = raw_http(*socket, "GET", api + "/exec/" + id + "/json");
      check(inspected.body.find("\"ExitCode\":0") != std::string::npos, "raw exec exit code");
    };
    auto cli_exec = [&] { check(shell("docker exec " + target.id + " echo hello") == 0, "docker exec"); };

    // Interleave the clients so drift over the run hits them alike.
    for (int i = 0; i < 3; ++i) { corral_exec(); raw_exec(); cli_exec(); }  // warm-up
    for (int i = 0; i < iterations; ++i) {
      const double cpu_before = cpu_ms();
      exec_row.corral.ms.push_back(time_ms(corral_exec));
      exec_cpu += cpu_ms() - cpu_before;
      exec_row.raw.ms.push_back(time_ms(raw_exec));
      exec_row.cli.ms.push_back(time_ms(cli_exec));
    }

    for (int i = 0; i < iterations; ++i) {
      std::string id;
      create_row.corral.ms.push_back(time_ms([&] {
        id = must(blocking<container_create_response>([&](auto done) { docker.container_create(hardened(image), done); }), "create").id;
        made.push_back(id);
        must(blocking<change_outcome>([&](auto done) { docker.container_start(id, done); }), "start");
      }));
      remove_row.corral.ms.push_back(time_ms([&] {
        must(blocking<void>([&](auto done) { docker.container_remove(id, true, done); }), "remove");
      }));
      made.pop_back();

      create_row.raw.ms.push_back(time_ms([&] {
        auto created = raw_http(*socket, "POST", api + "/containers/create", hardened_raw_body(image));
        check(created.status == 201, "raw create: " + created.body);
        id = json_id(created.body);
        made.push_back(id);
        check(raw_http(*socket, "POST", api + "/containers/" + id + "/start").status == 204, "raw start");
      }));
      remove_row.raw.ms.push_back(time_ms([&] {
        check(raw_http(*socket, "DELETE", api + "/containers/" + id + "?force=1").status == 204, "raw remove");
      }));
      made.pop_back();

      const std::string name = "corral-bench-cli-" + std::to_string(getpid()) + "-" + std::to_string(i);
      create_row.cli.ms.push_back(time_ms([&] {
        check(shell("docker run -d --name " + name + " " + hardened_cli_flags + " " + image + " sleep 3600") == 0, "docker run");
      }));
      made.push_back(name);
      remove_row.cli.ms.push_back(time_ms([&] { check(shell("docker rm -f " + name) == 0, "docker rm"); }));
      made.pop_back();
    }

    print_table({exec_row, create_row, remove_row});
    std::printf("\ncorral client CPU per exec round trip: %.3f ms (user+sys of this process, %d execs)\n",
                exec_cpu / iterations, iterations);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "corral_bench: %s\n", e.what());
    rc = 1;
  }
  for (const auto& id : made) {
    auto removed = blocking<void>([&](auto done) { docker.container_remove(id, true, done); });
    if (!removed) std::fprintf(stderr, "corral_bench: removing %s: %s\n", id.c_str(), removed.err().describe().c_str());
  }
  return rc;
}
