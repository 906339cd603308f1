#include "app/tls_listener.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <cstring>
#include <deque>
#include <utility>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <caf/all.hpp>
#include <caf/detail/socket_guard.hpp>
#include <caf/io/all.hpp>
#include <caf/io/basp_broker.hpp>
#include <caf/io/middleman_actor_impl.hpp>
#include <caf/io/network/default_multiplexer.hpp>
#include <caf/io/network/doorman_impl.hpp>
#include <caf/io/network/interfaces.hpp>
#include <caf/io/network/stream_impl.hpp>
#include "actors/openssl_errors.hpp"

namespace corral::app {

namespace {

using caf::io::network::native_socket;
using caf::io::network::rw_state;
using default_mpx = caf::io::network::default_multiplexer;
using clock_type = std::chrono::steady_clock;

using actors::openssl_errors;

// OpenSSL writes with write(2): a peer gone mid-write raises SIGPIPE, which would kill the
// process. Blocked around each call on this thread, and a pending one consumed (CAF's
// openssl module does the same).
class sigpipe_guard {
 public:
  sigpipe_guard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &saved_);
  }
  ~sigpipe_guard() {
    timespec zero{};
    sigtimedwait(&pipe_, nullptr, &zero);
    pthread_sigmask(SIG_SETMASK, &saved_, nullptr);
  }
  sigpipe_guard(const sigpipe_guard&) = delete;
  sigpipe_guard& operator=(const sigpipe_guard&) = delete;

 private:
  sigset_t pipe_;
  sigset_t saved_;
};

class tls_session;

// Connections between accept and a verified certificate, oldest first. Only CAF's I/O
// thread (the multiplexer) touches it.
class handshake_budget {
 public:
  handshake_budget(const tls_listener_options& options, std::shared_ptr<tls_listener_stats> stats)
      : options_(options), stats_(std::move(stats)) {}

  // Before a new connection: cuts handshakes past the deadline, then makes room or says no.
  bool admit() {
    const auto now = clock_type::now();
    ++stats_->accepted;
    while (!pending_.empty() && now - pending_.front().since > options_.handshake_deadline)
      cut_oldest();
    if (pending_.size() < options_.max_handshakes) return true;
    if (now - pending_.front().since >= options_.evict_after) {
      cut_oldest();
      return true;
    }
    ++stats_->refused;
    return false;
  }

  void add(tls_session* s, native_socket fd) {
    pending_.push_back({s, fd, clock_type::now()});
    ++stats_->in_handshake;
  }

  // The handshake is done (`verified`) or the session is gone.
  void done(tls_session* s, bool verified) {
    for (auto i = pending_.begin(); i != pending_.end(); ++i) {
      if (i->session != s) continue;
      pending_.erase(i);
      --stats_->in_handshake;
      if (verified) ++stats_->authenticated;
      return;
    }
  }

 private:
  // Shutting the socket down (not closing it: CAF owns the descriptor) wakes its stream,
  // whose SSL_accept then fails: CAF closes the connection the ordinary way.
  void cut_oldest() {
    ::shutdown(pending_.front().fd, SHUT_RDWR);
    pending_.pop_front();
    --stats_->in_handshake;
    ++stats_->cut;
  }

  struct pending {
    tls_session* session;
    native_socket fd;
    clock_type::time_point since;
  };
  tls_listener_options options_;
  std::shared_ptr<tls_listener_stats> stats_;
  std::deque<pending> pending_;
};

// One connection's TLS state (CAF's openssl::session on a shared context): accepted (with a
// handshake budget) or connected (without).
//
// CAF's own session leaves OpenSSL's per-thread error queue filled when a connection fails;
// the next SSL call on that I/O thread, for another connection, then reads as an error
// (SSL_get_error answers SSL_ERROR_SSL while the queue is not empty), and that healthy
// connection is closed: with a router, one node dying cut the others. This one clears the
// queue before every call.
class tls_session {
 public:
  tls_session(SSL_CTX* ctx, std::shared_ptr<handshake_budget> budget)
      : ssl_(SSL_new(ctx)), budget_(std::move(budget)) {}

  ~tls_session() {
    if (handshaking_ && budget_) budget_->done(this, false);
    SSL_free(ssl_);
  }

