// The egress proxy's public class (egress_proxy.hpp) and what it runs: the services its
// sessions share, a listener per sandbox socket, and the I/O threads. The sessions it hands
// connections to are egress_session.hpp's.
#include "actors/egress_proxy.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <thread>

#include <sys/stat.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "actors/egress_session.hpp"

namespace corral {

namespace egress_detail {

namespace {

// ALPN toward the sandbox: only http/1.1 is relayed, so only it is chosen; a client offering
// nothing else gets no ALPN and falls back or gives up.
int select_http11(SSL*, const unsigned char** out, unsigned char* out_len, const unsigned char* in,
                  unsigned int in_len, void*) {
  static constexpr unsigned char proto[] = {'h', 't', 't', 'p', '/', '1', '.', '1'};
  for (unsigned int i = 0; i < in_len;) {
    const unsigned int len = in[i];
    if (i + 1 + len > in_len) break;
    if (len == sizeof proto && std::memcmp(in + i + 1, proto, sizeof proto) == 0) {
      *out = in + i + 1;
      *out_len = static_cast<unsigned char>(len);
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + len;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

}  // namespace

// -- what sessions share -------------------------------------------------------------------

services::services(egress_proxy_options o)
    : options(std::move(o)),
      ca(options.ca_dir),
      log(options.log_path),
      upstream_tls(ssl::context::tls_client) {
  upstream_tls.set_verify_mode(ssl::verify_peer);
  SSL_CTX_set_min_proto_version(upstream_tls.native_handle(), TLS1_2_VERSION);
  boost::system::error_code ec;
  if (options.upstream_ca_file.empty()) {
    const char* bundle = "/etc/ssl/certs/ca-certificates.crt";
    if (::access(bundle, R_OK) == 0) upstream_tls.load_verify_file(bundle, ec);
    if (!ec) upstream_tls.add_verify_path("/etc/ssl/certs", ec);
  } else {
    upstream_tls.load_verify_file(options.upstream_ca_file, ec);
  }
  if (ec) throw std::runtime_error("cannot load the upstream trust store: " + ec.message());
  // Only HTTP/1.1 is relayed upstream too (SSL_CTX_set_alpn_protos returns 0 on success).
  static constexpr unsigned char alpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  if (SSL_CTX_set_alpn_protos(upstream_tls.native_handle(), alpn, sizeof alpn) != 0)
    fail_tls("cannot set ALPN");
}

std::shared_ptr<ssl::context> services::leaf_context(const std::string& host) {
  std::lock_guard lock(leaf_mutex);
  auto& entry = leaves[host];
  if (entry.context && clock_type::now() - entry.made < std::chrono::hours(24 * 7))
    return entry.context;
  auto [key, cert] = ca.leaf(host);
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  if (SSL_CTX_use_certificate(native, cert.get()) != 1 ||
      SSL_CTX_use_PrivateKey(native, key.get()) != 1)
    fail_tls("cannot use the leaf for " + host);
  SSL_CTX_set_alpn_select_cb(native, select_http11, nullptr);
  entry = {ctx, clock_type::now()};
  return ctx;
}

namespace {

// -- listening -----------------------------------------------------------------------------

class listener : public std::enable_shared_from_this<listener> {
 public:
  listener(asio::io_context& io, std::shared_ptr<sandbox> box, std::shared_ptr<services> svc)
      : io_(io),
        acceptor_(asio::any_io_executor(asio::make_strand(io))),
        retry_(acceptor_.get_executor()),
        box_(std::move(box)),
        svc_(std::move(svc)) {}

  asio::local::stream_protocol::acceptor& acceptor() { return acceptor_; }
  const std::shared_ptr<sandbox>& box() const { return box_; }

  void accept() {
    acceptor_.async_accept(asio::any_io_executor(asio::make_strand(io_)),
                           [self = shared_from_this()](beast::error_code ec, unix_socket socket) {
                             self->on_accept(ec, std::move(socket));
                           });
  }

  void close() {
    beast::error_code ignored;
    acceptor_.close(ignored);
    retry_.cancel();
  }

 private:
  void on_accept(beast::error_code ec, unix_socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec) {
      // Out of descriptors, most likely: try again shortly rather than spin.
      retry_.expires_after(std::chrono::milliseconds(100));
      retry_.async_wait([self = shared_from_this()](beast::error_code ec) {
        if (!ec) self->accept();
      });
      return;
    }
    admit(std::move(socket));
    accept();
  }

  void admit(unix_socket socket) {
    auto s = std::make_shared<session>(std::move(socket), box_, svc_);
    {
      std::lock_guard lock(box_->mutex);
      if (box_->closed) return;  // closing: the socket closes with `s`
      std::erase_if(box_->sessions, [](const auto& w) { return w.expired(); });
      box_->sessions.push_back(s);
    }
    const bool within = box_->active.fetch_add(1) < box_->rules.max_connections;
    if (!within) box_->active.fetch_sub(1);
    asio::post(s->executor(), [s, within] { within ? s->start() : s->start_refused(); });
  }

  asio::io_context& io_;
  asio::local::stream_protocol::acceptor acceptor_;
  asio::steady_timer retry_;
  std::shared_ptr<sandbox> box_;
  std::shared_ptr<services> svc_;
};

// Fulfils a promise when the last copy goes: the posted closings all ran (or were dropped).
struct completion_latch {
  std::promise<void> done;
  ~completion_latch() { done.set_value(); }
};

}  // namespace

}  // namespace egress_detail

using namespace egress_detail;

// -- the proxy -----------------------------------------------------------------------------

class egress_proxy::impl {
 public:
  explicit impl(egress_proxy_options options)
      : svc(std::make_shared<services>(std::move(options))), work(asio::make_work_guard(io)) {
    const std::size_t n = std::max<std::size_t>(1, svc->options.threads);
    for (std::size_t i = 0; i < n; ++i) threads.emplace_back([this] { io.run(); });
  }

