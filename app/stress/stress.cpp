#include "app/stress/stress.hpp"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <thread>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/agent_link.hpp"
#include "actors/supervisor.hpp"
#include "app/exit_codes.hpp"
#include "app/fake_engine/fake_engine.hpp"
#include "app/remote.hpp"
#include "app/session.hpp"
#include "app/stress/histogram.hpp"
#include "app/system_config.hpp"
#include "app/tls_listener.hpp"
#include "docker/blocking.hpp"
#include "docker/client.hpp"
#include "docker/json.hpp"
#include "messages/errors.hpp"
#include "messages/registration.hpp"
#include "messages/type_ids.hpp"

CAF_ADD_ATOM(corral_stress, corral::app, next_atom, "next")
CAF_ADD_ATOM(corral_stress, corral::app, killed_atom, "killed")
CAF_ADD_ATOM(corral_stress, corral::app, go_atom, "go")

namespace corral::app {

namespace {

using namespace messages;
using steady = std::chrono::steady_clock;

enum class op_kind { acquire, exec, long_exec, timeout_exec, release, kill };
constexpr const char* op_names[] = {"acquire", "exec", "long", "timeout", "release", "kill"};
constexpr std::size_t op_count = 6;

struct op_stats {
  latency_histogram latency;
  uint64_t errors = 0;
};

// What a run measured; built by the driver actor, read by the main thread after it quit.
struct report {
  std::array<op_stats, op_count> ops;
  std::map<std::string, uint64_t> errors;             // by kind
  std::map<std::string, std::string> first_error_of;  // by kind: the whole message
  struct point {
    double t_s;
    double ms;
    std::size_t op;
  };
  std::vector<point> timeline;  // a bounded sample for the plot
  double seconds = 0;
  uint64_t total = 0;
};

struct sample {
  double t_s;
  long rss_kib;
  long fds;
};

long count_fds() {
  long n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (auto* e = ::readdir(d)) n += e->d_name[0] != '.';
    ::closedir(d);
  }
  return n - 1;  // the directory itself
}

long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return 0;
}

std::vector<std::pair<op_kind, double>> parse_mix(const std::string& mix) {
  std::vector<std::pair<op_kind, double>> out;
  std::size_t start = 0;
  while (start < mix.size()) {
    auto end = mix.find(',', start);
    if (end == std::string::npos) end = mix.size();
    const std::string item = mix.substr(start, end - start);
    const auto eq = item.find('=');
    const std::string name = item.substr(0, eq);
    const double weight =
        eq == std::string::npos ? 1.0 : std::strtod(item.c_str() + eq + 1, nullptr);
    std::size_t i = 0;
    while (i < op_count && name != op_names[i]) ++i;
    if (i == op_count || weight < 0)
      throw std::runtime_error("--mix: unknown operation or weight '" + item + "'");
    if (weight > 0) out.emplace_back(static_cast<op_kind>(i), weight);
    start = end + 1;
  }
  if (out.empty()) throw std::runtime_error("--mix: no operation has a weight");
  return out;
}

struct driver_state {
  static inline const char* name = "corral.stress";
  driver_state() = default;
  supervisor_actor sup;
  stress_options options;
  std::shared_ptr<docker::client> docker;
  std::vector<std::pair<op_kind, double>> mix;
  double mix_total = 0;
  std::mt19937_64 random{42};
  steady::time_point started;
  steady::time_point deadline;
  uint64_t issued = 0;
  uint64_t in_flight = 0;
  bool stopping = false;
  std::shared_ptr<report> out;
  std::map<std::string, std::string> container_of;  // key -> container id (for kills)
  bool finished = false;
  uint64_t timeline_stride = 1;
};

