// Benchmark, in one run on the real engine: corral as a user calls it (requests to the
// supervisor actor), the docker/ adapter alone, a minimal raw-socket client and the docker
// CLI, doing the same operations. Prints markdown tables of p50/p95 with ratios against the
// raw floor, exec throughput at 8 and 32 concurrent, and corral's CPU time per exec.
//
// Usage: corral_bench [--iterations N] [--throughput-execs N] [--image IMAGE]
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <atomic>
#include <mutex>
#include <optional>
#include <thread>

#include <caf/all.hpp>

#include "actors/agent_link.hpp"
#include "actors/supervisor.hpp"
#include "app/exit_codes.hpp"
#include "docker/blocking.hpp"
#include "docker/client.hpp"
#include "messages/ask.hpp"
#include "messages/errors.hpp"
#include "messages/registration.hpp"
#include "messages/runtime_stats.hpp"
#include "messages/type_ids.hpp"

using namespace corral::docker;
namespace msg = corral::messages;
using clock_type = std::chrono::steady_clock;

namespace {

struct samples {
  std::vector<double> ms;
  double percentile(double p) const {
    if (ms.empty()) return 0;
    auto sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    const auto rank =
        static_cast<std::size_t>(std::lround(p * static_cast<double>(sorted.size() - 1)));
    return sorted[std::min(rank, sorted.size() - 1)];
  }
};

double cpu_ms() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto ms = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_usec) / 1e3;
  };
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

void must(const result<void>& r, const char* what) {
  if (!r) throw std::runtime_error(std::string(what) + ": " + r.err().describe());
}

// -- the minimal raw-socket client: one connection per request, read to EOF ---------------

struct raw_reply {
  int status = 0;
  std::string body;
};

