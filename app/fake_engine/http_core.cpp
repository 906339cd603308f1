// The HTTP server core of the fake engines: see http_core.hpp. Decoding and framing first,
// then the listener, then one connection's request/response cycle and its raw streams.
#include "app/fake_engine/http_core.hpp"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "docker/json.hpp"

namespace corral::app::fake {

using docker::json_writer;

// -- the wire's vocabulary ------------------------------------------------------------------

std::string url_decode(std::string_view s, plus_sign plus) {
  std::string out;
  out.reserve(s.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2])));
      i += 2;
    } else if (s[i] == '+' && plus == plus_sign::space) {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::map<std::string, std::string> parse_query(std::string_view q) {
  std::map<std::string, std::string> out;
  while (!q.empty()) {
    auto amp = q.find('&');
    auto part = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    if (part.empty()) continue;
    auto eq = part.find('=');
    if (eq == std::string_view::npos)
      out[url_decode(part, plus_sign::space)] = "";
    else
      out[url_decode(part.substr(0, eq), plus_sign::space)] =
          url_decode(part.substr(eq + 1), plus_sign::space);
  }
  return out;
}

bool truthy(const std::map<std::string, std::string>& q, const std::string& key) {
  auto it = q.find(key);
  return it != q.end() && (it->second == "1" || it->second == "true" || it->second == "True");
}

std::string frame_header(uint8_t stream, uint32_t size) {
  std::string h(8, '\0');
  h[0] = static_cast<char>(stream);
  h[4] = static_cast<char>((size >> 24) & 0xff);
  h[5] = static_cast<char>((size >> 16) & 0xff);
  h[6] = static_cast<char>((size >> 8) & 0xff);
  h[7] = static_cast<char>(size & 0xff);
  return h;
}

// -- the listener ---------------------------------------------------------------------------

void listen_unix(asio::local::stream_protocol::acceptor& acceptor, const std::string& path,
                 int backlog) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(path, ec) && fs::is_socket(path, ec)) fs::remove(path, ec);
  asio::local::stream_protocol::endpoint endpoint(path);
  acceptor.open(endpoint.protocol());
  acceptor.bind(endpoint);
  acceptor.listen(backlog);
}

void reset_socket(unix_socket& socket) {
  beast::error_code ignored;
  socket.set_option(asio::socket_base::linger(true, 0), ignored);
  socket.close(ignored);
}

void close_socket(unix_socket& socket) {
  beast::error_code ignored;
  socket.shutdown(unix_socket::shutdown_both, ignored);
  socket.close(ignored);
}

// -- a connection ---------------------------------------------------------------------------

session::session(session_host& host, unix_socket sock, uint64_t id)
    : host_(host), sock_(std::move(sock)), timer_(sock_.get_executor()), id_(id) {
  host_.on_session_open(id_);
}

session::~session() {
  host_.on_session_gone(id_);
}

void session::read_request() {
  if (closed_ || host_.shutting_down()) return;
  parser_.emplace();
  const request_limits limits = host_.limits();
  if (limits.header) parser_->header_limit(*limits.header);
  parser_->body_limit(limits.body);
  http::async_read_header(sock_, buf_, *parser_,
                          [self = shared_from_this()](beast::error_code ec, std::size_t) {
                            if (ec) return self->close();
                            if (self->host_.on_request_head(self)) return;
                            self->read_body();
                          });
}

// The rest of a request whose head the host did not take.
void session::read_body() {
  if (parser_->is_done()) return deliver_request();
  http::async_read(sock_, buf_, *parser_,
                   [self = shared_from_this()](beast::error_code ec, std::size_t) {
                     if (ec) return self->close();
                     self->deliver_request();
                   });
}

// The whole request is read: it becomes req() and goes to the host.
void session::deliver_request() {
  req_ = parser_->release();
  host_.on_request(shared_from_this());
}

void session::reply(http::status status, std::string body, std::string_view content_type,
                    const std::vector<std::pair<std::string, std::string>>& headers) {
  if (closed_) return;
  if (reset_instead_of_reply) return reset();
  auto res = std::make_shared<http::response<http::string_body>>(status, 11);
  res->set(http::field::server, "Docker/20.10.24-fake (linux)");
  res->set("Api-Version", api_version);
  res->set("Docker-Experimental", "false");
  res->set("Ostype", "linux");
  if (!content_type.empty() && !body.empty()) res->set(http::field::content_type, content_type);
  for (auto& [k, v] : headers) res->set(k, v);
  const bool keep = req_.keep_alive() && !host_.shutting_down();
  res->keep_alive(keep);
  const bool head = req_.method() == http::verb::head;
  const auto length = body.size();
  res->body() = std::move(body);
  res->prepare_payload();
  if (head) {
    res->body().clear();
    res->content_length(length);
  }
  http::async_write(sock_, *res,
                    [self = shared_from_this(), res, keep](beast::error_code ec, std::size_t) {
                      if (ec) return self->close();
                      if (keep)
                        self->read_request();
                      else
                        self->close();
                    });
}