  tls_session(const tls_session&) = delete;
  tls_session& operator=(const tls_session&) = delete;

  // Starts the handshake: as the server with a budget, else as the client.
  bool start(native_socket fd) {
    if (!ssl_ || SSL_set_fd(ssl_, fd) != 1) return false;
    if (budget_) {
      SSL_set_accept_state(ssl_);
      budget_->add(this, fd);
    } else {
      SSL_set_connect_state(ssl_);
    }
    handshaking_ = true;
    return step_handshake() != rw_state::failure;
  }

  rw_state read_some(size_t& result, native_socket, void* buf, size_t len) {
    return do_some(SSL_read, result, buf, len);
  }

  rw_state write_some(size_t& result, native_socket, const void* buf, size_t len) {
    auto write = [](SSL* ssl, void* data, int n) { return SSL_write(ssl, data, n); };
    return do_some(write, result, const_cast<void*>(buf), len);
  }

  bool must_read_more(native_socket, size_t threshold) {
    return static_cast<size_t>(SSL_pending(ssl_)) >= threshold;
  }

 private:
  // success: done or waiting for the peer; failure: the connection is over.
  rw_state step_handshake() {
    sigpipe_guard guard;
    ERR_clear_error();
    const int ret = SSL_do_handshake(ssl_);
    if (ret == 1) {
      handshaking_ = false;
      if (budget_) budget_->done(this, true);
      return rw_state::success;
    }
    return would_block(ret) ? rw_state::success : rw_state::failure;
  }

  bool would_block(int ret) {
    switch (SSL_get_error(ssl_, ret)) {
      case SSL_ERROR_WANT_READ:
      case SSL_ERROR_WANT_WRITE:
        return true;
      default:
        ERR_clear_error();
        return false;
    }
  }

  rw_state do_some(int (*f)(SSL*, void*, int), size_t& result, void* buf, size_t len) {
    result = 0;
    if (handshaking_) {
      if (auto st = step_handshake(); st == rw_state::failure || handshaking_) return st;
    }
    if (len == 0) return rw_state::indeterminate;
    sigpipe_guard guard;
    ERR_clear_error();
    const int ret = f(ssl_, buf, static_cast<int>(len));
    if (ret > 0) {
      result = static_cast<size_t>(ret);
      return rw_state::success;
    }
    return would_block(ret) ? rw_state::success : rw_state::failure;
  }

  SSL* ssl_;
  std::shared_ptr<handshake_budget> budget_;  // null: the client side
  bool handshaking_ = false;
};

// The stream policy CAF's stream_impl calls.
struct tls_policy {
  explicit tls_policy(std::unique_ptr<tls_session> s) : session(std::move(s)) {}
  rw_state read_some(size_t& result, native_socket fd, void* buf, size_t len) {
    return session->read_some(result, fd, buf, len);
  }
  rw_state write_some(size_t& result, native_socket fd, const void* buf, size_t len) {
    return session->write_some(result, fd, buf, len);
  }
  bool must_read_more(native_socket fd, size_t threshold) {
    return session->must_read_more(fd, threshold);
  }
  std::unique_ptr<tls_session> session;
};

// CAF's openssl scribe_impl, unchanged but for the policy.
class tls_scribe : public caf::io::scribe {
 public:
  tls_scribe(default_mpx& mpx, native_socket fd, std::unique_ptr<tls_session> s)
      : scribe(caf::io::network::conn_hdl_from_socket(fd)), stream_(mpx, fd, std::move(s)) {}

  void configure_read(caf::io::receive_policy::config config) override {
    stream_.configure_read(config);
    if (!launched_) launch();
  }
  void ack_writes(bool enable) override { stream_.ack_writes(enable); }
  std::vector<char>& wr_buf() override { return stream_.wr_buf(); }
  std::vector<char>& rd_buf() override { return stream_.rd_buf(); }
  void graceful_shutdown() override {
    stream_.graceful_shutdown();
    detach(&stream_.backend(), false);
  }
  void flush() override { stream_.flush(this); }
  std::string addr() const override {
    auto x = caf::io::network::remote_addr_of_fd(stream_.fd());
    return x ? *x : std::string();
  }
  uint16_t port() const override {
    auto x = caf::io::network::remote_port_of_fd(stream_.fd());
    return x ? *x : 0;
  }
  void add_to_loop() override { stream_.activate(this); }
  void remove_from_loop() override { stream_.passivate(); }

