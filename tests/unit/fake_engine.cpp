#include "tests/unit/fake_engine.hpp"

// Boost 1.74's asio/awaitable.hpp needs <utility> first under C++20 (see docker/asio.hpp).
#include <utility>

#include <boost/asio.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <set>
#include <stdexcept>

#include "app/fake_engine/http_core.hpp"

namespace corral::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using boost::system::error_code;
using unix_socket = asio::local::stream_protocol::socket;
using asio::awaitable;
using asio::use_awaitable;

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

}  // namespace

// -- received_request ---------------------------------------------------------------------

std::string received_request::header(std::string_view name) const {
  auto it = headers.find(lower(name));
  return it == headers.end() ? std::string() : it->second;
}

std::string received_request::path() const {
  return target.substr(0, target.find('?'));
}

std::optional<std::string> received_request::query(std::string_view name) const {
  const auto q = target.find('?');
  if (q == std::string::npos) return std::nullopt;
  std::string_view rest = std::string_view(target).substr(q + 1);
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    const auto eq = pair.find('=');
    if (pair.substr(0, eq) == name) {
      return eq == std::string_view::npos ? std::string() : std::string(pair.substr(eq + 1));
    }
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

// -- helpers ------------------------------------------------------------------------------

std::string http_head(int status, const std::vector<std::pair<std::string, std::string>>& headers) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " ";
  out += std::string(http::obsolete_reason(static_cast<http::status>(status)));
  out += "\r\n";
  for (const auto& [name, value] : headers) out += name + ": " + value + "\r\n";
  out += "\r\n";
  return out;
}

std::string mux_header(uint8_t stream, uint32_t size) {
  return app::fake::frame_header(stream, size);
}

std::string mux_frame(uint8_t stream, std::string_view payload) {
  std::string out = mux_header(stream, static_cast<uint32_t>(payload.size()));
  out.append(payload);
  return out;
}

std::string url_decode(std::string_view text) {
  return app::fake::url_decode(text, app::fake::plus_sign::space);
}

// -- reply --------------------------------------------------------------------------------

namespace {

reply::step write_step(std::string bytes) {
  reply::step s;
  s.what = reply::step::kind::write;
  s.bytes = std::move(bytes);
  return s;
}

reply::step simple_step(reply::step::kind k) {
  reply::step s;
  s.what = k;
  return s;
}

}  // namespace

reply reply::response(int status, std::string body,
                      std::vector<std::pair<std::string, std::string>> headers) {
  headers.emplace_back("Content-Length", std::to_string(body.size()));
  return raw(http_head(status, headers) + body);
}

reply reply::json(int status, std::string body) {
  return response(status, std::move(body), {{"Content-Type", "application/json"}});
}

reply reply::text(int status, std::string body) {
  return response(status, std::move(body), {{"Content-Type", "text/plain; charset=utf-8"}});
}

reply reply::empty(int status) {
  // Without a length, a 200 body would run until the connection closes.
  const bool bodiless = status < 200 || status == 204 || status == 304;
  if (bodiless) return raw(http_head(status, {}));
  return raw(http_head(status, {{"Content-Length", "0"}}));
}

reply reply::error(int status, std::string_view message) {
  std::string body = "{\"message\":\"";
  for (char c : message) {
    if (c == '"' || c == '\\') body.push_back('\\');
    body.push_back(c);
  }
  body += "\"}\n";
  return json(status, std::move(body));
}

reply reply::chunked(int status, std::vector<std::string> chunks, std::chrono::milliseconds gap,
                     std::string content_type) {
  return chunked_open(status, std::move(chunks), gap, std::move(content_type))
      .then_write("0\r\n\r\n");
}

reply reply::chunked_open(int status, std::vector<std::string> chunks,
                          std::chrono::milliseconds gap, std::string content_type) {
  reply r = raw(http_head(
      status, {{"Content-Type", std::move(content_type)}, {"Transfer-Encoding", "chunked"}}));
  bool first = true;
  for (auto& chunk : chunks) {
    if (chunk.empty()) continue;  // an empty chunk would end the body
    if (!first && gap.count() > 0) r.then_pause(gap);
    first = false;
    char size[32];
    std::snprintf(size, sizeof size, "%zx\r\n", chunk.size());
    r.then_write(size + std::move(chunk) + "\r\n");
  }
  return r;
}

