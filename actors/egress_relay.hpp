// How the egress session relays HTTP (internal to egress_session.cpp and egress_tunnel.cpp,
// which instantiate it for plain HTTP and for terminated TLS): one message at a time with its
// body streamed through a bounded chunk, and the exchange of requests and responses. Templates
// over the two streams, so a header of their own.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>

#include "actors/egress_session.hpp"

namespace corral::egress_detail {

// -- relaying one HTTP message, body streamed through a bounded chunk -----------------------

// The head has been read by `p`; writes it to `out`, then moves the body from `in` to `out`
// chunk by chunk (never more than chunk_size held), then calls `done`.
template <bool is_request, class In, class Out>
class message_relay : public std::enable_shared_from_this<message_relay<is_request, In, Out>> {
 public:
  using parser_type = http::parser<is_request, http::buffer_body>;

  message_relay(In& in, beast::flat_buffer& in_buffer, parser_type& p, Out& out,
                std::function<void(beast::error_code)> done)
      : in_(in), in_buffer_(in_buffer), p_(p), out_(out), sr_(p.get()), done_(std::move(done)) {}

  void run() {
    http::async_write_header(out_, sr_,
                             [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                               self->on_head_written(ec);
                             });
  }

 private:
  void on_head_written(beast::error_code ec) {
    if (ec) return done_(ec);
    next_chunk();
  }

  void next_chunk() {
    auto& body = p_.get().body();
    if (p_.is_done()) {
      body.data = nullptr;
      body.size = 0;
      body.more = false;
      return write_chunk();
    }
    body.data = chunk_.data();
    body.size = chunk_.size();
    http::async_read(in_, in_buffer_, p_,
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                       self->on_chunk_read(ec);
                     });
  }

  void on_chunk_read(beast::error_code ec) {
    if (ec == http::error::need_buffer) ec = {};  // the chunk is full: pass it on
    if (ec) return done_(ec);
    auto& body = p_.get().body();
    body.size = chunk_.size() - body.size;
    body.data = chunk_.data();
    body.more = !p_.is_done();
    write_chunk();
  }

  void write_chunk() {
    http::async_write(out_, sr_,
                      [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                        self->on_chunk_written(ec);
                      });
  }

  void on_chunk_written(beast::error_code ec) {
    if (ec == http::error::need_buffer) ec = {};
    if (ec) return done_(ec);
    if (p_.is_done() || sr_.is_done()) return done_({});
    next_chunk();
  }

  In& in_;
  beast::flat_buffer& in_buffer_;
  parser_type& p_;
  Out& out_;
  http::serializer<is_request, http::buffer_body> sr_;
  std::array<char, chunk_size> chunk_{};
  std::function<void(beast::error_code)> done_;
};

// HTTP/1.1 between the sandbox and the upstream, one request at a time: request head
// (rewritten), request body, response head, response body; again while both keep alive.
template <class Down, class Up>
class exchange : public std::enable_shared_from_this<exchange<Down, Up>> {
 public:
  exchange(std::shared_ptr<session> owner, Down& down, Up& up, bool keep_alive)
      : owner_(std::move(owner)),
        down_(down),
        up_(up),
        up_buffer_(upstream_head_limit + 4096),
        keep_alive_(keep_alive) {}

  // The first request's head is read already (plain HTTP) or not yet (inside TLS).
  void run() {
    if (owner_->request()) return on_request_head({});
    read_request();
  }

 private:
  void read_request() {
    auto& req = owner_->request();
    req.emplace();
    req->header_limit(static_cast<std::uint32_t>(head_limit));
    req->body_limit(std::numeric_limits<std::uint64_t>::max());
    http::async_read_header(down_, owner_->down_buffer(), *req,
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                              self->on_request_head(ec);
                            });
  }

  void on_request_head(beast::error_code ec) {
    if (ec) return owner_->end_after(ec, "reading a request");
    auto& req = owner_->request()->get();
    if (auto bad = owner_->rewrite(req)) return owner_->end(*bad);
    owner_->count_request();
    head_request_ = req.method() == http::verb::head;
    request_keeps_alive_ = req.keep_alive();
    std::make_shared<message_relay<true, Down, Up>>(
        down_, owner_->down_buffer(), *owner_->request(), up_,
        [self = this->shared_from_this()](beast::error_code ec) { self->on_request_sent(ec); })
        ->run();
  }

  void on_request_sent(beast::error_code ec) {
    if (ec) return owner_->end_after(ec, "relaying a request");
    read_response();
  }

  void read_response() {
    response_.emplace();
    response_->header_limit(static_cast<std::uint32_t>(upstream_head_limit));
    response_->body_limit(std::numeric_limits<std::uint64_t>::max());
    if (head_request_) response_->skip(true);
    http::async_read_header(up_, up_buffer_, *response_,
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                              self->on_response_head(ec);
                            });
  }

  void on_response_head(beast::error_code ec) {
    if (ec) return owner_->end_after(ec, "reading the upstream's response");
    auto& res = response_->get();
    status_ = res.result_int();
    if (!keep_alive_) res.keep_alive(false);
    std::make_shared<message_relay<false, Up, Down>>(
        up_, up_buffer_, *response_, down_,
        [self = this->shared_from_this()](beast::error_code ec) { self->on_response_sent(ec); })
        ->run();
  }

  void on_response_sent(beast::error_code ec) {
    if (ec) return owner_->end_after(ec, "relaying a response");
    // An interim answer (103 Early Hints) precedes the real one. 101 (an upgrade) is not
    // relayed further: the next bytes are no HTTP and end the connection.
    if (status_ >= 100 && status_ < 200 && status_ != 101) return read_response();
    if (keep_alive_ && request_keeps_alive_ && response_->get().keep_alive() && status_ != 101)
      return read_request();
    owner_->end("closed");
  }

  std::shared_ptr<session> owner_;
  Down& down_;
  Up& up_;
  beast::flat_buffer up_buffer_;
  std::optional<response_parser> response_;
  bool keep_alive_;
  bool head_request_ = false;
  bool request_keeps_alive_ = false;
  unsigned status_ = 0;
};

template <class Down, class Up>
void session::run_exchange(Down& down, Up& up, bool keep_alive) {
  std::make_shared<exchange<Down, Up>>(shared_from_this(), down, up, keep_alive)->run();
}

}  // namespace corral::egress_detail
