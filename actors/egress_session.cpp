// One session per accepted connection, each async step its own handler, on a strand:
//
//   read_head ─► on_head ─► resolve ─► on_addresses ─► on_connect ─┬─ plain ─► exchange ─► end
//      │400        │400/403    │502       │403            │502     │
//      ▼           ▼           ▼          ▼               ▼        └─ CONNECT ─► on_established
//     end ◄────── refuse ◄─────┴──────────┴───────────────┘                        │ (200 sent)
//                                                                                 read_hello
//   SNI ≠ host, not TLS: end                                                   on_hello_bytes
//      tunnel:      forward hello ─► on_hello_forwarded ─► splice (both ways) ─► end
//      credential:  on_sandbox_handshake ─► on_upstream_handshake ─► exchange ─► end
//
// A watchdog timer ends the session on the head timeout, idleness or the connection's age.
// Bytes are metered where the sandbox's stream is read and written (metered_stream), so one
// budget covers tunnels, terminated TLS and plain HTTP alike.
//
// This file holds the session's start, its head and decision, resolution and connection, its
// refusals and limits; after a CONNECT it goes on in egress_tunnel.cpp, and its HTTP exchange
// is egress_relay.hpp.
#include "actors/egress_session.hpp"

#include <algorithm>
#include <cctype>
#include <limits>
#include <string_view>

#include "actors/egress_relay.hpp"

namespace corral::egress_detail {

namespace {

// -- request targets -----------------------------------------------------------------------

struct authority {
  std::string host;  // as written, without IPv6 brackets
  uint16_t port = 0;
};

std::optional<uint16_t> parse_port(std::string_view s) {
  if (s.empty() || s.size() > 5) return std::nullopt;
  unsigned value = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value == 0 || value > 65535) return std::nullopt;
  return static_cast<uint16_t>(value);
}

// "host:port", "[v6]:port"; without a port, `default_port` (0: a port is required).
std::optional<authority> parse_authority(std::string_view s, uint16_t default_port) {
  if (s.empty() || s.find('@') != s.npos) return std::nullopt;  // no userinfo
  authority a;
  std::string_view rest;
  if (s.front() == '[') {
    const auto close = s.find(']');
    if (close == s.npos) return std::nullopt;
    a.host = std::string(s.substr(1, close - 1));
    rest = s.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return std::nullopt;
  } else {
    const auto colon = s.rfind(':');
    a.host = std::string(s.substr(0, colon));
    if (a.host.find(':') != std::string::npos) return std::nullopt;  // bare IPv6
    if (colon != s.npos) rest = s.substr(colon);
  }
  if (a.host.empty()) return std::nullopt;
  if (rest.empty()) {
    if (default_port == 0) return std::nullopt;
    a.port = default_port;
    return a;
  }
  auto port = parse_port(rest.substr(1));
  if (!port) return std::nullopt;
  a.port = *port;
  return a;
}

struct absolute_target {
  authority where;
  std::string path;  // origin-form: "/x?y"
};

std::optional<absolute_target> parse_http_target(std::string_view t) {
  constexpr std::string_view scheme = "http://";
  if (t.size() < scheme.size()) return std::nullopt;
  for (std::size_t i = 0; i < scheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(t[i])) != scheme[i]) return std::nullopt;
  t.remove_prefix(scheme.size());
  const auto end = t.find_first_of("/?#");
  auto where = parse_authority(t.substr(0, end), 80);
  if (!where) return std::nullopt;
  std::string path(end == t.npos ? std::string_view("/") : t.substr(end));
  path = path.substr(0, path.find('#'));
  if (path.empty() || path.front() == '?') path.insert(0, "/");
  return absolute_target{*where, path};
}

bool is_closed_by_peer(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::ssl::error::stream_truncated || ec == asio::error::connection_reset;
}

}  // namespace

std::string reply_text(http::status status, const std::string& why) {
  const std::string body = why + "\n";
  return "HTTP/1.1 " + std::to_string(static_cast<unsigned>(status)) + " " +
         std::string(http::obsolete_reason(status)) +
         "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + body;
}

// -- the session ---------------------------------------------------------------------------

session::session(unix_socket socket, std::shared_ptr<sandbox> box, std::shared_ptr<services> svc)
    : box_(std::move(box)),
      svc_(std::move(svc)),
      executor_(socket.get_executor()),
      down_(std::move(socket), *box_),
      down_buffer_(head_limit + 4096),
      resolver_(executor_),
      up_(executor_),
      watchdog_(executor_),
      started_(clock_type::now()),
      head_deadline_(started_ + head_timeout) {}