reply reply::raw(std::string bytes) {
  reply r;
  r.steps_.push_back(write_step(std::move(bytes)));
  return r;
}

reply reply::close() {
  return reply().then_close();
}
reply reply::reset() {
  return reply().then_reset();
}
reply reply::hang() {
  return reply().then_hang();
}

reply reply::upgraded(std::function<std::string(const std::string&)> make_output, bool read_stdin) {
  reply r = raw(http_head(101, {{"Content-Type", "application/vnd.docker.multiplexed-stream"},
                                {"Connection", "Upgrade"},
                                {"Upgrade", "tcp"}}));
  if (read_stdin) r.steps_.push_back(simple_step(step::kind::read_upload));
  step out = simple_step(step::kind::write_from_upload);
  out.make = std::move(make_output);
  r.steps_.push_back(std::move(out));
  return r.then_close();
}

reply& reply::after(std::chrono::milliseconds delay) {
  step s = simple_step(step::kind::pause);
  s.duration = delay;
  steps_.insert(steps_.begin(), std::move(s));
  return *this;
}

reply& reply::then_write(std::string bytes) {
  steps_.push_back(write_step(std::move(bytes)));
  return *this;
}

reply& reply::then_pause(std::chrono::milliseconds delay) {
  step s = simple_step(step::kind::pause);
  s.duration = delay;
  steps_.push_back(std::move(s));
  return *this;
}

reply& reply::then_write_forever(std::string piece, std::size_t limit) {
  step s = simple_step(step::kind::write_forever);
  s.bytes = std::move(piece);
  s.limit = limit;
  steps_.push_back(std::move(s));
  return *this;
}

reply& reply::then_close() {
  steps_.push_back(simple_step(step::kind::close));
  return *this;
}

reply& reply::then_reset() {
  steps_.push_back(simple_step(step::kind::reset));
  return *this;
}

reply& reply::then_hang() {
  steps_.push_back(simple_step(step::kind::hang));
  return *this;
}

reply& reply::cut_after(std::size_t n, bool reset) {
  cut_ = n;
  cut_reset_ = reset;
  return *this;
}

// -- the server ---------------------------------------------------------------------------

namespace {

struct session {
  explicit session(unix_socket s) : socket(std::move(s)), timer(socket.get_executor()) {}
  unix_socket socket;
  asio::steady_timer timer;
  beast::flat_buffer buffer;
};

// SO_LINGER 0, then close (abortive on a unix socket only while unread bytes remain; TCP
// would send RST either way); and the orderly close. The HTTP core's, shared.
using app::fake::close_socket;
using app::fake::reset_socket;

}  // namespace

class fake_engine::impl : public std::enable_shared_from_this<impl> {
 public:
  impl(fake_engine& owner, const std::string& path)
      : owner_(owner), work_(asio::make_work_guard(io_)), acceptor_(io_) {
    app::fake::listen_unix(acceptor_, path, 256);
  }

  void start() { asio::co_spawn(io_, accept_loop(shared_from_this()), asio::detached); }
  void run() { io_.run(); }

  void stop() {
    asio::post(io_, [self = shared_from_this()] {
      self->stopping_ = true;
      error_code ignored;
      self->acceptor_.close(ignored);
      for (const auto& s : self->sessions_) {
        s->timer.cancel();
        s->socket.close(ignored);
      }
      self->work_.reset();
    });
  }

 private:
  static awaitable<void> accept_loop(std::shared_ptr<impl> self) {
    for (;;) {
      error_code ec;
      unix_socket socket(self->io_);
      co_await self->acceptor_.async_accept(socket, asio::redirect_error(use_awaitable, ec));
      if (self->stopping_) co_return;
      if (ec) {
        if (ec == asio::error::operation_aborted) co_return;
        continue;
      }
      auto s = std::make_shared<session>(std::move(socket));
      self->sessions_.insert(s);
      self->owner_.on_open();
      asio::co_spawn(self->io_, serve(self, s), asio::detached);
    }
  }

