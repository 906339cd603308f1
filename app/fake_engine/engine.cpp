// The fake engine's life and public face: start (listen, the I/O thread), stop, accepting
// connections, ids and container lookup, the statistics and container views, and the
// fake_engine methods, which reach the I/O thread through call().
#include <filesystem>
#include <future>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include "app/fake_engine/engine.hpp"

namespace corral::app {

using namespace fake;
using std::chrono::milliseconds;

fake_engine::impl::impl(fake_engine_options o)
    : opt(std::move(o)),
      fault_rng(opt.seed),
      id_rng(opt.seed * 0x9E3779B97F4A7C15ULL + 1),
      jitter_rng(opt.seed ^ 0xD1B54A32D192ED03ULL) {}

void fake_engine::impl::start() {
  listen_unix(acceptor, opt.socket_path, opt.backlog);
  work.emplace(asio::make_work_guard(io));
  running = true;
  accept();
  thread = std::thread([self = shared_from_this()] { self->io.run(); });
  io_thread_id = thread.get_id();
}

void fake_engine::impl::stop() {
  std::lock_guard<std::mutex> guard(stop_mutex);
  if (!thread.joinable()) return;
  asio::post(io, [this] {
    stopping = true;
    beast::error_code ignored;
    acceptor.close(ignored);
    accept_timer.cancel();
    agent_accept_timer.cancel();
    for (auto& [id, c] : containers) {
      if (c->main_timer) c->main_timer->cancel();
      c->waiters.clear();
      stop_agent(*c);
    }
    for (auto& [id, e] : execs) {
      if (e->timer) e->timer->cancel();
      e->stream.reset();
    }
    subscribers.clear();
    cpu_queue.clear();
    if (agent_acceptor) {
      agent_acceptor->close(ignored);
      agent_acceptor.reset();
      std::error_code fs_ignored;
      std::filesystem::remove(agent_listen_path, fs_ignored);
    }
    std::vector<std::shared_ptr<session>> open;
    for (auto& [id, weak] : sessions) {
      if (auto s = weak.lock()) open.push_back(std::move(s));
    }
    for (auto& s : open) s->close();
    work.reset();
    // Whatever still waits is destroyed with the io_context; nothing more runs.
    io.stop();
  });
  thread.join();
  running = false;
  std::error_code ec;
  std::filesystem::remove(opt.socket_path, ec);
}

template <class F>
auto fake_engine::impl::call(F f) -> decltype(f()) {
  if (!running || std::this_thread::get_id() == io_thread_id) return f();
  std::packaged_task<decltype(f())()> task(std::move(f));
  auto result = task.get_future();
  asio::post(io, [&task] { task(); });
  return result.get();
}

void fake_engine::impl::accept() {
  acceptor.async_accept([this](beast::error_code ec, unix_socket sock) {
    if (stopping) return;
    if (ec) {
      // Out of descriptors, most likely: try again shortly rather than spin.
      accept_timer.expires_after(milliseconds(10));
      accept_timer.async_wait([this](beast::error_code wait_ec) {
        if (!wait_ec && !stopping) accept();
      });
      return;
    }
    const uint64_t id = next_session++;
    auto s = std::make_shared<session>(*this, std::move(sock), id);
    sessions.emplace(id, s);
    s->read_request();
    accept();
  });
}

void fake_engine::impl::on_session_open(uint64_t) {
  ++st.connections_open;
  ++st.connections_total;
}

void fake_engine::impl::on_session_gone(uint64_t id) {
  --st.connections_open;
  sessions.erase(id);
}

std::string fake_engine::impl::new_id() {
  static constexpr char hex[] = "0123456789abcdef";
  for (;;) {
    std::string id;
    id.reserve(64);
    for (int i = 0; i < 4; ++i) {
      uint64_t v = id_rng();
      for (int j = 0; j < 16; ++j) {
        id.push_back(hex[v & 0xf]);
        v >>= 4;
      }
    }
    if (!containers.count(id) && !execs.count(id)) return id;
  }
}

bool fake_engine::impl::image_exists(const std::string& image) const {
  if (image.empty()) return false;
  if (opt.image_prefixes.empty()) return true;
  return std::any_of(opt.image_prefixes.begin(), opt.image_prefixes.end(),
                     [&](const std::string& p) { return image.rfind(p, 0) == 0; });
}

fake::container_rec* fake_engine::impl::find_container(const std::string& ref) {
  if (ref.empty()) return nullptr;
  if (auto it = containers.find(ref); it != containers.end()) return it->second.get();
  std::string name = ref.front() == '/' ? ref.substr(1) : ref;
  if (auto it = names.find(name); it != names.end()) {
    if (auto c = containers.find(it->second); c != containers.end()) return c->second.get();
  }
  // A unique id prefix.
  container_rec* found = nullptr;
  for (auto& [id, c] : containers) {
    if (id.rfind(ref, 0) == 0) {
      if (found) return nullptr;
      found = c.get();
    }
  }
  return found;
}

// -- views ----------------------------------------------------------------------------------

fake_engine_stats fake_engine::impl::snapshot() const {
  fake_engine_stats out = st;
  out.containers = containers.size();
  out.containers_running = 0;
  for (const auto& [id, c] : containers) out.containers_running += c->running() ? 1 : 0;
  out.connections_open = 0;
  for (const auto& [id, weak] : sessions) out.connections_open += weak.expired() ? 0 : 1;
  return out;
}

std::vector<fake_container_view> fake_engine::impl::view() const {
  std::vector<fake_container_view> out;
  out.reserve(containers.size());
  for (const auto& [id, c] : containers) {
    out.push_back(fake_container_view{c->id, c->name, c->image, c->state, c->exit_code, c->labels,
                                      c->execs.size()});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

// -- public face ----------------------------------------------------------------------------

uint64_t fake_engine_stats::injected_errors_total() const {
  uint64_t n = 0;
  for (const auto& [k, v] : injected_errors) n += v;
  return n;
}

uint64_t fake_engine_stats::injected_resets_total() const {
  uint64_t n = 0;
  for (const auto& [k, v] : injected_resets) n += v;
  return n;
}

uint64_t fake_engine_stats::injected_resets_after_total() const {
  uint64_t n = 0;
  for (const auto& [k, v] : injected_resets_after) n += v;
  return n;
}

std::string fake_engine_stats::summary() const {
  std::ostringstream o;
  o << "requests " << requests_total << " (";
  bool first = true;
  for (const auto& [k, v] : requests) {
    o << (first ? "" : ", ") << k << " " << v;
    first = false;
  }
  o << ")\n";
  o << "connections open " << connections_open << ", total " << connections_total << "\n";
  o << "containers live " << containers << " (running " << containers_running << "), created "
    << containers_created_total << ", removed " << containers_removed_total << "\n";
  o << "execs total " << execs_total << ", running " << execs_running << ", killed " << execs_killed
    << "\n";
  o << "longest queue for the engine's CPUs " << cpu_queued_max << "\n";
  o << "events emitted " << events_emitted << ", subscribers " << event_subscribers << "\n";
  auto by = [&o](const char* what, const std::map<std::string, uint64_t>& m) {
    uint64_t n = 0;
    for (const auto& [k, v] : m) n += v;
    o << what << " " << n;
    if (!m.empty()) {
      o << " (";
      bool f = true;
      for (const auto& [k, v] : m) {
        o << (f ? "" : ", ") << k << " " << v;
        f = false;
      }
      o << ")";
    }
    o << "\n";
  };
  by("injected errors", injected_errors);
  by("injected resets", injected_resets);
  by("injected resets after work", injected_resets_after);
  o << "injected slow " << injected_slow << ", truncations " << injected_truncations
    << ", dropped events " << dropped_events << "\n";
  return o.str();
}

fake_engine::fake_engine(fake_engine_options options)
    : impl_(std::make_shared<impl>(std::move(options))) {
  if (impl_->opt.socket_path.empty()) throw std::invalid_argument("fake_engine: no socket path");
  try {
    impl_->start();
  } catch (const boost::system::system_error& e) {
    throw std::system_error(e.code().value(), std::generic_category(),
                            "fake engine: cannot listen on " + impl_->opt.socket_path);
  }
}

fake_engine::~fake_engine() {
  stop();
}

void fake_engine::stop() {
  impl_->stop();
}

const std::string& fake_engine::socket_path() const noexcept {
  return impl_->opt.socket_path;
}

const fake_engine_options& fake_engine::options() const noexcept {
  return impl_->opt;
}

fake_engine_stats fake_engine::stats() const {
  return impl_->call([this] { return impl_->snapshot(); });
}

std::vector<fake_container_view> fake_engine::containers() const {
  return impl_->call([this] { return impl_->view(); });
}

bool fake_engine::inject_oom(const std::string& id_or_name) {
  return impl_->call([this, id_or_name] {
    auto* c = impl_->find_container(id_or_name);
    if (!c || !c->running()) return false;
    c->oom_killed = true;
    impl_->emit(*c, "oom");
    impl_->container_exit(*c, 137);
    return true;
  });
}

void fake_engine::set_faults(double error_rate, double reset_rate, double truncate_rate,
                             double drop_event_rate) {
  impl_->call([this, error_rate, reset_rate, truncate_rate, drop_event_rate] {
    impl_->opt.error_rate = error_rate;
    impl_->opt.reset_rate = reset_rate;
    impl_->opt.truncate_rate = truncate_rate;
    impl_->opt.drop_event_rate = drop_event_rate;
    return 0;
  });
}

const std::vector<std::string>& fake_engine::endpoint_classes() {
  static const std::vector<std::string> classes = {
      "ping",        "version",    "info",         "create", "start", "stop",    "kill",   "remove",
      "inspect",     "list",       "wait",         "rename", "pause", "unpause", "logs",   "stats",
      "exec_create", "exec_start", "exec_inspect", "events", "image", "archive", "unknown"};
  return classes;
}

}  // namespace corral::app