 private:
  void launch() {
    launched_ = true;
    stream_.start(this);
    // Schedules the stream so that the handshake proceeds before BASP writes anything.
    stream_.force_empty_write(this);
  }

  bool launched_ = false;
  caf::io::network::stream_impl<tls_policy> stream_;
};

class tls_doorman : public caf::io::network::doorman_impl {
 public:
  tls_doorman(default_mpx& mpx, native_socket fd, std::shared_ptr<SSL_CTX> ctx,
              std::shared_ptr<handshake_budget> budget)
      : doorman_impl(mpx, fd), ctx_(std::move(ctx)), budget_(std::move(budget)) {}

  bool new_connection() override {
    if (detached()) return false;
    auto& mpx = acceptor_.backend();
    auto fd = acceptor_.accepted_socket();
    caf::detail::socket_guard guard{fd};  // closes it unless a scribe takes it
    if (!budget_->admit()) return false;
    caf::io::network::nonblocking(fd, true);
    auto session = std::make_unique<tls_session>(ctx_.get(), budget_);
    if (!session->start(fd)) return false;
    auto scribe = caf::make_counted<tls_scribe>(mpx, fd, std::move(session));
    guard.release();
    auto hdl = scribe->hdl();
    parent()->add_scribe(std::move(scribe));
    return doorman::new_connection(&mpx, hdl);
  }

  // CAF 0.17's multiplexer queues loop changes and squashes an add and a remove queued in one
  // I/O cycle into nothing. A listener opened and closed at once (a node stopped the moment
  // it printed its port) then never hears that it left the loop, so its acceptor keeps its
  // reference to this doorman: a cycle that leaked the listener, its socket and its TLS
  // context (ASan's leak check caught it). A listener not in the loop (no events registered)
  // will get no such notice, so it is given here; the broker still holds this doorman, so
  // dropping the acceptor's reference cannot end it mid-call.
  void remove_from_loop() override {
    doorman_impl::remove_from_loop();
    if (acceptor_.eventbf() == 0) acceptor_.removed_from_loop(caf::io::network::operation::read);
  }

 private:
  std::shared_ptr<SSL_CTX> ctx_;
  std::shared_ptr<handshake_budget> budget_;
};

class tls_middleman_impl : public caf::io::middleman_actor_impl {
 public:
  tls_middleman_impl(caf::actor_config& cfg, caf::actor broker, std::shared_ptr<SSL_CTX> server_ctx,
                     std::shared_ptr<SSL_CTX> client_ctx, std::shared_ptr<handshake_budget> budget)
      : middleman_actor_impl(cfg, std::move(broker)),
        server_ctx_(std::move(server_ctx)),
        client_ctx_(std::move(client_ctx)),
        budget_(std::move(budget)) {}

  const char* name() const override { return "corral::tls_middleman"; }

  // This actor runs on a thread of its own, where OpenSSL keeps per-thread state (the random
  // generators a client's handshake draws from, the error queue). OpenSSL frees it when the
  // thread ends, but CAF counts a detached actor done before its thread ends, so a process
  // could exit first and leave it (ASan's leak check saw a CLI client do so, rarely). Freed
  // here, on that thread, as the actor ends.
  void on_exit() override {
    middleman_actor_impl::on_exit();
    OPENSSL_thread_stop();
  }

 protected:
  caf::expected<caf::io::scribe_ptr> connect(const std::string& host, uint16_t port) override {
    auto fd = caf::io::network::new_tcp_connection(host, port);
    if (!fd) return std::move(fd.error());
    caf::detail::socket_guard guard{*fd};
    caf::io::network::nonblocking(*fd, true);
    auto session = std::make_unique<tls_session>(client_ctx_.get(), nullptr);
    if (!session->start(*fd)) return caf::sec::cannot_connect_to_node;
    guard.release();
    return caf::make_counted<tls_scribe>(mpx(), *fd, std::move(session));
  }

  caf::expected<caf::io::doorman_ptr> open(uint16_t port, const char* addr, bool reuse) override {
    auto fd = caf::io::network::new_tcp_acceptor_impl(port, addr, reuse);
    if (!fd) return std::move(fd.error());
    return caf::make_counted<tls_doorman>(mpx(), *fd, server_ctx_, budget_);
  }

