#include "docker/http_client.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <deque>
#include <limits>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "docker/asio.hpp"

namespace corral::docker {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using unix_socket = asio::local::stream_protocol::socket;
using request_id = unix_http_client::request_id;

namespace {

http::verb to_verb(http_method m) {
  switch (m) {
    case http_method::get:
      return http::verb::get;
    case http_method::head:
      return http::verb::head;
    case http_method::post:
      return http::verb::post;
    case http_method::put:
      return http::verb::put;
    case http_method::delete_:
      return http::verb::delete_;
  }
  return http::verb::get;
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// Errors that mean the peer dropped a connection we had parked: worth one retry on a fresh
// one, provided nothing of the response arrived.
bool is_stale_connection_error(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == asio::error::eof;
}

}  // namespace

// -- connection -------------------------------------------------------------------------

struct connection {
  explicit connection(asio::io_context& io) : socket(io) {}
  unix_socket socket;
  beast::flat_buffer buffer;
  bool reused = false;
  bool held_by_stream = false;  // counted in impl::stream_connections until released
};

// -- operation: one request from queue to completion ------------------------------------

class operation;

class unix_http_client::impl : public std::enable_shared_from_this<impl> {
 public:
  explicit impl(http_client_options opts)
      : options(std::move(opts)), work(asio::make_work_guard(io)) {}

  void start_thread() {
    thread = std::thread([self = shared_from_this()] { self->io.run(); });
  }

  // All below run on the I/O thread.
  void enqueue(const std::shared_ptr<operation>& op);
  void acquire_connection(const std::shared_ptr<operation>& op);
  void release(std::unique_ptr<connection> conn, bool reusable);
  void drop_idle();
  void forget(request_id id) { active.erase(id); }
  void pump();
  void cancel(request_id id);
  void close_all();

  http_client_options options;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::thread thread;
  std::atomic<request_id> next_id{1};
  std::atomic<bool> closed{false};
  std::mutex shutdown_mutex;
  // Submissions hold it shared from their check of `accepting` to their post; shutdown()
  // clears `accepting` under it exclusively before posting close_all. So every submission
  // either is refused at once or reaches the I/O thread before close_all: none is posted
  // to an io_context that has stopped running (its completion would never be called).
  std::shared_mutex submit_mutex;
  bool accepting = true;

  request_id submit(http_request request, body_sink sink, stream_completion done,
                    head_handler on_head, std::optional<std::uint64_t> max_body);

  // Whether a connection can be had now, parked or new, whatever the kind of request.
  bool pool_has_room() const { return !idle.empty() || open < options.max_connections; }
  bool stream_budget_left() const {
    const auto budget = std::clamp<std::size_t>(options.max_stream_connections, 1,
                                                std::max<std::size_t>(options.max_connections, 1));
    return stream_connections < budget;
  }
  void pump_queue(std::deque<std::shared_ptr<operation>>& waiting, bool streams);

  std::deque<std::shared_ptr<operation>> queue;         // control requests
  std::deque<std::shared_ptr<operation>> stream_queue;  // long-lived requests
  std::unordered_map<request_id, std::shared_ptr<operation>> active;
  std::vector<std::unique_ptr<connection>> idle;
  std::size_t open = 0;                // idle + busy + connecting
  std::size_t stream_connections = 0;  // busy or connecting for a long-lived request

  // Mirrors for stats(), readable from any thread.
  std::atomic<std::size_t> stat_open{0}, stat_idle{0}, stat_active{0}, stat_queued{0},
      stat_streams{0};
  std::atomic<uint64_t> stat_opened{0}, stat_completed{0};

  void update_stats() {
    stat_open = open;
    stat_idle = idle.size();
    stat_active = active.size();
    stat_queued = queue.size() + stream_queue.size();
    stat_streams = stream_connections;
  }
};

class operation : public std::enable_shared_from_this<operation> {
 public:
  operation(unix_http_client::impl& owner, request_id id, http_request req, body_sink sink,
            stream_completion done, head_handler on_head,
            std::optional<std::uint64_t> max_body = std::nullopt)
      : owner_(owner),
        id_(id),
        request_(std::move(req)),
        sink_(std::move(sink)),
        done_(std::move(done)),
        on_head_(std::move(on_head)),
        max_body_(max_body),
        deadline_(owner.io) {}