caf::behavior driver(caf::stateful_actor<driver_state>* self, supervisor_actor sup,
                     const stress_options& options, std::shared_ptr<docker::client> docker,
                     std::shared_ptr<report> out) {
  auto& st = self->state;
  st.sup = std::move(sup);
  st.options = options;
  st.docker = std::move(docker);
  st.out = std::move(out);
  st.mix = parse_mix(options.mix);
  for (auto& [kind, w] : st.mix) st.mix_total += w;

  auto key_of = [self] {
    std::uniform_int_distribution<uint64_t> pick(0, self->state.options.keys - 1);
    return "k" + std::to_string(pick(self->state.random));
  };
  auto choose = [self] {
    std::uniform_real_distribution<double> pick(0, self->state.mix_total);
    double x = pick(self->state.random);
    for (auto& [kind, w] : self->state.mix) {
      if ((x -= w) <= 0) return kind;
    }
    return self->state.mix.back().first;
  };
  auto finish_if_drained = [self] {
    auto& st = self->state;
    // The main thread watches for this actor's end (a down message).
    if (st.stopping && st.in_flight == 0 && !st.finished) {
      st.finished = true;
      st.out->seconds = std::chrono::duration<double>(steady::now() - st.started).count();
      self->quit();
    }
  };
  // Records one finished operation and starts the lane's next one.
  auto record = [self, finish_if_drained](op_kind kind, steady::time_point began,
                                          const caf::error& err) {
    auto& st = self->state;
    const auto micros =
        std::chrono::duration_cast<std::chrono::microseconds>(steady::now() - began).count();
    auto& o = st.out->ops[static_cast<std::size_t>(kind)];
    o.latency.record(static_cast<uint64_t>(micros));
    if (err) {
      ++o.errors;
      const std::string text = describe(err);
      const std::string kindname = text.substr(0, text.find(':'));
      if (++st.out->errors[kindname] == 1) st.out->first_error_of[kindname] = text;
    }
    ++st.out->total;
    if (st.out->total % st.timeline_stride == 0 && st.out->timeline.size() < 200000) {
      st.out->timeline.push_back({std::chrono::duration<double>(began - st.started).count(),
                                  static_cast<double>(micros) / 1000.0,
                                  static_cast<std::size_t>(kind)});
    }
    --st.in_flight;
    if (st.out->timeline.size() >= 100000) st.timeline_stride = 4;
    self->send(self, next_atom_v);
    finish_if_drained();
  };
  auto acquire_spec = [] {
    sandbox_spec spec;
    spec.exec_timeout = std::chrono::seconds(30);
    return spec;
  };

  auto start_one = [self, key_of, choose, record, acquire_spec] {
    auto& st = self->state;
    if (st.stopping) return;
    if ((st.options.ops > 0 && st.issued >= st.options.ops) || steady::now() >= st.deadline) {
      st.stopping = true;
      return;
    }
    ++st.issued;
    ++st.in_flight;
    const auto kind = choose();
    const auto key = key_of();
    const auto began = steady::now();
    const auto timeout = std::chrono::seconds(60);
    auto on_error = [record, kind, began](const caf::error& err) { record(kind, began, err); };
    switch (kind) {
      case op_kind::acquire:
        self->request(st.sup, timeout, acquire_atom_v, key, acquire_spec())
            .then(
                [self, record, kind, began, key](const sandbox_info& info) {
                  self->state.container_of[key] = info.container_id;
                  record(kind, began, {});
                },
                on_error);
        break;
      case op_kind::exec:
      case op_kind::long_exec:
      case op_kind::timeout_exec: {
        exec_request req;
        if (kind == op_kind::exec) req.argv = {"echo", "stress"};
        if (kind == op_kind::long_exec) req.argv = {"sleep", "1"};
        if (kind == op_kind::timeout_exec) {
          req.argv = {"sleep", "30"};
          req.timeout = std::chrono::milliseconds(300);
        }
        // An exec needs its sandbox: get-or-create first (fast when it exists).
        self->request(st.sup, timeout, acquire_atom_v, key, acquire_spec())
            .then(
                [self, record, kind, began, key, req, timeout, on_error](const sandbox_info& info) {
                  self->state.container_of[key] = info.container_id;
                  self->request(self->state.sup, timeout, exec_atom_v, key, req)
                      .then(
                          [record, kind, began](const exec_result& r) {
                            caf::error err;
                            // Killed under it (exit 137 from a signal corral did not send):
                            // the workload's outside kills do that.
                            const bool lost = r.end == exec_end::sandbox_lost ||
                                              r.end == exec_end::killed ||
                                              r.end == exec_end::oom_killed ||
                                              (r.end == exec_end::exited && r.exit_code == 137);
                            if (kind == op_kind::timeout_exec && r.end != exec_end::timed_out &&
                                !lost) {
                              err = make_error(
                                  corral_errc::timeout,
                                  "expected a timeout, got " + std::string(to_string(r.end)) + " " +
                                      std::to_string(r.exit_code) + " after " +
                                      std::to_string(r.duration.count() / 1000000) +
                                      " ms: " + (r.stdout_data + r.stderr_data).substr(0, 300));
                            } else if (lost || (kind != op_kind::timeout_exec &&
                                                r.end != exec_end::exited)) {
                              // The sandbox died under it: an outside kill's doing.
                              err = make_error(corral_errc::sandbox_lost,
                                               std::string("exec ended ") + to_string(r.end));
                            }
                            record(kind, began, err);
                          },
                          on_error);
                },
                on_error);
        break;
      }
      case op_kind::release:
        self->request(st.sup, timeout, release_atom_v, key, release_mode::cancel_execs)
            .then([record, kind, began](const sandbox_info&) { record(kind, began, {}); },
                  [record, kind, began](const caf::error& err) {
                    // Releasing a key nobody holds is part of the workload, not a failure.
                    record(kind, began, err == corral_errc::not_found ? caf::error{} : err);
                  });
        break;
      case op_kind::kill: {
        auto it = st.container_of.find(key);
        if (it == st.container_of.end() || it->second.empty()) {
          record(kind, began, {});
          break;
        }
        const std::string id = it->second;
        st.container_of.erase(it);
        caf::actor me = caf::actor_cast<caf::actor>(self);
        // From outside, as an operator or the OOM killer would: the runtime must notice.
        st.docker->container_kill(id, "SIGKILL", [me, began](const docker::result<void>& r) {
          caf::anon_send(me, killed_atom_v, static_cast<int64_t>(began.time_since_epoch().count()),
                         r ? std::string() : r.err().describe());
        });
        break;
      }
    }
  };

  return {
      [self, start_one](go_atom) -> caf::result<caf::unit_t> {
        auto& st = self->state;
        st.started = steady::now();
        st.deadline = st.started + st.options.duration;
        for (uint64_t i = 0; i < st.options.concurrency; ++i) start_one();
        return caf::unit;
      },
      [start_one, finish_if_drained](next_atom) {
        start_one();
        finish_if_drained();  // the lane may just have found the run over
      },
      [record](killed_atom, int64_t began_ticks, const std::string& failure) {
        const steady::time_point began{steady::duration{began_ticks}};
        // A container that is already gone is not the harness's failure.
        record(op_kind::kill, began,
               failure.empty() || failure.find("not_found") != std::string::npos ||
                       failure.find("conflict") != std::string::npos
                   ? caf::error{}
                   : make_error(corral_errc::engine_error, failure));
      },
      [self](caf::get_atom) -> std::pair<uint64_t, uint64_t> {
        return {self->state.out->total, self->state.in_flight};
      },
  };
}