void session::reply_json(http::status status, std::string json) {
  reply(status, std::move(json) + "\n");
}

void session::reply_error(http::status status, std::string_view message) {
  json_writer w;
  w.begin_object().field("message", message).end_object();
  reply_json(status, w.take());
}

void session::reset() {
  if (closed_) return;
  beast::error_code ignored;
  sock_.set_option(asio::socket_base::linger(true, 0), ignored);
  close();
}

void session::close() {
  if (closed_) return;
  closed_ = true;
  beast::error_code ignored;
  sock_.shutdown(unix_socket::shutdown_both, ignored);
  sock_.close(ignored);
  timer_.cancel();
  out_.clear();
  run_drained();
  if (on_end_) {
    auto f = std::move(on_end_);
    on_end_ = nullptr;
    f(false);
  }
}

// -- raw streams ----------------------------------------------------------------------------

void session::send_raw(std::string bytes) {
  if (closed_) return;
  out_.push_back(piece{std::move(bytes), 0});
  pump();
}

void session::send_frames(uint8_t stream, std::string_view text) {
  while (!text.empty()) {
    const auto n = std::min(text.size(), frame_size);
    std::string f = frame_header(stream, static_cast<uint32_t>(n));
    f.append(text.substr(0, n));
    send_raw(std::move(f));
    text.remove_prefix(n);
  }
}

void session::send_zeros(uint64_t n) {
  if (closed_ || n == 0) return;
  out_.push_back(piece{{}, n});
  pump();
}

// f runs once everything queued is written (or the connection is gone).
void session::after_drain(std::function<void()> f) {
  drained_.push_back(std::move(f));
  if (!writing_ && (out_.empty() || closed_)) {
    asio::post(sock_.get_executor(), [self = shared_from_this()] { self->run_drained(); });
  }
}

// Close once everything queued is written.
void session::end_after_drain() {
  after_drain([self = shared_from_this()] { self->close(); });
}

// Reads what the client sends on a hijacked or streaming connection: stdin for an exec,
// nothing for events (a read then only tells us the client went away).
void session::read_stream(std::function<void(std::string_view)> on_data,
                          std::function<void(bool eof)> on_end) {
  on_data_ = std::move(on_data);
  on_end_ = std::move(on_end);
  // Bytes that came with the request head belong to the stream.
  if (buf_.size() > 0) {
    std::string first(static_cast<const char*>(buf_.data().data()), buf_.size());
    buf_.consume(buf_.size());
    if (on_data_) on_data_(first);
  }
  read_more();
}

void session::read_more() {
  if (closed_) return;
  sock_.async_read_some(asio::buffer(in_),
                        [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                          if (n > 0 && self->on_data_)
                            self->on_data_(std::string_view(self->in_.data(), n));
                          if (ec) {
                            if (self->on_end_) {
                              auto f = std::move(self->on_end_);
                              self->on_end_ = nullptr;
                              f(ec == asio::error::eof);
                            }
                            if (ec != asio::error::eof) self->close();
                            return;
                          }
                          self->read_more();
                        });
}

void session::pump() {
  if (writing_ || closed_) return;
  if (out_.empty()) return run_drained();
  writing_ = true;
  auto& front = out_.front();
  auto done = [self = shared_from_this()](beast::error_code ec, std::size_t) {
    self->writing_ = false;
    if (ec || self->closed_) {
      self->close();
      return self->run_drained();
    }
    self->pump();
  };
  if (front.zeros == 0) {
    current_ = std::move(front.bytes);
    out_.pop_front();
    asio::async_write(sock_, asio::buffer(current_), std::move(done));
    return;
  }
  static const std::string zero_block(frame_size, '\0');
  const auto n = static_cast<std::size_t>(std::min<uint64_t>(front.zeros, frame_size));
  front.zeros -= n;
  if (front.zeros == 0) out_.pop_front();
  current_ = frame_header(1, static_cast<uint32_t>(n));
  std::array<asio::const_buffer, 2> bufs{asio::buffer(current_),
                                         asio::buffer(zero_block.data(), n)};
  asio::async_write(sock_, bufs, std::move(done));
}

void session::run_drained() {
  if (drained_.empty() || writing_) return;
  if (!out_.empty() && !closed_) return;
  auto fs = std::move(drained_);
  drained_.clear();
  for (auto& f : fs) f();
}

}  // namespace corral::app::fake