  request_id id() const { return id_; }
  bool finished() const { return finished_; }
  bool long_lived() const { return request_.long_lived; }

  void arm_deadline() {
    auto timeout = request_.timeout.count() > 0 ? request_.timeout : owner_.options.default_timeout;
    deadline_.expires_after(timeout);
    deadline_.async_wait([self = shared_from_this(), timeout](beast::error_code ec) {
      if (ec) return;  // cancelled: the operation ended first
      self->abort(error{
          errc::timeout,
          "no complete answer from the engine within " + std::to_string(timeout.count()) + " ms",
          0});
    });
  }

  // Runs when the pool hands us a connection: fresh (not yet connected) or reused.
  void start(std::unique_ptr<connection> conn) {
    conn_ = std::move(conn);
    if (conn_->reused) {
      write_request();
      return;
    }
    asio::local::stream_protocol::endpoint endpoint;
    try {
      endpoint = asio::local::stream_protocol::endpoint(owner_.options.socket_path);
    } catch (const boost::system::system_error& e) {
      return fail_transport(e.code(), "cannot use the socket path " + owner_.options.socket_path);
    }
    conn_->socket.async_connect(
        endpoint, [self = shared_from_this()](beast::error_code ec) { self->on_connect(ec); });
  }

  // Timeout, cancel or shutdown. Queued operations end at once; running ones when their
  // pending I/O returns operation_aborted after the socket is closed.
  void abort(error reason) {
    if (finished_) return;
    if (!conn_) {
      finish(std::move(reason));
      return;
    }
    abort_reason_ = std::move(reason);
    beast::error_code ignored;
    conn_->socket.close(ignored);
  }

 private:
  void on_connect(beast::error_code ec) {
    if (ec) {
      return fail_transport(ec,
                            "cannot connect to the Docker engine at " + owner_.options.socket_path);
    }
    write_request();
  }

  void write_request() {
    message_ = http::request<http::string_body>{to_verb(request_.method), request_.target, 11};
    message_.set(http::field::host, "docker");
    message_.set(http::field::user_agent, "corral");
    if (!request_.content_type.empty())
      message_.set(http::field::content_type, request_.content_type);
    if (request_.upgrade) {
      message_.set(http::field::connection, "Upgrade");
      message_.set(http::field::upgrade, "tcp");
    }
    message_.body() = request_.body;
    message_.prepare_payload();
    http::async_write(
        conn_->socket, message_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_write(ec); });
  }

  void on_write(beast::error_code ec) {
    if (ec) return fail_transport(ec, "sending the request to the engine failed");
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(owner_.options.max_header_bytes));
    // We cap what we keep, not what the engine sends. Not boost::none: Beast 1.74 compares
    // Content-Length against the optional itself, and any length is "greater" than none.
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    if (request_.method == http_method::head) parser_->skip(true);
    http::async_read_header(
        conn_->socket, conn_->buffer, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec) return fail_transport(ec, "reading the engine's response head failed");
    auto& msg = parser_->get();
    head_.status = static_cast<int>(msg.result_int());
    // Beast takes any three digits; below 100 is no HTTP status (found by the http_response
    // fuzz target: "HTTP/1.1 000" passed as a success). The connection is not reused.
    if (head_.status < 100) {
      return finish(error{errc::protocol,
                          "the engine answered with status " + std::to_string(head_.status) +
                              ", which is no HTTP status",
                          0});
    }
    for (const auto& field : msg)
      head_.headers[lower(field.name_string())] = std::string(field.value());
    if (on_head_) on_head_(head_);

    if (head_.status >= 400) {
      error_status_ = true;
      return read_body();
    }
    // send() collects the body: refuse a declared length over its cap before reading any.
    if (max_body_ && request_.method != http_method::head) {
      if (auto length = parser_->content_length(); length && *length > *max_body_) {
        return finish(error{errc::too_large,
                            "response body of " + std::to_string(*length) + " bytes is over " +
                                std::to_string(*max_body_) + " bytes",
                            0});
      }
    }
    if (head_.status == 101 || (request_.upgrade && head_.status < 300)) {
      raw_ = true;
      return start_raw();
    }
    if (parser_->is_done()) return finish_ok();
    read_body();
  }