void print_report(const report& r, const stress_options& o) {
  std::printf(
      "\ncorral-stress: %llu operations in %.1f s (%.1f ops/s), %llu keys, concurrency %llu, "
      "engine %s\n\n",
      static_cast<unsigned long long>(r.total), r.seconds,
      r.seconds > 0 ? static_cast<double>(r.total) / r.seconds : 0.0,
      static_cast<unsigned long long>(o.keys), static_cast<unsigned long long>(o.concurrency),
      o.engine.c_str());
  std::printf("| operation | count | errors | ops/s | p50 ms | p90 ms | p99 ms | max ms |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (std::size_t i = 0; i < op_count; ++i) {
    const auto& s = r.ops[i];
    if (s.latency.count() == 0) continue;
    std::printf("| %s | %llu | %llu | %.1f | %.1f | %.1f | %.1f | %.1f |\n", op_names[i],
                static_cast<unsigned long long>(s.latency.count()),
                static_cast<unsigned long long>(s.errors),
                r.seconds > 0 ? static_cast<double>(s.latency.count()) / r.seconds : 0.0,
                static_cast<double>(s.latency.quantile(0.5)) / 1e3,
                static_cast<double>(s.latency.quantile(0.9)) / 1e3,
                static_cast<double>(s.latency.quantile(0.99)) / 1e3,
                static_cast<double>(s.latency.max()) / 1e3);
  }
  if (!r.errors.empty()) {
    std::printf("\nerrors by kind:");
    for (const auto& [kind, n] : r.errors)
      std::printf(" %s=%llu", kind.c_str(), static_cast<unsigned long long>(n));
    std::printf("\n");
    for (const auto& [kind, text] : r.first_error_of)
      std::printf("  first %s: %s\n", kind.c_str(), text.c_str());
  }
}