raw_reply raw_http(const std::string& socket_path, const std::string& method,
                   const std::string& target, const std::string& body = {}, bool upgrade = false) {
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
    request +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
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

int shell(const std::string& command) {
  return std::system((command + " >/dev/null 2>&1").c_str());
}

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

// -- a `corral node` child with a warm pool, for the CLI's one-shot -------------------------

// The corral CLI beside this program (build/app/corral, or installed beside it).
std::string corral_cli_path() {
  char self_path[4096];
  const auto n = ::readlink("/proc/self/exe", self_path, sizeof self_path - 1);
  check(n > 0, "readlink /proc/self/exe");
  std::string dir(self_path, static_cast<std::size_t>(n));
  return dir.substr(0, dir.rfind('/')) + "/corral";
}

struct node_child {
  pid_t pid = -1;
  std::string address;  // 127.0.0.1:PORT
  std::string dir;      // its TLS material and output
};

node_child start_node(const std::string& name, int warm) {
  node_child node;
  char tmpl[] = "/tmp/corral-bench-node-XXXXXX";
  check(::mkdtemp(tmpl) != nullptr, "mkdtemp");
  node.dir = tmpl;
  const std::string out = node.dir + "/node.out";
  const std::string cli = corral_cli_path();
  node.pid = ::fork();
  check(node.pid >= 0, "fork");
  if (node.pid == 0) {
    ::setenv("CORRAL_TLS_DIR", (node.dir + "/tls").c_str(), 1);
    const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    const std::string warm_arg = std::to_string(warm);
    ::execl(cli.c_str(), cli.c_str(), "node", "--name", name.c_str(), "--listen", "127.0.0.1:0",
            "--warm", warm_arg.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  for (int i = 0; i < 300 && node.address.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    FILE* f = std::fopen(out.c_str(), "r");
    if (!f) continue;
    char line[1024];
    while (std::fgets(line, sizeof line, f)) {
      const char* at = std::strstr(line, "listening 127.0.0.1:");
      if (at) {
        node.address = std::string(at + 10);
        node.address.erase(node.address.find_last_not_of(" \n") + 1);
        node.address = node.address.substr(0, node.address.find(' '));
      }
    }
    std::fclose(f);
  }
  check(!node.address.empty(), "corral node did not start (see " + out + ")");
  return node;
}

void stop_node(node_child& node) {
  if (node.pid <= 0) return;
  ::kill(node.pid, SIGTERM);
  int status = 0;
  ::waitpid(node.pid, &status, 0);
  node.pid = -1;
  std::string rm = "rm -rf " + node.dir;
  (void)shell(rm);
}

// -- corral through its actors, as a user calls it -------------------------------------------

struct corral_runtime {
  caf::actor_system& sys;
  msg::supervisor_actor sup;

  template <class T, class... Ts>
  T ask(caf::scoped_actor& self, Ts&&... xs) {
    auto out = msg::ask<T>(self, sup, std::chrono::minutes(2), std::forward<Ts>(xs)...);
    if (!out) throw std::runtime_error("corral: " + msg::describe(out.error()));
    return std::move(*out);
  }

  void exec_echo(caf::scoped_actor& self, const std::string& key) {
    msg::exec_request req;
    req.argv = {"echo", "hello"};
    auto r = ask<msg::exec_result>(self, msg::exec_atom_v, key, req);
    check(r.stdout_data == "hello\n" && r.exit_code == 0, "corral exec output");
  }
};

struct row {
  std::string operation;
  samples corral, adapter, raw, cli;
};

void print_latency_table(const std::vector<row>& rows) {
  std::printf(
      "\n| operation | corral p50 | corral p95 | adapter p50 | raw p50 | raw p95 | docker CLI p50 "
      "| docker CLI p95 | corral / raw | CLI / corral |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& r : rows) {
    const double c50 = r.corral.percentile(0.5), w50 = r.raw.percentile(0.5),
                 d50 = r.cli.percentile(0.5);
    std::printf(
        "| %s | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %.2fx | "
        "%.2fx |\n",
        r.operation.c_str(), c50, r.corral.percentile(0.95), r.adapter.percentile(0.5), w50,
        r.raw.percentile(0.95), d50, r.cli.percentile(0.95), w50 > 0 ? c50 / w50 : 0.0,
        c50 > 0 ? d50 / c50 : 0.0);
  }
}

// Runs `per_lane` on `lanes` threads until `total` calls are done; returns calls per second.
double throughput(int lanes, int total, const std::function<void(int lane)>& per_lane) {
  std::atomic<int> next{0};
  std::atomic<bool> failed{false};
  std::string failure;
  std::mutex failure_mutex;
  const auto start = clock_type::now();
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(lanes));
  for (int lane = 0; lane < lanes; ++lane) {
    threads.emplace_back([&, lane] {
      while (!failed && next.fetch_add(1) < total) {
        try {
          per_lane(lane);
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> guard(failure_mutex);
          failure = e.what();
          failed = true;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  if (failed) throw std::runtime_error(failure);
  return total / std::chrono::duration<double>(clock_type::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  int iterations = 30;
  int throughput_execs = 160;
  // Sharing: idle workers sleep on a condition variable. CAF's default work stealing polls
  // before it sleeps, which costs milliseconds of CPU per request in an I/O-bound runtime.
  std::string scheduler = "sharing";
  std::string image = "corral/sandbox:busybox";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--iterations" && i + 1 < argc)
      iterations = std::max(3, std::atoi(argv[++i]));
    else if (arg == "--throughput-execs" && i + 1 < argc)
      throughput_execs = std::max(16, std::atoi(argv[++i]));
    else if (arg == "--image" && i + 1 < argc)
      image = argv[++i];
    else if (arg == "--scheduler" && i + 1 < argc)
      scheduler = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: corral_bench [--iterations N] [--throughput-execs N] [--image IMAGE] "
                   "[--scheduler sharing|stealing]\n");
      return 2;
    }
  }
  auto socket = resolve_engine_socket();
  if (!socket) {
    std::fprintf(stderr, "corral_bench: %s\n", socket.err().describe().c_str());
    return corral::app::exit_code::error;
  }
  client_options options;
  options.http.socket_path = *socket;
  client docker(options);

  caf::actor_system_config cfg;
  msg::add_message_types(cfg);
  cfg.set("logger.verbosity", caf::atom("quiet"));
  if (scheduler == "stealing")
    cfg.set("scheduler.policy", caf::atom("stealing"));
  else
    cfg.set("scheduler.policy", caf::atom("sharing"));
  caf::actor_system sys{cfg};
  corral::actors::runtime_config rc;
  rc.name = "bench-" + std::to_string(getpid());
  rc.policy.budget = {.sandboxes = 256, .memory = int64_t{1} << 50, .execs = 1 << 20};
  rc.max_execs_per_sandbox = 64;
  rc.socket_path = *socket;
  rc.agent_path = corral::actors::default_agent_path();
  corral_runtime corral{sys, corral::actors::spawn_supervisor(sys, rc)};

  std::vector<std::string> made;  // containers of the peers, removed at the end whatever happens
  int status = 0;
  {
    caf::scoped_actor self{sys};
    try {
      must(blocking<version_response>([&](auto done) { docker.negotiate(done); }), "negotiate");
      const std::string api = "/v" + docker.api_version();
      std::printf(
          "corral_bench: %d iterations per operation and client, image %s, API %s, %u cores\n",
          iterations, image.c_str(), docker.api_version().c_str(),
          std::thread::hardware_concurrency());

      // A hardened container created and started through the adapter, or the raw client;
      // `made` holds it until it is removed.
      auto adapter_start = [&]() -> std::string {
        auto id = must(blocking<container_create_response>(
                           [&](auto done) { docker.container_create(hardened(image), done); }),
                       "create")
                      .id;
        made.push_back(id);
        must(blocking<change_outcome>([&](auto done) { docker.container_start(id, done); }),
             "start");
        return id;
      };
      auto raw_start = [&]() -> std::string {
        auto created =
            raw_http(*socket, "POST", api + "/containers/create", hardened_raw_body(image));
        check(created.status == 201, "raw create: " + created.body);
        auto id = json_id(created.body);
        made.push_back(id);
        check(raw_http(*socket, "POST", api + "/containers/" + id + "/start").status == 204,
              "raw start");
        return id;
      };

      // Long-lived sandboxes for the exec measurements: 8, as agents hold several at once.
      std::vector<std::string> keys, peer_ids;
      for (int i = 0; i < 8; ++i) {
        keys.push_back("bench-" + std::to_string(i));
        corral.ask<msg::sandbox_info>(self, msg::acquire_atom_v, keys.back(), msg::sandbox_spec{});
        peer_ids.push_back(adapter_start());
      }
      const std::string& target = peer_ids.front();

      auto adapter_exec = [&](const std::string& id) {
        exec_create_request e;
        e.cmd = {"echo", "hello"};
        auto created = must(
            blocking<exec_create_response>([&](auto done) { docker.exec_create(id, e, done); }),
            "exec create");
        auto out =
            must(blocking<exec_output>([&](auto done) { docker.exec_start(created.id, {}, done); }),
                 "exec start");
        check(out.stdout_data.data == "hello\n", "exec output: " + out.stdout_data.data);
        auto inspected = must(blocking<exec_inspect_response>(
                                  [&](auto done) { docker.exec_inspect(created.id, done); }),
                              "exec inspect");
        check(inspected.exit_code == 0, "exec exit code");
      };
      auto raw_exec = [&](const std::string& id) {
        auto created =
            raw_http(*socket, "POST", api + "/containers/" + id + "/exec",
                     R"({"AttachStdout":true,"AttachStderr":true,"Cmd":["echo","hello"]})");
        check(created.status == 201, "raw exec create");
        const auto exec_id = json_id(created.body);
        auto started = raw_http(*socket, "POST", api + "/exec/" + exec_id + "/start",
                                R"({"Detach":false,"Tty":false})", true);
        check(started.body.find("hello") != std::string::npos, "raw exec output");
        auto inspected = raw_http(*socket, "GET", api + "/exec/" + exec_id + "/json");
        check(inspected.body.find("\"ExitCode\":0") != std::string::npos, "raw exec exit code");
      };
      auto cli_exec = [&](const std::string& id) {
        check(shell("docker exec " + id + " echo hello") == 0, "docker exec");
      };

      row exec_row{"exec round trip (`echo hello`)", {}, {}, {}, {}};
      row create_row{"create + start (hardened)", {}, {}, {}, {}};
      row remove_row{"teardown", {}, {}, {}, {}};
      row oneshot_row{"one-shot run (`echo hello`)", {}, {}, {}, {}};
      double corral_cpu = 0;

      // Interleave the clients so drift over the run hits them alike.
      for (int i = 0; i < 3; ++i) {
        corral.exec_echo(self, keys[0]);
        adapter_exec(target);
        raw_exec(target);
        cli_exec(target);
      }
      for (int i = 0; i < iterations; ++i) {
        const double cpu_before = cpu_ms();
        exec_row.corral.ms.push_back(time_ms([&] { corral.exec_echo(self, keys[0]); }));
        corral_cpu += cpu_ms() - cpu_before;
        exec_row.adapter.ms.push_back(time_ms([&] { adapter_exec(target); }));
        exec_row.raw.ms.push_back(time_ms([&] { raw_exec(target); }));
        exec_row.cli.ms.push_back(time_ms([&] { cli_exec(target); }));
      }

      for (int i = 0; i < iterations; ++i) {
        const std::string key = "bench-life-" + std::to_string(i);
        create_row.corral.ms.push_back(time_ms([&] {
          corral.ask<msg::sandbox_info>(self, msg::acquire_atom_v, key, msg::sandbox_spec{});
        }));
        remove_row.corral.ms.push_back(time_ms([&] {
          corral.ask<msg::sandbox_info>(self, msg::release_atom_v, key,
                                        msg::release_mode::cancel_execs);
        }));

        std::string id;
        create_row.adapter.ms.push_back(time_ms([&] { id = adapter_start(); }));
        remove_row.adapter.ms.push_back(time_ms([&] {
          must(blocking<void>([&](auto done) { docker.container_remove(id, true, done); }),
               "remove");
        }));
        made.pop_back();

        create_row.raw.ms.push_back(time_ms([&] { id = raw_start(); }));
        remove_row.raw.ms.push_back(time_ms([&] {
          check(raw_http(*socket, "DELETE", api + "/containers/" + id + "?force=1").status == 204,
                "raw remove");
        }));
        made.pop_back();

        const std::string name =
            "corral-bench-cli-" + std::to_string(getpid()) + "-" + std::to_string(i);
        create_row.cli.ms.push_back(time_ms([&] {
          check(shell("docker run -d --name " + name + " " + hardened_cli_flags + " " + image +
                      " sleep 3600") == 0,
                "docker run");
        }));
        made.push_back(name);
        remove_row.cli.ms.push_back(
            time_ms([&] { check(shell("docker rm -f " + name) == 0, "docker rm"); }));
        made.pop_back();

        // One-shot: what `corral run` does, against the peers' cheapest equivalent.
        const std::string shot = "bench-shot-" + std::to_string(i);
        oneshot_row.corral.ms.push_back(time_ms([&] {
          corral.ask<msg::sandbox_info>(self, msg::acquire_atom_v, shot, msg::sandbox_spec{});
          corral.exec_echo(self, shot);
          corral.ask<msg::sandbox_info>(self, msg::release_atom_v, shot,
                                        msg::release_mode::cancel_execs);
        }));
        oneshot_row.adapter.ms.push_back(time_ms([&] {
          id = adapter_start();
          adapter_exec(id);
          must(blocking<void>([&](auto done) { docker.container_remove(id, true, done); }),
               "remove");
          made.pop_back();
        }));
        oneshot_row.raw.ms.push_back(time_ms([&] {
          id = raw_start();
          raw_exec(id);
          check(raw_http(*socket, "DELETE", api + "/containers/" + id + "?force=1").status == 204,
                "raw remove");
          made.pop_back();
        }));
        oneshot_row.cli.ms.push_back(time_ms([&] {
          check(shell(std::string("docker run --rm ") + hardened_cli_flags + " " + image +
                      " echo hello") == 0,
                "docker run --rm");
        }));
      }
      print_latency_table({exec_row, create_row, remove_row, oneshot_row});
      std::printf(
          "\nteardown: corral releases (stop with grace, then remove); the peers remove with "
          "force.\n");
      std::printf(
          "one-shot: corral = acquire + exec + release; adapter/raw = create + start + exec + "
          "remove; CLI = docker run --rm.\n");
      std::printf(
          "corral CPU per exec round trip: %.3f ms (user+sys of this whole process, %d execs)\n",
          corral_cpu / iterations, iterations);

      std::printf(
          "\n| exec throughput (`echo hello`, 8 sandboxes) | corral | adapter | raw | docker CLI | "
          "corral / raw |\n|---|---|---|---|---|---|\n");
      for (int lanes : {8, 32}) {
        std::vector<std::unique_ptr<caf::scoped_actor>> selves;
        selves.reserve(static_cast<std::size_t>(lanes));
        for (int l = 0; l < lanes; ++l) selves.push_back(std::make_unique<caf::scoped_actor>(sys));
        const double c = throughput(lanes, throughput_execs, [&](int lane) {
          corral.exec_echo(*selves[lane], keys[lane % 8]);
        });
        selves.clear();
        const double a = throughput(lanes, throughput_execs,
                                    [&](int lane) { adapter_exec(peer_ids[lane % 8]); });
        const double w =
            throughput(lanes, throughput_execs, [&](int lane) { raw_exec(peer_ids[lane % 8]); });
        const double d =
            throughput(lanes, throughput_execs, [&](int lane) { cli_exec(peer_ids[lane % 8]); });
        std::printf(
            "| %d concurrent | %.1f execs/s | %.1f execs/s | %.1f execs/s | %.1f execs/s | %.2fx "
            "|\n",
            lanes, c, a, w, d, w > 0 ? c / w : 0.0);
      }
      corral.ask<uint64_t>(self, msg::release_all_atom_v, msg::release_mode::cancel_execs);

      // The warm pool: an acquire that takes a started sandbox (claim: rename + bind), beside
      // the cold create + start of the same spec measured above, in this run.
      {
        auto warm_rc = rc;
        warm_rc.name = "bench-warm-" + std::to_string(getpid());
        warm_rc.warm = 4;
        corral_runtime warm{sys, corral::actors::spawn_supervisor(sys, warm_rc)};
        auto pool_ready = [&] {
          for (int i = 0; i < 300; ++i) {
            auto st = warm.ask<msg::runtime_stats>(self, msg::stats_atom_v);
            if (st.pool_ready >= 1 && st.pool_warming == 0) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
          }
          throw std::runtime_error("the warm pool did not fill within 6 s");
        };
        samples claim;
        for (int i = 0; i < iterations; ++i) {
          pool_ready();
          const std::string key = "bench-warm-" + std::to_string(i);
          claim.ms.push_back(time_ms([&] {
            warm.ask<msg::sandbox_info>(self, msg::acquire_atom_v, key, msg::sandbox_spec{});
          }));
          warm.exec_echo(self, key);
          warm.ask<msg::sandbox_info>(self, msg::release_atom_v, key, msg::release_mode::detach);
        }
        auto st = warm.ask<msg::runtime_stats>(self, msg::stats_atom_v);
        check(st.pool_hits == static_cast<uint64_t>(iterations), "every warm acquire a pool hit");
        const double c50 = create_row.corral.percentile(0.5), w50 = claim.percentile(0.5);
        std::printf(
            "\n| acquire | p50 | p95 | / cold create + start p50 |\n|---|---|---|---|\n"
            "| cold: create + start (above) | %.1f ms | %.1f ms | 1 |\n"
            "| warm pool: claim + bind | %.1f ms | %.1f ms | 1/%.0f |\n",
            c50, create_row.corral.percentile(0.95), w50, claim.percentile(0.95),
            w50 > 0 ? c50 / w50 : 0.0);
        self->send_exit(warm.sup, caf::exit_reason::user_shutdown);
        self->wait_for(warm.sup);
      }

      // The CLI end to end: `corral --node ADDR run -- echo hello`, process start to exit,
      // against `docker run --rm` (the one-shot row's CLI column, this run).
      {
        node_child node = start_node("bench-node-" + std::to_string(getpid()), 2);
        try {
          const std::string run = "CORRAL_TLS_DIR=" + node.dir + "/tls " + corral_cli_path() +
                                  " --node " + node.address + " run -- echo hello";
          samples cli_run;
          for (int i = 0; i < 3; ++i) check(shell(run) == 0, "corral --node run");
          // Each run finds the pool full and idle: what one-shots a second apart see.
          const std::string settled = "CORRAL_TLS_DIR=" + node.dir + "/tls " + corral_cli_path() +
                                      " --node " + node.address +
                                      " stats --json | grep -q '\"pool_warming\":0,'";
          for (int i = 0; i < iterations; ++i) {
            for (int w = 0; w < 100 && shell(settled) != 0; ++w)
              std::this_thread::sleep_for(std::chrono::milliseconds(50));
            std::this_thread::sleep_for(std::chrono::milliseconds(200));  // its removal, too
            cli_run.ms.push_back(time_ms([&] { check(shell(run) == 0, "corral --node run"); }));
          }
          const double c50 = cli_run.percentile(0.5), d50 = oneshot_row.cli.percentile(0.5);
          std::printf(
              "\n| one-shot from the shell (process start to exit) | p50 | p95 | / docker run "
              "--rm p50 |\n|---|---|---|---|\n"
              "| docker run --rm (above) | %.1f ms | %.1f ms | 1 |\n"
              "| corral --node ADDR run (node --warm 2) | %.1f ms | %.1f ms | 1/%.1f |\n",
              d50, oneshot_row.cli.percentile(0.95), c50, cli_run.percentile(0.95),
              c50 > 0 ? d50 / c50 : 0.0);
        } catch (...) {
          stop_node(node);
          throw;
        }
        stop_node(node);
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "corral_bench: %s\n", e.what());
      status = 1;
    }
    self->send_exit(corral.sup, caf::exit_reason::user_shutdown);
    self->wait_for(corral.sup);
  }
  for (const auto& id : made) {
    auto removed = blocking<void>([&](auto done) { docker.container_remove(id, true, done); });
    if (!removed)
      std::fprintf(stderr, "corral_bench: removing %s: %s\n", id.c_str(),
                   removed.err().describe().c_str());
  }
  return status;
}