  static awaitable<void> serve(std::shared_ptr<impl> self, std::shared_ptr<session> s) {
    try {
      co_await serve_requests(self, s);
    } catch (...) {
      // A broken script must not take the fake down; the test sees the connection drop.
    }
    close_socket(s->socket);
    self->sessions_.erase(s);
    self->owner_.on_close();
  }

  static awaitable<void> serve_requests(std::shared_ptr<impl> self, std::shared_ptr<session> s) {
    while (!self->stopping_) {
      error_code ec;
      http::request_parser<http::string_body> parser;
      parser.header_limit(1 << 20);
      parser.body_limit(std::uint64_t{1} << 30);
      co_await http::async_read_header(s->socket, s->buffer, parser,
                                       asio::redirect_error(use_awaitable, ec));
      if (ec || self->stopping_) co_return;

      received_request request;
      const auto& head = parser.get();
      request.method = std::string(head.method_string());
      request.target = std::string(head.target());
      for (const auto& field : head) {
        request.headers[lower(field.name_string())] = std::string(field.value());
      }

      std::optional<reply> answer = self->owner_.answer_head(request);
      if (answer) {
        request.body_read = false;
        self->owner_.record(request);
      } else {
        if (!parser.is_done()) {
          co_await http::async_read(s->socket, s->buffer, parser,
                                    asio::redirect_error(use_awaitable, ec));
          if (ec || self->stopping_) co_return;
        }
        request.body = parser.get().body();
        answer = self->owner_.answer(request);
        self->owner_.record(std::move(request));
      }
      if (!co_await play(self, s, *answer)) co_return;
    }
  }

  static constexpr std::size_t unlimited = std::numeric_limits<std::size_t>::max();

  // Writes within the cut budget; false when the connection is done (error or cut).
  static awaitable<bool> write(session& s, const reply& script, std::size_t& budget,
                               std::string_view bytes) {
    error_code ec;
    const std::size_t n = std::min(budget, bytes.size());
    if (n > 0) {
      co_await asio::async_write(s.socket, asio::buffer(bytes.data(), n),
                                 asio::redirect_error(use_awaitable, ec));
      if (ec) co_return false;
      if (budget != unlimited) budget -= n;
    }
    if (script.cut() && budget == 0) {
      if (script.cut_resets())
        reset_socket(s.socket);
      else
        close_socket(s.socket);
      co_return false;
    }
    co_return true;
  }

  // Plays one reply; true when the connection should read the next request.
  static awaitable<bool> play(std::shared_ptr<impl> self, std::shared_ptr<session> s,
                              const reply& script) {
    std::size_t budget = script.cut().value_or(unlimited);
    std::string upload;
    error_code ec;

    for (const auto& step : script.steps()) {
      if (self->stopping_) co_return false;
      switch (step.what) {
        case reply::step::kind::write:
          if (!co_await write(*s, script, budget, step.bytes)) co_return false;
          break;
        case reply::step::kind::pause:
          s->timer.expires_after(step.duration);
          co_await s->timer.async_wait(asio::redirect_error(use_awaitable, ec));
          if (ec || self->stopping_) co_return false;
          break;
        case reply::step::kind::close:
          close_socket(s->socket);
          co_return false;
        case reply::step::kind::reset:
          reset_socket(s->socket);
          co_return false;
        case reply::step::kind::hang: {
          // Read and drop until the client closes or the fake stops.
          char sink[4096];
          for (;;) {
            co_await s->socket.async_read_some(asio::buffer(sink),
                                               asio::redirect_error(use_awaitable, ec));
            if (ec) co_return false;
          }
        }
        case reply::step::kind::read_upload: {
          // Bytes that came with the request head belong to the upload.
          upload = beast::buffers_to_string(s->buffer.data());
          s->buffer.consume(s->buffer.size());
          char chunk[4096];
          for (;;) {
            const std::size_t n = co_await s->socket.async_read_some(
                asio::buffer(chunk), asio::redirect_error(use_awaitable, ec));
            upload.append(chunk, n);
            if (ec == asio::error::eof) break;
            if (ec || upload.size() > (std::size_t{64} << 20)) co_return false;
          }
          break;
        }
        case reply::step::kind::write_from_upload: {
          const std::string output = step.make ? step.make(upload) : std::string();
          if (!co_await write(*s, script, budget, output)) co_return false;
          break;
        }
        case reply::step::kind::write_forever: {
          std::size_t written = 0;
          while (written < step.limit && !self->stopping_) {
            if (!co_await write(*s, script, budget, step.bytes)) co_return false;
            written += step.bytes.size();
          }
          break;
        }
      }
    }
    co_return true;
  }