void session::start() {
  if (ended_) return;  // closed with its sandbox before it started
  holds_slot_ = true;
  box_->connections.fetch_add(1);
  arm_watchdog();
  read_head();
}

void session::start_refused() {
  box_->connections.fetch_add(1);
  arm_watchdog();
  refuse(http::status::too_many_requests, "too many connections (max_connections " +
                                              std::to_string(box_->rules.max_connections) + ")");
}

void session::end(const std::string& why) {
  if (ended_) return;
  ended_ = true;
  if (why_.empty()) why_ = why;
  if (down_.usage().cut) why_ = "byte limit";
  // The line is written before the sockets close, so whoever sees this connection end (the
  // command in the sandbox, a test) finds it in the log. A connection that sent nothing is
  // not a decision: a sandbox looping connect and close must not write a line each time.
  if (!method_.empty() || down_.usage().up != 0 || !reply_.empty()) {
    svc_->log.write(
        {box_->id, host_, method_, decision_, why_, port_, down_.usage().up, down_.usage().down});
  }
  beast::error_code ignored;
  down_.socket().close(ignored);
  up_.close(ignored);
  resolver_.cancel();
  watchdog_.cancel();
  if (holds_slot_) box_->active.fetch_sub(1);
  holds_slot_ = false;
}

std::optional<std::string> session::rewrite(http::request<http::buffer_body>& req) {
  if (kind_ == kind::terminate) {
    if (req.target().empty() || (req.target().front() != '/' && req.target() != "*"))
      return "inside the tunnel a request target is a path (origin-form)";
  } else {
    req.target(plain_path_);
    req.keep_alive(false);  // one exchange per plain connection: its next host may differ
  }
  // Host is the host that was decided on: a different Host header would reach another
  // virtual host of the same server, carrying the credential with it.
  const uint16_t default_port = kind_ == kind::terminate ? 443 : 80;
  const bool v6 = host_.find(':') != std::string::npos;
  std::string host_field = v6 ? "[" + host_ + "]" : host_;
  if (port_ != default_port) host_field += ":" + std::to_string(port_);
  req.set(http::field::host, host_field);
  req.erase(http::field::proxy_authorization);
  req.erase("Proxy-Connection");
  // The relay is half-duplex (whole request, then response): it cannot honour
  // "Expect: 100-continue", so the upstream is not told to wait for it.
  req.erase(http::field::expect);
  // Framing the upstream could read otherwise than Beast did (a coding list, a length list)
  // would let a later request on a kept-alive connection be smuggled past these checks.
  const auto te = req[http::field::transfer_encoding];
  if (!te.empty() && !beast::iequals(te, "chunked"))
    return "Transfer-Encoding other than chunked is refused";
  if (req.count(http::field::content_length) > 1 ||
      req[http::field::content_length].find(',') != beast::string_view::npos)
    return "more than one Content-Length is refused";
  if (credential_) {
    // An echo of the request would hand the credential to the sandbox.
    if (req.method() == http::verb::trace || req.method_string() == "TRACK")
      return "TRACE carries no credential";
    req.erase(credential_->header);  // every copy the sandbox sent
    req.set(credential_->header, credential_->value);
  }
  return std::nullopt;
}

void session::end_after(beast::error_code ec, const std::string& what) {
  if (is_closed_by_peer(ec)) return end("closed");
  end(what + ": " + ec.message());
}

// -- head and decision ----------------------------------------------------------------

void session::read_head() {
  request_.emplace();
  request_->header_limit(static_cast<std::uint32_t>(head_limit));
  // Not boost::none: Beast 1.74 compares Content-Length against the optional itself.
  request_->body_limit(std::numeric_limits<std::uint64_t>::max());
  http::async_read_header(
      down_, down_buffer_, *request_,
      [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_head(ec); });
}