std::string report_json(const report& r, const stress_options& o,
                        const std::vector<sample>& samples, const std::vector<std::string>& leaks) {
  docker::json_writer w;
  w.begin_object();
  w.field("operations", r.total).field("seconds", static_cast<int64_t>(r.seconds * 1000) / 1000);
  w.field("keys", o.keys).field("concurrency", o.concurrency).field("engine", o.engine);
  w.key("per_operation").begin_object();
  for (std::size_t i = 0; i < op_count; ++i) {
    const auto& s = r.ops[i];
    if (s.latency.count() == 0) continue;
    w.key(op_names[i]).begin_object();
    w.field("count", s.latency.count()).field("errors", s.errors);
    w.field("p50_us", s.latency.quantile(0.5)).field("p90_us", s.latency.quantile(0.9));
    w.field("p99_us", s.latency.quantile(0.99)).field("max_us", s.latency.max());
    w.end_object();
  }
  w.end_object();
  w.key("errors").begin_object();
  for (const auto& [kind, n] : r.errors) w.field(kind, n);
  w.end_object();
  w.key("samples").begin_array();
  for (const auto& s : samples) {
    w.begin_object()
        .field("t_s", static_cast<int64_t>(s.t_s))
        .field("rss_kib", static_cast<int64_t>(s.rss_kib));
    w.field("fds", static_cast<int64_t>(s.fds)).end_object();
  }
  w.end_array();
  w.key("leaks").begin_array();
  for (const auto& l : leaks) w.value(l);
  w.end_array();
  w.end_object();
  return w.take();
}

void write_csv(const report& r, const std::string& path) {
  std::ofstream out(path);
  out << "operation,count,errors,p50_us,p90_us,p99_us,max_us\n";
  for (std::size_t i = 0; i < op_count; ++i) {
    const auto& s = r.ops[i];
    if (s.latency.count() == 0) continue;
    out << op_names[i] << ',' << s.latency.count() << ',' << s.errors << ','
        << s.latency.quantile(0.5) << ',' << s.latency.quantile(0.9) << ','
        << s.latency.quantile(0.99) << ',' << s.latency.max() << '\n';
  }
}

bool write_plot(const report& r, const std::string& png) {
  const std::string base = png + ".data";
  std::vector<std::string> series;
  for (std::size_t i = 0; i < op_count; ++i) {
    std::ofstream t(base + "." + op_names[i] + ".time");
    std::ofstream h(base + "." + op_names[i] + ".hist");
    bool any = false;
    for (const auto& p : r.timeline) {
      if (p.op != i) continue;
      t << p.t_s << ' ' << p.ms << '\n';
      any = true;
    }
    // Twelve 2% buckets make one of ~27%: about ten bars a decade, readable in a plot.
    for (std::size_t b = 0; b < latency_histogram::bucket_count; b += 12) {
      uint64_t n = 0;
      for (std::size_t j = b; j < std::min(b + 12, latency_histogram::bucket_count); ++j)
        n += r.ops[i].latency.bucket(j);
      if (n > 0)
        h << static_cast<double>(latency_histogram::upper_bound(
                 std::min(b + 11, latency_histogram::bucket_count - 1))) /
                 1000.0
          << ' ' << n << '\n';
    }
    if (any) series.push_back(op_names[i]);
  }
  if (series.empty()) return false;
  std::string script =
      "set terminal png size 1200,1000\nset output '" + png + "'\nset multiplot layout 2,1\n";
  script +=
      "set title 'latency over time'\nset xlabel 'seconds'\nset ylabel 'ms'\nset logscale y\nplot ";
  for (std::size_t i = 0; i < series.size(); ++i) {
    script += (i ? ", " : "") + std::string("'") + base + "." + series[i] +
              ".time' with points pt 7 ps 0.3 title '" + series[i] + "'";
  }
  script +=
      "\nset title 'latency histogram'\nset xlabel 'ms'\nset ylabel 'count'\nset logscale x\nunset "
      "logscale y\nplot ";
  for (std::size_t i = 0; i < series.size(); ++i) {
    script += (i ? ", " : "") + std::string("'") + base + "." + series[i] +
              ".hist' with histeps lw 2 title '" + series[i] + "'";
  }
  script += "\nunset multiplot\n";
  FILE* gp = ::popen("gnuplot 2>&1", "w");
  if (!gp) return false;
  std::fwrite(script.data(), 1, script.size(), gp);
  const int rc = ::pclose(gp);
  for (const auto& s : series) {
    std::remove((base + "." + s + ".time").c_str());
    std::remove((base + "." + s + ".hist").c_str());
  }
  return rc == 0;
}