  fake_engine& owner_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  asio::local::stream_protocol::acceptor acceptor_;
  std::set<std::shared_ptr<session>> sessions_;
  bool stopping_ = false;
};

// -- fake_engine --------------------------------------------------------------------------

fake_engine::fake_engine(handler h) : handler_(std::move(h)) {
  std::string pattern = (std::filesystem::temp_directory_path() / "corral-fake-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = pattern;
  socket_path_ = dir_ + "/engine.sock";
  impl_ = std::make_shared<impl>(*this, socket_path_);
  impl_->start();
  thread_ = std::thread([i = impl_] { i->run(); });
}

fake_engine::~fake_engine() {
  stop();
}

void fake_engine::stop() {
  if (!thread_.joinable()) return;
  impl_->stop();
  thread_.join();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

void fake_engine::set_handler(handler h) {
  std::lock_guard<std::mutex> guard(mutex_);
  handler_ = std::move(h);
}

void fake_engine::set_header_handler(header_handler h) {
  std::lock_guard<std::mutex> guard(mutex_);
  header_handler_ = std::move(h);
}

reply fake_engine::answer(const received_request& r) {
  handler h;
  {
    std::lock_guard<std::mutex> guard(mutex_);
    h = handler_;
  }
  if (!h) return reply::error(404, "fake engine: no handler for " + r.method + " " + r.target);
  try {
    return h(r);
  } catch (const std::exception& e) {
    return reply::error(500, std::string("fake engine handler threw: ") + e.what());
  }
}

std::optional<reply> fake_engine::answer_head(const received_request& r) {
  header_handler h;
  {
    std::lock_guard<std::mutex> guard(mutex_);
    h = header_handler_;
  }
  if (!h) return std::nullopt;
  try {
    return h(r);
  } catch (const std::exception& e) {
    return reply::error(500, std::string("fake engine header handler threw: ") + e.what());
  }
}

void fake_engine::record(received_request r) {
  {
    std::lock_guard<std::mutex> guard(mutex_);
    requests_.push_back(std::move(r));
  }
  changed_.notify_all();
}

void fake_engine::on_open() {
  ++accepted_;
  const std::size_t now = ++open_;
  std::size_t seen = max_open_;
  while (now > seen && !max_open_.compare_exchange_weak(seen, now)) {
  }
  changed_.notify_all();
}

void fake_engine::on_close() {
  {
    // Under the mutex, so a waiter cannot miss the notification between check and wait.
    std::lock_guard<std::mutex> guard(mutex_);
    --open_;
  }
  changed_.notify_all();
}

std::vector<received_request> fake_engine::requests() const {
  std::lock_guard<std::mutex> guard(mutex_);
  return requests_;
}

std::size_t fake_engine::request_count() const {
  std::lock_guard<std::mutex> guard(mutex_);
  return requests_.size();
}

received_request fake_engine::last_request() const {
  std::lock_guard<std::mutex> guard(mutex_);
  if (requests_.empty()) throw std::logic_error("fake engine: no request received");
  return requests_.back();
}

bool fake_engine::wait_for_requests(std::size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return requests_.size() >= n; });
}

bool fake_engine::wait_for_open_at_most(std::size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return open_ <= n; });
}

}  // namespace corral::test