void session::on_head(beast::error_code ec) {
  if (ec == http::error::header_limit || ec == http::error::buffer_overflow)
    return refuse(http::status::request_header_fields_too_large, "request head too large");
  // Beast's parse errors (not the peer leaving midway) get an answer.
  if (ec && ec.category() == beast::error_code(http::error::bad_target).category() &&
      ec != http::error::end_of_stream && ec != http::error::partial_message)
    return refuse(http::status::bad_request, "malformed request: " + ec.message());
  if (ec) return end("no request head: " + ec.message());
  head_deadline_ = clock_type::time_point::max();
  auto& req = request_->get();
  method_ = std::string(req.method_string());
  if (req.method() == http::verb::connect) {
    auto where = parse_authority(req.target(), 0);
    if (!where) return refuse(http::status::bad_request, "CONNECT needs host:port");
    host_ = normalize_host(where->host);
    port_ = where->port;
    if (auto why = refuse_host(box_->rules, where->host, port_))
      return refuse(http::status::forbidden, *why);
    if (auto* c = credential_for(box_->rules, host_)) credential_ = *c;
    kind_ = credential_ ? kind::terminate : kind::tunnel;
  } else {
    auto target = parse_http_target(req.target());
    if (!target)
      return refuse(http::status::bad_request,
                    "only CONNECT host:port and absolute http:// requests are proxied");
    host_ = normalize_host(target->where.host);
    port_ = target->where.port;
    plain_path_ = target->path;
    if (auto why = refuse_host(box_->rules, target->where.host, port_))
      return refuse(http::status::forbidden, *why);
    if (auto* c = credential_for(box_->rules, host_)) credential_ = *c;
    kind_ = kind::plain;
  }
  decision_ = "allowed";
  resolve();
}

// -- resolution and connection --------------------------------------------------------

void session::resolve() {
  if (auto it = box_->rules.resolve.find(host_); it != box_->rules.resolve.end())
    return on_addresses({asio::ip::make_address(it->second)});
  boost::system::error_code literal_error;
  auto literal = asio::ip::make_address(host_, literal_error);
  if (!literal_error) return on_addresses({literal});
  resolver_.async_resolve(host_, std::to_string(port_), tcp::resolver::numeric_service,
                          [self = shared_from_this()](beast::error_code ec,
                                                      const tcp::resolver::results_type& results) {
                            self->on_resolve(ec, results);
                          });
}

void session::on_resolve(beast::error_code ec, const tcp::resolver::results_type& results) {
  if (ec) return refuse(http::status::bad_gateway, "cannot resolve: " + ec.message());
  std::vector<asio::ip::address> addresses;
  for (const auto& r : results) addresses.push_back(r.endpoint().address());
  on_addresses(addresses);
}

void session::on_addresses(const std::vector<asio::ip::address>& addresses) {
  std::string refused;
  for (const auto& a : addresses) {
    if (auto why = refuse_address(box_->rules, a)) {
      if (refused.empty()) refused = *why;
    } else {
      endpoints_.emplace_back(a, port_);
    }
  }
  if (endpoints_.empty()) {
    decision_ = "denied";
    return refuse(http::status::forbidden,
                  "resolves to no address it may reach: " +
                      (refused.empty() ? std::string("no address at all") : refused));
  }
  asio::async_connect(up_, endpoints_,
                      [self = shared_from_this()](beast::error_code ec, const tcp::endpoint&) {
                        self->on_connect(ec);
                      });
}

void session::on_connect(beast::error_code ec) {
  if (ec) return refuse(http::status::bad_gateway, "cannot connect: " + ec.message());
  if (kind_ == kind::plain) return run_exchange(down_, up_, false);
  reply_ = "HTTP/1.1 200 Connection established\r\n\r\n";
  asio::async_write(
      down_, asio::buffer(reply_),
      [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_established(ec); });
}

// -- refusals, limits -----------------------------------------------------------------

// Answers with `status` and `why`, then ends. A refusal before any connection is "denied".
void session::refuse(http::status status, const std::string& why) {
  if (decision_ != "allowed") {
    decision_ = "denied";
    box_->denied.fetch_add(1);
  }
  why_ = why;
  reply_ = reply_text(status, why);
  asio::async_write(down_, asio::buffer(reply_),
                    [self = shared_from_this()](beast::error_code, std::size_t) { self->end(""); });
}

void session::arm_watchdog() {
  const auto life = started_ + box_->rules.max_connection_time;
  watchdog_.expires_at(std::min({life, down_.usage().last + idle_timeout, head_deadline_}));
  watchdog_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (!ec) self->on_watchdog();
  });
}

void session::on_watchdog() {
  if (ended_) return;
  const auto now = clock_type::now();
  if (now >= started_ + box_->rules.max_connection_time)
    return end("connection time limit (" + std::to_string(box_->rules.max_connection_time.count()) +
               " s)");
  if (now >= head_deadline_) return end("no request head within 30 s");
  if (now >= down_.usage().last + idle_timeout) return end("idle for 60 s");
  arm_watchdog();
}

}  // namespace corral::egress_detail