  ~impl() {
    std::vector<std::string> ids;
    {
      std::lock_guard lock(mutex);
      for (const auto& [id, l] : listeners) ids.push_back(id);
    }
    for (const auto& id : ids) close(id, true);
    work.reset();
    io.stop();
    for (auto& t : threads) t.join();
  }

  std::string open(const std::string& id, const std::string& path, egress_rules rules, uint32_t uid,
                   uint32_t gid) {
    if (auto why = validate(rules)) return "egress rules: " + *why;
    std::map<std::string, std::string> resolve;
    for (auto& [host, address] : rules.resolve) resolve[normalize_host(host)] = address;
    rules.resolve = std::move(resolve);

    std::lock_guard lock(mutex);
    if (listeners.contains(id)) return "sandbox " + id + " already has an egress socket";
    for (const auto& [other, l] : listeners)
      if (l->box()->socket_path == path) return path + " is the egress socket of sandbox " + other;
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) return path + " exists and is not a socket";
      ::unlink(path.c_str());  // left by an earlier run
    }

    auto box = std::make_shared<sandbox>();
    box->id = id;
    box->socket_path = path;
    box->rules = std::move(rules);
    auto l = std::make_shared<listener>(io, box, svc);
    auto& acceptor = l->acceptor();
    beast::error_code ec;
    auto fail = [&](const std::string& what) {
      beast::error_code ignored;
      acceptor.close(ignored);
      ::unlink(path.c_str());
      return what;
    };
    asio::local::stream_protocol::endpoint endpoint;
    try {
      endpoint = asio::local::stream_protocol::endpoint(path);
    } catch (const boost::system::system_error& e) {
      return "cannot use " + path + " as a socket path: " + e.code().message();
    }
    acceptor.open(endpoint.protocol(), ec);
    if (!ec) acceptor.bind(endpoint, ec);
    if (ec) return fail("cannot bind " + path + ": " + ec.message());
    // Mode and owner are set between bind and listen: until listen, no connect succeeds, so
    // no other user can get in through a moment of looser permissions.
    if (::chmod(path.c_str(), 0600) != 0)
      return fail("cannot chmod " + path + ": " + std::strerror(errno));
    if (::chown(path.c_str(), uid, gid) != 0)
      return fail("cannot chown " + path + " to " + std::to_string(uid) + ":" +
                  std::to_string(gid) + ": " + std::strerror(errno));
    acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return fail("cannot listen on " + path + ": " + ec.message());
    listeners.emplace(id, l);
    asio::post(acceptor.get_executor(), [l] { l->accept(); });
    return {};
  }

  void close(const std::string& id, bool wait) {
    std::shared_ptr<listener> l;
    {
      std::lock_guard lock(mutex);
      auto it = listeners.find(id);
      if (it == listeners.end()) return;
      l = std::move(it->second);
      listeners.erase(it);
    }
    const auto& box = l->box();
    ::unlink(box->socket_path.c_str());
    std::vector<std::weak_ptr<session>> sessions;
    {
      std::lock_guard lock(box->mutex);
      box->closed = true;
      sessions.swap(box->sessions);
    }
    auto latch = std::make_shared<completion_latch>();
    auto done = latch->done.get_future();
    asio::post(l->acceptor().get_executor(), [l, latch] { l->close(); });
    for (auto& weak : sessions) {
      if (auto s = weak.lock()) asio::post(s->executor(), [s, latch] { s->end("sandbox closed"); });
    }
    latch.reset();
    // From a proxy thread, waiting could deadlock on our own strand: the posts suffice.
    if (wait && !io.get_executor().running_in_this_thread()) done.wait_for(std::chrono::seconds(5));
  }

  counters counters_of(const std::string& id) const {
    std::lock_guard lock(mutex);
    auto it = listeners.find(id);
    if (it == listeners.end()) return {};
    const auto& box = *it->second->box();
    return {box.connections.load(), box.denied.load(), box.bytes.load()};
  }

  asio::io_context io;  // first: destroyed last, after everything that holds its handlers
  std::shared_ptr<services> svc;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  mutable std::mutex mutex;  // guards listeners
  std::map<std::string, std::shared_ptr<listener>> listeners;
  std::vector<std::thread> threads;
};

egress_proxy::egress_proxy(egress_proxy_options options)
    : impl_(std::make_unique<impl>(std::move(options))) {}

egress_proxy::~egress_proxy() = default;

std::string egress_proxy::open(const std::string& sandbox_id, const std::string& socket_path,
                               egress_rules rules, uint32_t uid, uint32_t gid) {
  return impl_->open(sandbox_id, socket_path, std::move(rules), uid, gid);
}

void egress_proxy::close(const std::string& sandbox_id, bool wait) {
  impl_->close(sandbox_id, wait);
}

std::string egress_proxy::ca_cert_path() const {
  return impl_->svc->ca.cert_path();
}

std::string egress_proxy::trust_bundle() const {
  std::string bundle = read_file("/etc/ssl/certs/ca-certificates.crt").value_or("");
  if (!bundle.empty() && bundle.back() != '\n') bundle += '\n';
  return bundle + impl_->svc->ca.cert_pem();
}

egress_proxy::counters egress_proxy::counters_of(const std::string& sandbox_id) const {
  return impl_->counters_of(sandbox_id);
}

}  // namespace corral