// What a new client pays to reach a node: TCP, the mutual TLS handshake, BASP's handshake and
// corral's hello (the actor system's start aside), over fresh clients; printed as p50/max.
bool report_connects(const node_address& where, const tls_options& tls) {
  constexpr int clients = 20;
  std::vector<double> ms;
  for (int i = 0; i < clients; ++i) {
    caf::actor_system_config cfg;
    configure_system(cfg, {.network = true});
    caf::actor_system sys{cfg};
    auto transport = spawn_tls_middleman(sys, tls);
    if (!transport) {
      std::fprintf(stderr, "corral-stress: %s\n", sys.render(transport.error()).c_str());
      return false;
    }
    caf::scoped_actor self{sys};
    const auto start = std::chrono::steady_clock::now();
    auto connected =
        connect_node(self, where, std::chrono::seconds(2), default_principal(tls.certificate));
    if (!connected) {
      std::fprintf(stderr, "corral-stress: %s\n", describe(connected.error()).c_str());
      return false;
    }
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                     .count());
  }
  std::sort(ms.begin(), ms.end());
  std::printf(
      "new client connection (TCP, TLS, BASP handshakes, hello), %d fresh clients: "
      "p50 %.2f ms, max %.2f ms\n",
      clients, ms[ms.size() / 2], ms.back());
  return true;
}

}  // namespace

// A mean of `total_us` over `n`, in ms ("-" for none).
static std::string format_ms(uint64_t total_us, uint64_t n) {
  if (n == 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f ms",
                static_cast<double>(total_us) / 1000.0 / static_cast<double>(n));
  return buf;
}

