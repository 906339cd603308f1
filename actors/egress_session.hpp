// The egress proxy's session and what it stands on, shared by the proxy's own files only
// (internal: actors/egress_proxy.cpp, egress_session.cpp, egress_tunnel.cpp): the services
// every session shares, a sandbox's state, the metered stream to the sandbox, and the session
// class (one accepted connection; its state machine is drawn in egress_session.cpp).
#pragma once

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "actors/egress_ca.hpp"
#include "actors/egress_log.hpp"
#include "actors/egress_proxy.hpp"
#include "actors/egress_rules.hpp"

namespace corral::egress_detail {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using unix_socket = asio::local::stream_protocol::socket;
using clock_type = std::chrono::steady_clock;

constexpr std::size_t head_limit = 16UL * 1024;           // a request head from the sandbox
constexpr std::size_t upstream_head_limit = 64UL * 1024;  // a response head (cookies are long)
constexpr std::size_t hello_limit = 64UL * 1024;          // bytes read to find the SNI
constexpr std::size_t chunk_size = 64UL * 1024;           // one body or tunnel chunk
constexpr auto head_timeout = std::chrono::seconds(30);   // until the request head is in
constexpr auto idle_timeout = std::chrono::seconds(60);   // no byte either way

// -- what sessions share -------------------------------------------------------------------

// Made once per proxy (egress_proxy.cpp).
struct services {
  // Loads or makes the CA, opens the log, and loads the upstream trust store; throws
  // std::runtime_error saying why it cannot.
  explicit services(egress_proxy_options o);

  // The server context presenting a leaf for `host`, made on first use, remade after a week
  // (the leaf lives 30 days). Throws std::runtime_error if OpenSSL fails.
  std::shared_ptr<ssl::context> leaf_context(const std::string& host);

  egress_proxy_options options;
  certificate_authority ca;
  decision_log log;
  ssl::context upstream_tls;

  struct leaf_entry {
    std::shared_ptr<ssl::context> context;
    clock_type::time_point made;
  };
  std::mutex leaf_mutex;
  std::map<std::string, leaf_entry> leaves;
};

class session;

// One sandbox's state, shared by its listener and sessions. The rules never change after
// open(), so sessions read them without a lock.
struct sandbox {
  std::string id;
  std::string socket_path;
  egress_rules rules;
  std::atomic<uint64_t> connections{0}, denied{0}, bytes{0};
  std::atomic<uint32_t> active{0};

  std::mutex mutex;  // guards sessions and closed
  std::vector<std::weak_ptr<session>> sessions;
  bool closed = false;
};

// -- metering the sandbox's side -----------------------------------------------------------

// Per-connection usage, charged to the sandbox's byte budget as bytes move.
struct meter {
  sandbox* box = nullptr;  // the session holds the sandbox alive
  uint64_t up = 0, down = 0;
  clock_type::time_point last = clock_type::now();
  bool cut = false;  // the budget ran out: the connection ends with "byte limit"

  // Charges n bytes; false (and nothing charged) if that would pass max_bytes. Compared and
  // charged in one step: a charge that is refused never counts, even for a moment, so it
  // cannot make another connection's charge that fits look over the budget.
  bool take(std::size_t n) {
    const uint64_t max = box->rules.max_bytes;
    uint64_t used = box->bytes.load();
    do {
      if (max != 0 && used + n > max) {
        cut = true;
        return false;
      }
    } while (!box->bytes.compare_exchange_weak(used, used + n));
    return true;
  }
  void give_back(std::size_t n) { box->bytes.fetch_sub(n); }
};

// The sandbox's unix socket as an Asio stream that meters every byte and can first replay
// bytes already read (the ClientHello that was inspected for its SNI, handed to the TLS
// engine when the proxy terminates TLS). A read past the budget fails and is not forwarded;
// a write is charged before it starts and refunded for what was not written.
class metered_stream {
 public:
  using executor_type = unix_socket::executor_type;
  using lowest_layer_type = unix_socket::lowest_layer_type;

  metered_stream(unix_socket socket, sandbox& box) : socket_(std::move(socket)) {
    meter_.box = &box;
  }

  executor_type get_executor() { return socket_.get_executor(); }
  lowest_layer_type& lowest_layer() { return socket_.lowest_layer(); }
  const lowest_layer_type& lowest_layer() const { return socket_.lowest_layer(); }
  unix_socket& socket() { return socket_; }
  meter& usage() { return meter_; }

  void replay(std::vector<unsigned char> bytes) {
    replay_ = std::move(bytes);
    replay_at_ = 0;
  }

  template <class MutableBuffers, class Handler>
  void async_read_some(const MutableBuffers& buffers, Handler&& handler) {
    if (replay_at_ < replay_.size()) {
      const std::size_t n = asio::buffer_copy(buffers, asio::buffer(replay_) + replay_at_);
      replay_at_ += n;
      asio::post(socket_.get_executor(),
                 [h = std::forward<Handler>(handler), n]() mutable { h(beast::error_code{}, n); });
      return;
    }
    socket_.async_read_some(buffers, [this, h = std::forward<Handler>(handler)](
                                         beast::error_code ec, std::size_t n) mutable {
      if (n > 0) {
        meter_.last = clock_type::now();
        if (!meter_.take(n)) return h(beast::error_code(asio::error::connection_aborted), 0);
        meter_.up += n;
      }
      h(ec, n);
    });
  }