  // -- framed body (Content-Length, chunked, or until EOF) ------------------------------

  void read_body() {
    auto& body = parser_->get().body();
    body.data = chunk_;
    body.size = sizeof(chunk_);
    http::async_read_some(
        conn_->socket, conn_->buffer, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_body(ec); });
  }

  void on_body(beast::error_code ec) {
    if (ec == http::error::need_buffer) ec = {};
    const std::size_t got = sizeof(chunk_) - parser_->get().body().size;
    if (got > 0 && !deliver(std::string_view(chunk_, got))) return;
    if (ec) return fail_transport(ec, "reading the engine's response body failed");
    if (parser_->is_done()) {
      if (error_status_) return finish(error_from_response(head_.status, error_body_));
      return finish_ok();
    }
    read_body();
  }

  bool deliver(std::string_view bytes) {
    if (error_status_) {
      // Keep only the head of an error body; the rest is read and dropped.
      const std::size_t room = owner_.options.max_error_body -
                               std::min(owner_.options.max_error_body, error_body_.size());
      error_body_.append(bytes.substr(0, std::min(room, bytes.size())));
      return true;
    }
    if (!sink_) return true;
    if (auto err = sink_(bytes)) {
      finish(std::move(*err));
      return false;
    }
    return true;
  }

  // -- hijacked raw stream --------------------------------------------------------------

  void start_raw() {
    // Bytes that arrived together with the head belong to the stream.
    auto leftover = conn_->buffer.data();
    if (leftover.size() > 0) {
      std::string_view first(static_cast<const char*>(leftover.data()), leftover.size());
      if (!deliver(first)) return;
      conn_->buffer.consume(leftover.size());
    }
    if (request_.upload) {
      writing_ = true;
      asio::async_write(
          conn_->socket, asio::buffer(*request_.upload),
          [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_upload(ec); });
    }
    read_raw();
  }

  void on_upload(beast::error_code ec) {
    writing_ = false;
    // A process that exits without reading its stdin breaks the pipe: that is its business,
    // not an error of the exchange; its output and exit code still tell the story.
    beast::error_code ignored;
    if (!ec && conn_) conn_->socket.shutdown(unix_socket::shutdown_send, ignored);
    // A deadline or cancel that struck while the upload was pending wins over the end.
    if (abort_reason_) return finish(std::move(*abort_reason_));
    if (raw_eof_) finish_ok();
  }

  void read_raw() {
    conn_->socket.async_read_some(
        asio::buffer(chunk_),
        [self = shared_from_this()](beast::error_code ec, std::size_t n) { self->on_raw(ec, n); });
  }

  void on_raw(beast::error_code ec, std::size_t n) {
    if (n > 0 && !deliver(std::string_view(chunk_, n))) return;
    // A unix socket reports the engine's close as a reset when bytes we sent are still
    // unread on its side: here, stdin the process never read before it exited. That ends
    // the stream as EOF does; the output and the exit code still tell the story.
    const bool upload_unread = ec == asio::error::connection_reset && request_.upload;
    if (ec == asio::error::eof || upload_unread) {
      raw_eof_ = true;
      if (!writing_)
        finish_ok();
      else {
        // The engine closed the stream: the upload can never complete usefully. Close, not
        // cancel: cancel stops only the write pending now, and the next piece of a large
        // upload would then block forever on an engine that no longer reads.
        beast::error_code ignored;
        conn_->socket.close(ignored);
      }
      return;
    }
    if (ec) return fail_transport(ec, "reading the engine's stream failed");
    read_raw();
  }

  // -- endings --------------------------------------------------------------------------

  void fail_transport(beast::error_code ec, const std::string& what) {
    if (finished_) return;
    if (abort_reason_) return finish(std::move(*abort_reason_));
    if (ec == asio::error::operation_aborted && raw_eof_) return finish_ok();
    const bool nothing_received = !parser_ || !parser_->got_some();
    if (conn_ && conn_->reused && !retried_ && nothing_received && is_stale_connection_error(ec)) {
      // The engine closed a parked connection; try once on a fresh one. The others parked
      // with it are most likely dead too (the engine restarted): drop them, or the retry
      // would take one of them and fail.
      retried_ = true;
      owner_.release(std::move(conn_), false);
      owner_.drop_idle();
      parser_.reset();
      return owner_.acquire_connection(shared_from_this());
    }
    errc code = errc::engine_unavailable;
    std::string message = what + ": " + ec.message();
    if (ec.category() == http::make_error_code(http::error::end_of_stream).category()) {
      if (ec == http::error::end_of_stream && nothing_received) {
        message = what + ": the engine closed the connection without answering";
      } else {
        code = errc::protocol;
        if (ec == http::error::partial_message) message = what + ": connection closed mid-response";
        if (ec == http::error::header_limit)
          message = what + ": response head over " +
                    std::to_string(owner_.options.max_header_bytes) + " bytes";
      }
    }
    finish(error{code, std::move(message), head_.status});
  }

  void finish_ok() { finish(result<http_response_head>(head_)); }

  void finish(result<http_response_head> outcome) {
    if (finished_) return;
    finished_ = true;
    deadline_.cancel();
    if (conn_) {
      // An error response read to its end leaves the connection as good as a success does.
      const bool reusable = (outcome.ok() || error_status_) && !raw_ && parser_ &&
                            parser_->is_done() && parser_->keep_alive() && conn_->socket.is_open();
      owner_.release(std::move(conn_), reusable);
    }
    owner_.forget(id_);
    ++owner_.stat_completed;
    auto done = std::move(done_);
    sink_ = nullptr;
    on_head_ = nullptr;
    owner_.pump();
    owner_.update_stats();
    if (done) done(std::move(outcome));
  }

  unix_http_client::impl& owner_;
  request_id id_;
  http_request request_;
  body_sink sink_;
  stream_completion done_;
  head_handler on_head_;
  std::optional<std::uint64_t> max_body_;  // send(): the cap on a declared Content-Length
  asio::steady_timer deadline_;
  std::unique_ptr<connection> conn_;
  http::request<http::string_body> message_;
  std::optional<http::response_parser<http::buffer_body>> parser_;
  http_response_head head_;
  std::string error_body_;
  std::optional<error> abort_reason_;
  bool error_status_ = false;
  bool raw_ = false;
  bool raw_eof_ = false;
  bool writing_ = false;
  bool retried_ = false;
  bool finished_ = false;
  char chunk_[16 * 1024];
};