int run_stress(const stress_options& options_in) {
  stress_options o = options_in;
  if (o.runtime.empty()) o.runtime = "stress-" + std::to_string(::getpid());
  if (o.capacity == 0) o.capacity = o.keys + 16;
  if (o.keys == 0 || o.concurrency == 0) {
    std::fprintf(stderr, "corral-stress: --keys and --concurrency must be positive\n");
    return exit_code::error;
  }
  try {
    parse_mix(o.mix);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "corral-stress: %s\n", e.what());
    return exit_code::error;
  }

  // The fake engine runs in this process, on its own socket.
  std::unique_ptr<fake_engine> fake;
  std::string socket_path;
  if (o.engine == "fake") {
    fake_engine_options fo;
    fo.socket_path = "/tmp/corral-fake-" + std::to_string(::getpid()) + ".sock";
    fo.latency_scale = o.fake_latency_scale;
    // The fault rate is split over the kinds of fault: errors, resets, cut streams, lost events.
    fo.error_rate = o.fake_fault_rate / 2;
    fo.reset_rate = o.fake_fault_rate / 6;
    fo.truncate_rate = o.fake_fault_rate / 6;
    fo.drop_event_rate = o.fake_fault_rate / 6;
    fake = std::make_unique<fake_engine>(fo);
    socket_path = fo.socket_path;
  } else if (o.engine != "real") {
    std::fprintf(stderr, "corral-stress: --engine is real or fake\n");
    return exit_code::error;
  } else {
    auto resolved = docker::resolve_engine_socket();
    if (!resolved) {
      std::fprintf(stderr, "corral-stress: %s\n", resolved.err().describe().c_str());
      return exit_code::error;
    }
    socket_path = *resolved;
  }

  const long fds_before = count_fds();
  const long rss_before = rss_kib();
  std::vector<std::string> leaks;
  std::string pool_line;
  std::vector<sample> samples;
  auto out = std::make_shared<report>();
  {
    caf::actor_system_config cfg;
    // CAF's default scheduler (work stealing), as the published figures were measured with.
    tls_options tls;
    std::optional<node_address> where;
    if (!o.node.empty()) {
      auto parsed = parse_node_address(o.node);
      if (!parsed) {
        std::fprintf(stderr, "corral-stress: %s\n", describe(parsed.error()).c_str());
        return exit_code::error;
      }
      where = *parsed;
      auto credentials = client_credentials(o.tls, {*where}, "corral-stress");
      if (!credentials) return exit_code::error;
      tls = *credentials;
      if (!report_connects(*where, tls)) return exit_code::error;
    }
    configure_system(cfg, {.network = !o.node.empty(), .sharing_scheduler = false});
    caf::actor_system sys{cfg};
    std::shared_ptr<tls_middleman> transport;
    if (!o.node.empty()) {
      auto spawned = spawn_tls_middleman(sys, tls);
      if (!spawned) {
        std::fprintf(stderr, "corral-stress: %s\n", sys.render(spawned.error()).c_str());
        return exit_code::error;
      }
      transport = *spawned;
    }
    caf::scoped_actor self{sys};
    const auto baseline_actors = sys.registry().running();

    supervisor_actor sup;
    bool own_supervisor = o.node.empty();
    if (own_supervisor) {
      actors::runtime_config rc;
      rc.name = o.runtime;
      rc.socket_path = socket_path;
      // A workload generator: the budget is its --capacity, memory and commands unbounded.
      rc.policy.budget = {.sandboxes = o.capacity, .memory = int64_t{1} << 50, .execs = 1 << 20};
      rc.max_execs_per_sandbox = 16;
      rc.warm = o.warm;
      // On the real engine, sandboxes run the agent as the CLI's do; the fake runs no process.
      if (!fake) rc.agent_path = actors::default_agent_path();
      sup = actors::spawn_supervisor(sys, rc);
    } else {
      auto connected =
          connect_node(self, *where, std::chrono::seconds(2), default_principal(tls.certificate));
      if (!connected) {
        std::fprintf(stderr, "corral-stress: %s\n", describe(connected.error()).c_str());
        return exit_code::error;
      }
      sup = *connected;
    }
    docker::client_options copt;
    copt.http.socket_path = socket_path;
    auto docker_client = std::make_shared<docker::client>(copt);
    (void)docker::blocking<docker::version_response>(
        [&](auto done) { docker_client->negotiate(done); });

    auto drv = sys.spawn(driver, sup, o, docker_client, out);
    const bool tty = ::isatty(1) != 0;
    const auto started = steady::now();
    bool finished = false;
    self->request(drv, caf::infinite, go_atom_v)
        .receive([](const caf::unit_t&) {}, [](caf::error&) {});
    // Progress and samples until the driver reports done (it quits then).
    self->monitor(drv);
    while (!finished) {
      self->receive(
          [&](caf::down_msg&) { finished = true; },
          caf::after(o.sample_every) >>
              [&] {
                const double t = std::chrono::duration<double>(steady::now() - started).count();
                samples.push_back({t, rss_kib(), count_fds()});
                std::pair<uint64_t, uint64_t> progress{0, 0};
                self->request(drv, std::chrono::seconds(5), caf::get_atom_v)
                    .receive([&](std::pair<uint64_t, uint64_t>& p) { progress = p; },
                             [](caf::error&) {});
                const double total_s = std::chrono::duration<double>(o.duration).count();
                const double frac =
                    o.ops > 0 ? static_cast<double>(progress.first) / static_cast<double>(o.ops)
                              : t / total_s;
                const int width = 30, filled = static_cast<int>(std::min(1.0, frac) * width);
                if (tty) {
                  std::printf("\r[%s%s] %3.0f%% %llu ops, %.1f/s, %llu in flight   ",
                              std::string(static_cast<std::size_t>(filled), '=').c_str(),
                              std::string(static_cast<std::size_t>(width - filled), ' ').c_str(),
                              std::min(1.0, frac) * 100,
                              static_cast<unsigned long long>(progress.first),
                              t > 0 ? static_cast<double>(progress.first) / t : 0.0,
                              static_cast<unsigned long long>(progress.second));
                } else {
                  std::printf(
                      "progress: %.0f s, %llu ops, %.1f ops/s, %llu in flight, rss %ld KiB, fds "
                      "%ld\n",
                      t, static_cast<unsigned long long>(progress.first),
                      t > 0 ? static_cast<double>(progress.first) / t : 0.0,
                      static_cast<unsigned long long>(progress.second), rss_kib(), count_fds());
                }
                std::fflush(stdout);
              });
    }
    if (tty) std::printf("\n");

    // The pool's figures, as the runtime counted them (a node's: the whole node's).
    self->request(sup, std::chrono::seconds(10), stats_atom_v)
        .receive(
            [&](const runtime_stats& s) {
              if (s.pool_hits + s.pool_misses + s.pool_target == 0) return;
              pool_line = "warm pool: " + std::to_string(s.pool_hits) + " hits, " +
                          std::to_string(s.pool_misses) + " misses (cold creates); " +
                          std::to_string(s.pool_ready) + " ready, " +
                          std::to_string(s.pool_warming) + " being made, target " +
                          std::to_string(s.pool_target) + "; mean claim " +
                          format_ms(s.pool_claim_us_total, s.pool_hits) + ", mean make " +
                          format_ms(s.pool_refill_us_total, s.pool_refills) + " (" +
                          std::to_string(s.pool_refills) + " made)";
            },
            [](caf::error&) {});
    // Cleanup through the runtime, then the leak checks.
    self->request(sup, std::chrono::minutes(5), release_all_atom_v, release_mode::cancel_execs)
        .receive([](uint64_t) {},
                 [&](caf::error& e) { leaks.push_back("release_all failed: " + describe(e)); });
    if (own_supervisor) {
      self->send_exit(sup, caf::exit_reason::user_shutdown);
      self->wait_for(sup);
    }
    docker::container_list_options lo;
    lo.filters["label"] = {std::string("corral.runtime=") + o.runtime};
    auto left = docker::blocking<std::vector<docker::container_summary>>(
        [&](auto done) { docker_client->container_list(lo, done); });
    if (!left)
      leaks.push_back("could not list containers: " + left.err().describe());
    else if (!left->empty()) {
      leaks.push_back(std::to_string(left->size()) + " containers of runtime " + o.runtime +
                      " left on the engine");
      for (const auto& c : *left)
        docker_client->container_remove(c.id, true, [](const docker::result<void>&) {});
    }
    docker_client->shutdown();
    // Container and monitor actors go shortly after their supervisor.
    for (int i = 0; i < 100 && sys.registry().running() > baseline_actors; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (sys.registry().running() > baseline_actors) {
      leaks.push_back(std::to_string(sys.registry().running() - baseline_actors) +
                      " actors still running");
    }
  }
  if (fake) fake->stop();
  const long fds_after = count_fds();
  const long rss_after = rss_kib();
  if (fds_after > fds_before) {
    leaks.push_back(std::to_string(fds_after - fds_before) +
                    " file descriptors more than before the run");
  }
  // Memory: the allocator keeps some (more after many sandboxes); growth past this is a leak.
  if (rss_after - rss_before > long{128} * 1024 + static_cast<long>(o.keys) * 16) {
    leaks.push_back("resident memory grew by " + std::to_string((rss_after - rss_before) / 1024) +
                    " MiB");
  }

  // Soak: flat over time, the last eighth of the run against the second (after warm-up). Only
  // meaningful when the live set is steady, so it is asked for (--soak), not assumed.
  if (o.soak && samples.size() < 16) leaks.push_back("--soak needs a run of at least 16 samples");
  if (o.soak && samples.size() >= 16) {
    const std::size_t n = samples.size();
    auto median_of = [&](std::size_t from, std::size_t to, auto field) {
      std::vector<long> v;
      for (std::size_t i = from; i < to; ++i) v.push_back(field(samples[i]));
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    const long fds_early = median_of(n / 8, n / 4, [](const sample& s) { return s.fds; });
    const long fds_late = median_of(n - n / 8, n, [](const sample& s) { return s.fds; });
    const long rss_early = median_of(n / 8, n / 4, [](const sample& s) { return s.rss_kib; });
    const long rss_late = median_of(n - n / 8, n, [](const sample& s) { return s.rss_kib; });
    std::printf(
        "\nover the run: fds %ld -> %ld, rss %ld -> %ld KiB (medians of the second and last "
        "eighths)\n",
        fds_early, fds_late, rss_early, rss_late);
    if (fds_late > fds_early + 4) {
      leaks.push_back("open file descriptors rose from " + std::to_string(fds_early) + " to " +
                      std::to_string(fds_late));
    }
    if (rss_late - rss_early > long{64} * 1024) {
      leaks.push_back("resident memory rose from " + std::to_string(rss_early / 1024) + " to " +
                      std::to_string(rss_late / 1024) + " MiB during the run");
    }
  }
  print_report(*out, o);
  if (!pool_line.empty()) std::printf("\n%s\n", pool_line.c_str());
  std::printf("\nmemory: %ld KiB before, %ld KiB after; fds: %ld before, %ld after\n", rss_before,
              rss_after, fds_before, fds_after);
  if (o.json) std::printf("%s\n", report_json(*out, o, samples, leaks).c_str());
  if (!o.csv_path.empty()) write_csv(*out, o.csv_path);
  if (!o.plot_path.empty() && !write_plot(*out, o.plot_path)) {
    std::fprintf(stderr, "corral-stress: could not draw %s (is gnuplot installed?)\n",
                 o.plot_path.c_str());
  }
  // Errors: what the workload injects explains some (an outside kill loses its sandbox; an
  // unreliable fake fails engine calls); any other kind is a failure of the runtime.
  uint64_t unexpected = 0, succeeded = 0;
  std::string unexpected_kinds;
  const auto mix = parse_mix(o.mix);
  const bool kills = std::any_of(mix.begin(), mix.end(), [](const auto& weight) {
    return weight.first == op_kind::kill && weight.second > 0;
  });
  for (const auto& [kind, n] : out->errors) {
    const bool injected =
        (kills && kind == "sandbox_lost") ||
        (o.fake_fault_rate > 0 && (kind == "engine_error" || kind == "engine_unavailable" ||
                                   kind == "timeout" || kind == "sandbox_lost"));
    if (injected) continue;
    unexpected += n;
    unexpected_kinds += (unexpected_kinds.empty() ? "" : ", ") + kind + " " + std::to_string(n);
  }
  for (const auto& op : out->ops) succeeded += op.latency.count() - op.errors;
  bool failed = false;
  if (unexpected > o.max_errors) {
    std::fprintf(stderr,
                 "corral-stress: FAIL: %llu operations failed with errors the workload did not "
                 "inject (%s); --max-errors allows %llu\n",
                 static_cast<unsigned long long>(unexpected), unexpected_kinds.c_str(),
                 static_cast<unsigned long long>(o.max_errors));
    failed = true;
  }
  if (succeeded == 0) {
    std::fprintf(stderr, "corral-stress: FAIL: no operation succeeded\n");
    failed = true;
  }
  if (!leaks.empty()) {
    for (const auto& l : leaks) std::fprintf(stderr, "corral-stress: LEAK: %s\n", l.c_str());
    return exit_code::leaked;
  }
  std::printf("leak check: nothing outlived the run\n");
  if (failed) return exit_code::stress_failed;
  std::printf("errors: %llu not injected by the workload (at most %llu allowed)\n",
              static_cast<unsigned long long>(unexpected),
              static_cast<unsigned long long>(o.max_errors));
  return 0;
}

}  // namespace corral::app