  template <class ConstBuffers, class Handler>
  void async_write_some(const ConstBuffers& buffers, Handler&& handler) {
    const std::size_t size = asio::buffer_size(buffers);
    if (!meter_.take(size)) {
      asio::post(socket_.get_executor(), [h = std::forward<Handler>(handler)]() mutable {
        h(beast::error_code(asio::error::connection_aborted), 0);
      });
      return;
    }
    socket_.async_write_some(buffers, [this, size, h = std::forward<Handler>(handler)](
                                          beast::error_code ec, std::size_t n) mutable {
      meter_.give_back(size - n);
      meter_.down += n;
      if (n > 0) meter_.last = clock_type::now();
      h(ec, n);
    });
  }

 private:
  unix_socket socket_;
  meter meter_;
  std::vector<unsigned char> replay_;
  std::size_t replay_at_ = 0;
};

using sandbox_tls = ssl::stream<metered_stream&>;
using upstream_tls = ssl::stream<tcp::socket&>;
using request_parser = http::request_parser<http::buffer_body>;
using response_parser = http::response_parser<http::buffer_body>;

// An HTTP/1.1 answer with `why` as its text body, closing the connection.
std::string reply_text(http::status status, const std::string& why);

// -- the session (egress_session.cpp, egress_tunnel.cpp; its exchange in egress_relay.hpp) ---

class session : public std::enable_shared_from_this<session> {
 public:
  enum class kind { tunnel, terminate, plain };

  session(unix_socket socket, std::shared_ptr<sandbox> box, std::shared_ptr<services> svc);

  asio::any_io_executor executor() const { return executor_; }

  // A connection within the sandbox's limit: read its request.
  void start();

  // A connection past max_connections: 429 without reading anything.
  void start_refused();

  // Ends the connection, logs it once. Every later handler sees its sockets closed.
  void end(const std::string& why);

  // Rewrites a request before it goes upstream; returns why it may not go.
  std::optional<std::string> rewrite(http::request<http::buffer_body>& req);

  void end_after(beast::error_code ec, const std::string& what);

  metered_stream& down() { return down_; }
  beast::flat_buffer& down_buffer() { return down_buffer_; }
  std::optional<request_parser>& request() { return request_; }
  void count_request() { ++requests_; }

 private:
  // -- head and decision, resolution and connection (egress_session.cpp) -----------------
  void read_head();
  void on_head(beast::error_code ec);
  void resolve();
  void on_resolve(beast::error_code ec, const tcp::resolver::results_type& results);
  void on_addresses(const std::vector<asio::ip::address>& addresses);
  void on_connect(beast::error_code ec);

  // -- the ClientHello (egress_tunnel.cpp) ----------------------------------------------
  void on_established(beast::error_code ec);
  void check_hello();
  void read_hello();
  void on_hello_bytes(beast::error_code ec);
  void deny_in_tunnel(const std::string& why);

  // -- a plain tunnel (egress_tunnel.cpp) -----------------------------------------------
  void on_hello_forwarded(beast::error_code ec);
  void read_sandbox();
  void on_sandbox_bytes(beast::error_code ec, std::size_t n);
  void on_upstream_wrote(beast::error_code ec);
  void read_upstream();
  void on_upstream_bytes(beast::error_code ec, std::size_t n);
  void on_sandbox_wrote(beast::error_code ec);
  template <class Socket>
  void half_close(Socket& other, const char*);

  // -- a terminated tunnel (egress_tunnel.cpp) ------------------------------------------
  void terminate_tls();
  void on_sandbox_handshake(beast::error_code ec);
  void on_upstream_handshake(beast::error_code ec);

  // The exchange of HTTP messages (egress_relay.hpp).
  template <class Down, class Up>
  void run_exchange(Down& down, Up& up, bool keep_alive);

  // -- refusals, limits (egress_session.cpp) ---------------------------------------------
  void refuse(http::status status, const std::string& why);
  void arm_watchdog();
  void on_watchdog();

  struct pump_buffers {
    std::array<char, chunk_size> up{}, down{};
  };

  std::shared_ptr<sandbox> box_;
  std::shared_ptr<services> svc_;
  asio::any_io_executor executor_;  // this session's strand
  metered_stream down_;
  beast::flat_buffer down_buffer_;
  std::optional<request_parser> request_;
  tcp::resolver resolver_;
  tcp::socket up_;
  asio::steady_timer watchdog_;
  std::vector<tcp::endpoint> endpoints_;
  std::vector<unsigned char> hello_;
  std::unique_ptr<pump_buffers> pumps_;
  std::shared_ptr<ssl::context> leaf_;
  std::optional<sandbox_tls> down_tls_;
  std::optional<upstream_tls> up_tls_;
  std::string reply_;

  clock_type::time_point started_, head_deadline_;
  kind kind_ = kind::tunnel;
  std::string host_, method_, plain_path_, decision_ = "denied", why_;
  uint16_t port_ = 0;
  std::optional<egress_credential> credential_;
  int half_closed_ = 0;
  uint64_t requests_ = 0;
  bool holds_slot_ = false;
  bool ended_ = false;
};

}  // namespace corral::egress_detail
