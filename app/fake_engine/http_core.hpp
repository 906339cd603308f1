// The HTTP/1.1 server core of corral's fake Docker engines, apart from what any endpoint
// means: the wire's vocabulary (query decoding, the multiplexed stream's frame header, the
// unix-socket listener) and one connection (`session`) that reads requests, answers them and
// streams raw bytes. The fake engine (engine.hpp) puts its model behind it; the unit tests'
// scripted fake (tests/unit/fake_engine.cpp) plays its scripts on the same sessions (it answers
// at the head stage, sets its own parser limits and resumes the keep-alive loop after a raw
// script), so the two share one connection loop and cannot drift on how a request is read,
// a target decodes or a frame is laid out.
//
// Everything here runs on the one thread of the io_context it was made with.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "docker/asio.hpp"

namespace corral::app::fake {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using unix_socket = asio::local::stream_protocol::socket;

inline constexpr std::string_view api_version = "1.41";
inline constexpr std::string_view engine_version = "20.10.24-fake";
inline constexpr std::size_t frame_size =
    std::size_t{32} * 1024;  // a multiplexed frame's payload, at most
inline constexpr std::size_t max_request_body = 64u << 20;

// What '+' means when percent-decoding. In a query string the engine reads it as a space:
// dockerd parses queries with Go's url.ParseQuery, which treats every query as
// application/x-www-form-urlencoded. In a path segment it is a literal '+'.
enum class plus_sign : uint8_t { literal, space };

// %XX decoded (a malformed escape is kept as it is); '+' as `plus` says.
std::string url_decode(std::string_view text, plus_sign plus);
// "a=1&b&c=x%20y" -> {a: 1, b: "", c: "x y"}: names and values decoded as a query's ('+' is a
// space); a repeated name keeps its last value.
std::map<std::string, std::string> parse_query(std::string_view query);
// A boolean query parameter as the engine reads it: 1, true or True.
bool truthy(const std::map<std::string, std::string>& query, const std::string& key);

// The 8-byte header of one frame of Docker's multiplexed stream (1 stdout, 2 stderr, 3 system
// error) declaring `size` payload bytes.
std::string frame_header(uint8_t stream, uint32_t size);

// Opens, binds and listens on a unix socket at `path`, removing a stale socket file there
// first (never any other kind of file). Throws boost::system::system_error.
void listen_unix(asio::local::stream_protocol::acceptor& acceptor, const std::string& path,
                 int backlog);
// Close with SO_LINGER 0. Abortive on a unix socket (the peer sees ECONNRESET) only while
// bytes it sent are still unread here; otherwise the peer sees an ordinary EOF.
void reset_socket(unix_socket& socket);
// shutdown(both), then close; errors ignored.
void close_socket(unix_socket& socket);

class session;

// How large a request the parser accepts.
struct request_limits {
  std::optional<std::uint32_t> header;  // unset: Beast's default (8 KiB)
  std::uint64_t body = max_request_body;
};

// What a connection needs from the server that accepted it.
class session_host {
 public:
  virtual ~session_host() = default;
  // Asked before every request is read.
  virtual request_limits limits() const { return {}; }
  // The head of a request has been read (session::head()), the body perhaps not yet. True
  // when the host takes the request here: it answers before the body is read (or never reads
  // it), and on_request does not follow. By default the whole request is read first.
  virtual bool on_request_head(const std::shared_ptr<session>& /*s*/) { return false; }
  // A whole request has been read (session::req()); answer it, now or later.
  virtual void on_request(const std::shared_ptr<session>& s) = 0;
  virtual void on_session_open(uint64_t id) = 0;
  virtual void on_session_gone(uint64_t id) = 0;  // from the session's destructor
  // True once the server stops: no more requests are read, no connection is kept alive.
  virtual bool shutting_down() const = 0;
};

// One connection: requests in (Beast's parser, within the host's limits), responses out;
// or, once a handler takes it over, a raw stream out (exec output, events, logs) with what
// the client sends in (stdin) handed to a callback. Lives as long as an operation holds it.
class session : public std::enable_shared_from_this<session> {
 public:
  session(session_host& host, unix_socket sock, uint64_t id);
  ~session();

  uint64_t id() const { return id_; }
  bool closed() const { return closed_; }
  http::request<http::string_body>& req() { return req_; }
  // The head of the request being read, for on_request_head (the body perhaps still unread;
  // once on_request is called, the whole request is req()).
  const http::request_header<>& head() const { return parser_->get(); }
  asio::steady_timer& timer() { return timer_; }
  // Set by fault injection: the next reply() resets the connection instead.
  bool reset_instead_of_reply = false;

  // Reads the next request. The session calls it after a reply that keeps the connection
  // alive; a host whose raw answer leaves the connection open calls it to resume that loop.
  void read_request();

  // A normal response; then the next request (keep-alive) or the close.
  void reply(http::status status, std::string body,
             std::string_view content_type = "application/json",
             const std::vector<std::pair<std::string, std::string>>& headers = {});
  void reply_json(http::status status, std::string json);  // adds the engine's trailing '\n'
  void reply_error(http::status status, std::string_view message);  // {"message": ...}

  void reset();  // SO_LINGER 0, then close
  void close();

  // -- raw streams (exec, events, logs) --------------------------------------------------
  void send_raw(std::string bytes);
  void send_frames(uint8_t stream, std::string_view text);  // in frames of frame_size
  void send_zeros(uint64_t n);  // n zero bytes of stdout, framed, written as they drain
  // f runs once everything queued is written (or the connection is gone).
  void after_drain(std::function<void()> f);
  void end_after_drain();  // close once everything queued is written
  // Reads what the client sends on a hijacked or streaming connection: stdin for an exec,
  // nothing for events (a read then only tells us the client went away).
  void read_stream(std::function<void(std::string_view)> on_data,
                   std::function<void(bool eof)> on_end);

 private:
  struct piece {
    std::string bytes;
    uint64_t zeros = 0;  // > 0: that many zero bytes of stdout, framed
  };

  void read_body();
  void deliver_request();
  void read_more();
  void pump();
  void run_drained();

  session_host& host_;
  unix_socket sock_;
  asio::steady_timer timer_;
  uint64_t id_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> req_;
  bool closed_ = false;
  bool writing_ = false;
  std::deque<piece> out_;
  std::string current_;
  std::vector<std::function<void()>> drained_;
  std::array<char, 4096> in_{};
  std::function<void(std::string_view)> on_data_;
  std::function<void(bool)> on_end_;
};

}  // namespace corral::app::fake