 private:
  default_mpx& mpx() { return static_cast<default_mpx&>(system().middleman().backend()); }

  std::shared_ptr<SSL_CTX> server_ctx_;
  std::shared_ptr<SSL_CTX> client_ctx_;
  std::shared_ptr<handshake_budget> budget_;
};

// One side's context: its certificate and key, the CA the peer must chain to, the peer's
// certificate required and verified (OpenSSL also checks its purpose: a client's
// certificate cannot pose as a node's), TLS 1.2 at least, no resumption.
caf::expected<std::shared_ptr<SSL_CTX>> make_context(const tls_options& tls, bool server,
                                                     long max_cert_list) {
  auto fail = [](const std::string& what) -> caf::error {
    return caf::make_error(caf::sec::runtime_error, what + ": " + openssl_errors());
  };
  ERR_clear_error();
  std::shared_ptr<SSL_CTX> ctx{SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()),
                               SSL_CTX_free};
  if (!ctx) return fail("cannot make a TLS context");
  SSL_CTX* c = ctx.get();
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  if (SSL_CTX_use_certificate_chain_file(c, tls.certificate.c_str()) != 1)
    return fail("cannot load the certificate " + tls.certificate);
  if (SSL_CTX_use_PrivateKey_file(c, tls.key.c_str(), SSL_FILETYPE_PEM) != 1)
    return fail("cannot load the key " + tls.key);
  if (SSL_CTX_check_private_key(c) != 1)
    return fail(tls.key + " is not the key of " + tls.certificate);
  if (SSL_CTX_load_verify_locations(c, tls.ca.c_str(), nullptr) != 1)
    return fail("cannot load the CA " + tls.ca);
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  SSL_CTX_set_max_cert_list(c, max_cert_list);
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(c, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
  if (server) {
    if (auto* names = SSL_load_client_CA_file(tls.ca.c_str())) SSL_CTX_set_client_CA_list(c, names);
    SSL_CTX_set_num_tickets(c, 0);
  }
  if (SSL_CTX_set_cipher_list(c, "HIGH:!aNULL:!MD5") != 1) return fail("cannot set the ciphers");
  return ctx;
}

}  // namespace

tls_middleman::~tls_middleman() {
  auto& sys = actor.home_system();
  if (sys.registry().get(registry_name) == caf::actor_cast<caf::strong_actor_ptr>(actor))
    sys.registry().erase(registry_name);
  caf::anon_send_exit(actor, caf::exit_reason::kill);
}

caf::expected<std::shared_ptr<tls_middleman>> spawn_tls_middleman(
    caf::actor_system& sys, const tls_options& tls, const tls_listener_options& options) {
  auto server_ctx = make_context(tls, true, options.max_cert_list);
  if (!server_ctx) return std::move(server_ctx.error());
  auto client_ctx = make_context(tls, false, options.max_cert_list);
  if (!client_ctx) return std::move(client_ctx.error());
  auto stats = std::make_shared<tls_listener_stats>();
  auto budget = std::make_shared<handshake_budget>(options, stats);
  auto broker = sys.middleman().named_broker<caf::io::basp_broker>(caf::atom("BASP"));
  caf::io::middleman_actor actor = sys.spawn<tls_middleman_impl, caf::detached + caf::hidden>(
      std::move(broker), *server_ctx, *client_ctx, budget);
  sys.registry().put(tls_middleman::registry_name, caf::actor_cast<caf::strong_actor_ptr>(actor));
  auto out = std::make_shared<tls_middleman>();
  out->actor = actor;
  out->stats = stats;
  return out;
}

caf::expected<uint16_t> publish_tls(const caf::strong_actor_ptr& whom, std::set<std::string> sigs,
                                    uint16_t port, const std::string& host,
                                    const tls_middleman& mm) {
  auto f = caf::make_function_view(mm.actor);
  return f(caf::publish_atom_v, port, whom, std::move(sigs), host, true);
}

caf::expected<void> unpublish_tls(const caf::actor_addr& whom, uint16_t port,
                                  const tls_middleman& mm) {
  auto f = caf::make_function_view(mm.actor);
  return f(caf::unpublish_atom_v, whom, port);
}

}  // namespace corral::app
