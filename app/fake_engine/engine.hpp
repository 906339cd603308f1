// The fake engine's inside (fake_engine::impl), shared by the library's files, each of which
// defines the members of one concern:
//   engine.cpp              life (start, stop), the listener, ids, lookups, views, public face
//   routing.cpp             a request's route (endpoint class, path parts, query), dispatch
//   faults.cpp              fault injection per request and the cost model (latency, CPUs)
//   system_endpoints.cpp    /_ping, /version, /info, /images
//   container_endpoints.cpp create, start, stop, kill, remove, wait, inspect, list, logs, ...
//   events.cpp              /events subscribers and what every state change emits
//   exec_endpoints.cpp      exec create, start, inspect, and playing an exec's program
//   agent.cpp               the in-memory agent of containers that run corral's agent
// Everything runs on the one I/O thread; the public face reaches it through call().
#pragma once

#include <simdjson.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "app/fake_engine/fake_engine.hpp"
#include "app/fake_engine/http_core.hpp"
#include "app/fake_engine/state.hpp"

namespace corral::app {

class fake_engine::impl : public std::enable_shared_from_this<impl>, public fake::session_host {
 public:
  using session = fake::session;
  using container_rec = fake::container_rec;
  using exec_rec = fake::exec_rec;
  using route = fake::route;
  using subscriber = fake::subscriber;
  using microseconds = std::chrono::microseconds;

  explicit impl(fake_engine_options o);

  void start();
  void stop();

  // All below on the I/O thread.
  void accept();
  // session_host
  void on_request(const std::shared_ptr<session>& s) override;  // faults.cpp
  void on_session_open(uint64_t id) override;
  void on_session_gone(uint64_t id) override;
  bool shutting_down() const override { return stopping; }

  void handle(const std::shared_ptr<session>& s, const route& r);  // routing.cpp

  // endpoints
  void ping(const std::shared_ptr<session>& s, const route& r);
  void version(const std::shared_ptr<session>& s);
  void info(const std::shared_ptr<session>& s);
  void create(const std::shared_ptr<session>& s, const route& r);
  void start_container(const std::shared_ptr<session>& s, container_rec& c);
  void stop_container(const std::shared_ptr<session>& s, container_rec& c, const route& r);
  void kill_container(const std::shared_ptr<session>& s, container_rec& c, const route& r);
  void remove_container(const std::shared_ptr<session>& s, const std::string& id, const route& r);
  void pause_container(const std::shared_ptr<session>& s, container_rec& c, const route& r);
  void rename_container(const std::shared_ptr<session>& s, container_rec& c, const route& r);
  void inspect(const std::shared_ptr<session>& s, const container_rec& c);
  void list(const std::shared_ptr<session>& s, const route& r);
  void wait(const std::shared_ptr<session>& s, container_rec& c, const route& r);
  void stats(const std::shared_ptr<session>& s, const container_rec& c);
  void archive(const std::shared_ptr<session>& s, const container_rec& c, const route& r);
  void exec_create(const std::shared_ptr<session>& s, container_rec& c);
  void exec_start(const std::shared_ptr<session>& s, const std::string& id);
  void exec_inspect(const std::shared_ptr<session>& s, const std::string& id);
  void events(const std::shared_ptr<session>& s, const route& r);
  void logs(const std::shared_ptr<session>& s, const container_rec& c);
  void image(const std::shared_ptr<session>& s, const route& r);

  // lifecycle
  container_rec* find_container(const std::string& ref);
  void container_exit(container_rec& c, int64_t code);
  void emit(const container_rec& c, const std::string& action,
            const std::map<std::string, std::string>& extra = {});
  void run_exec(const std::shared_ptr<exec_rec>& e);
  void exec_step(const std::shared_ptr<exec_rec>& e);
  void finish_exec(const std::shared_ptr<exec_rec>& e, int64_t code, bool killed);
  void kill_execs_of(container_rec& c);
  void notify_waiters(container_rec& c, bool removed);
  void start_agent(container_rec& c);
  void stop_agent(container_rec& c);
  void accept_agent();

  // helpers
  bool roll(double p);
  double rate(const std::map<std::string, double>& by_class, double global,
              const std::string& cls) const;
  microseconds latency_of(const std::string& cls);
  // Runs `then` after `work` spent on one of the engine's CPUs (queueing for one first).
  void on_cpu(const std::shared_ptr<session>& s, microseconds work, bool heavy,
              std::function<void()> then);
  void next_cpu();
  std::string new_id();
  fake_engine_stats snapshot() const;
  std::vector<fake_container_view> view() const;
  bool image_exists(const std::string& image) const;

  template <class F>
  auto call(F f) -> decltype(f());

  // Members: the ones that handlers touch when the io_context destroys them come first, so
  // that they outlive it; everything holding sockets or timers comes after it.
  fake_engine_options opt;
  std::mt19937_64 fault_rng;
  std::mt19937_64 id_rng;
  std::mt19937_64 jitter_rng;
  fake_engine_stats st;
  std::unordered_map<uint64_t, std::weak_ptr<session>> sessions;
  uint64_t next_session = 1;
  int64_t next_pid = 1000;
  bool stopping = false;
  std::atomic<bool> running{false};
  std::thread::id io_thread_id;

  boost::asio::io_context io;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work;
  boost::asio::local::stream_protocol::acceptor acceptor{io};
  boost::asio::steady_timer accept_timer{io};
  boost::asio::steady_timer agent_accept_timer{io};
  std::thread thread;
  std::mutex stop_mutex;

  std::unordered_map<std::string, std::shared_ptr<container_rec>> containers;
  std::unordered_map<std::string, std::string> names;  // name -> id
  std::unordered_map<std::string, std::shared_ptr<exec_rec>> execs;
  std::vector<subscriber> subscribers;
  // The in-memory agents' one listener (opened with the first agent container).
  std::shared_ptr<fake::fake_agent_registry> agent_registry;
  std::unique_ptr<boost::asio::local::stream_protocol::acceptor> agent_acceptor;
  std::string agent_listen_path;
  int cpus_busy = 0;
  std::deque<std::function<void()>> cpu_queue;
  simdjson::dom::parser json;
};

}  // namespace corral::app