// -- pool -------------------------------------------------------------------------------

void unix_http_client::impl::enqueue(const std::shared_ptr<operation>& op) {
  if (closed) {
    op->abort(error{errc::cancelled, "the Docker client is shut down", 0});
    return;
  }
  active.emplace(op->id(), op);
  op->arm_deadline();
  acquire_connection(op);
  update_stats();
}

void unix_http_client::impl::acquire_connection(const std::shared_ptr<operation>& op) {
  const bool streams = op->long_lived();
  if (!pool_has_room() || (streams && !stream_budget_left())) {
    (streams ? stream_queue : queue).push_back(op);
    return;
  }
  std::unique_ptr<connection> conn;
  if (!idle.empty()) {
    conn = std::move(idle.back());
    idle.pop_back();
    conn->reused = true;
  } else {
    ++open;
    ++stat_opened;
    conn = std::make_unique<connection>(io);
  }
  if (streams) {
    conn->held_by_stream = true;
    ++stream_connections;
  }
  op->start(std::move(conn));
}

void unix_http_client::impl::release(std::unique_ptr<connection> conn, bool reusable) {
  if (conn->held_by_stream) {
    // A wait's connection is parked like any other: whoever takes it next counts it anew.
    conn->held_by_stream = false;
    --stream_connections;
  }
  if (reusable && !closed && idle.size() < options.max_idle) {
    conn->buffer.clear();
    idle.push_back(std::move(conn));
    return;
  }
  beast::error_code ignored;
  conn->socket.close(ignored);
  --open;
}

void unix_http_client::impl::drop_idle() {
  for (auto& conn : idle) {
    beast::error_code ignored;
    conn->socket.close(ignored);
    --open;
  }
  idle.clear();
}

void unix_http_client::impl::pump() {
  // Control requests first: they are short, and a stream that waits a moment longer for its
  // start loses nothing, while a stop that waits behind streams may lose its deadline.
  pump_queue(queue, false);
  pump_queue(stream_queue, true);
}

void unix_http_client::impl::pump_queue(std::deque<std::shared_ptr<operation>>& waiting,
                                        bool streams) {
  while (!waiting.empty() && pool_has_room() && (!streams || stream_budget_left())) {
    auto op = std::move(waiting.front());
    waiting.pop_front();
    if (op->finished()) continue;
    acquire_connection(op);
  }
}

void unix_http_client::impl::cancel(request_id id) {
  auto it = active.find(id);
  if (it == active.end()) return;
  auto op = it->second;
  auto& waiting = op->long_lived() ? stream_queue : queue;
  waiting.erase(std::remove(waiting.begin(), waiting.end(), op), waiting.end());
  op->abort(error{errc::cancelled, "request cancelled", 0});
}

void unix_http_client::impl::close_all() {
  closed = true;
  queue.clear();
  stream_queue.clear();
  std::vector<std::shared_ptr<operation>> running;
  running.reserve(active.size());
  for (auto& [id, op] : active) running.push_back(op);
  for (auto& op : running)
    op->abort(error{errc::cancelled, "the Docker client is shutting down", 0});
  drop_idle();
  update_stats();
}

// -- public face ------------------------------------------------------------------------

unix_http_client::unix_http_client(http_client_options options)
    : options_(std::move(options)), impl_(std::make_shared<impl>(options_)) {
  impl_->start_thread();
}

unix_http_client::~unix_http_client() {
  shutdown();
}

request_id unix_http_client::impl::submit(http_request request, body_sink sink,
                                          stream_completion done, head_handler on_head,
                                          std::optional<std::uint64_t> max_body) {
  const request_id id = next_id++;
  {
    std::shared_lock<std::shared_mutex> guard(submit_mutex);
    if (accepting) {
      auto op = std::make_shared<operation>(*this, id, std::move(request), std::move(sink),
                                            std::move(done), std::move(on_head), max_body);
      asio::post(io, [owner = shared_from_this(), op = std::move(op)] { owner->enqueue(op); });
      return id;
    }
  }
  if (done) done(error{errc::cancelled, "the Docker client is shut down", 0});
  return id;
}

unix_http_client::request_id unix_http_client::stream(http_request request, body_sink sink,
                                                      stream_completion done,
                                                      head_handler on_head) {
  return impl_->submit(std::move(request), std::move(sink), std::move(done), std::move(on_head),
                       std::nullopt);
}

unix_http_client::request_id unix_http_client::send(http_request request,
                                                    response_completion done) {
  auto body = std::make_shared<std::string>();
  const std::size_t cap = options_.max_buffered_body;
  auto sink = [body, cap](std::string_view chunk) -> std::optional<error> {
    if (body->size() + chunk.size() > cap) {
      return error{errc::too_large, "response body over " + std::to_string(cap) + " bytes", 0};
    }
    body->append(chunk);
    return std::nullopt;
  };
  auto completion = [body, done = std::move(done)](result<http_response_head> head) {
    if (!head) return done(std::move(head).err());
    done(http_response{std::move(*head), std::move(*body)});
  };
  return impl_->submit(std::move(request), std::move(sink), std::move(completion), {}, cap);
}

void unix_http_client::cancel(request_id id) {
  if (impl_->closed) return;
  asio::post(impl_->io, [owner = impl_, id] { owner->cancel(id); });
}

void unix_http_client::shutdown() {
  std::lock_guard<std::mutex> guard(impl_->shutdown_mutex);
  if (!impl_->thread.joinable()) return;
  {
    std::unique_lock<std::shared_mutex> submissions(impl_->submit_mutex);
    impl_->accepting = false;
  }
  asio::post(impl_->io, [owner = impl_] {
    owner->close_all();
    owner->work.reset();
  });
  impl_->thread.join();
}

http_client_stats unix_http_client::stats() const {
  http_client_stats s;
  s.open_connections = impl_->stat_open;
  s.idle_connections = impl_->stat_idle;
  s.active_requests = impl_->stat_active;
  s.queued_requests = impl_->stat_queued;
  s.stream_connections = impl_->stat_streams;
  s.connections_opened = impl_->stat_opened;
  s.requests_completed = impl_->stat_completed;
  return s;
}

}  // namespace corral::docker
