// The scripted fake engine (fake_engine.hpp): requests as the tests see them, the reply
// scripts, and the server that plays them on the fake engine's HTTP core sessions.
#include "tests/unit/fake_engine.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <stdexcept>

#include "app/fake_engine/http_core.hpp"

namespace corral::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using boost::system::error_code;
using unix_socket = asio::local::stream_protocol::socket;

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
  // An empty piece would never reach the limit: zero-byte writes for ever.
  if (piece.empty()) throw std::invalid_argument("then_write_forever: an empty piece");
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
// Connections are the fake engine's HTTP core sessions (app/fake_engine/http_core.hpp): the
// core reads each request (the head first, so a header handler can answer before the body)
// and this file plays the reply's script on the session's raw stream.

namespace {

using app::fake::session;

received_request to_received(const http::request_header<>& head) {
  received_request request;
  request.method = std::string(head.method_string());
  request.target = std::string(head.target());
  for (const auto& field : head) {
    request.headers[lower(field.name_string())] = std::string(field.value());
  }
  return request;
}

// Plays one reply's script on a session, a step at a time: a step that waits (its bytes
// draining, a pause, an upload, a hang) goes on from where it completes. The session ends the
// script when it closes (an error, a cut, a close or reset step, or the fake stopping, which
// closes every session); a script that ends with the connection open resumes its keep-alive
// loop.
class script_player : public std::enable_shared_from_this<script_player> {
 public:
  script_player(std::shared_ptr<session> s, reply script)
      : session_(std::move(s)),
        script_(std::move(script)),
        budget_(script_.cut().value_or(unlimited)) {}

  void next() {
    if (session_->closed()) return;
    if (step_ == script_.steps().size()) return session_->read_request();
    const reply::step& step = script_.steps()[step_++];
    switch (step.what) {
      case reply::step::kind::write:
        return write(step.bytes, [self = shared_from_this()] { self->next(); });
      case reply::step::kind::pause:
        session_->timer().expires_after(step.duration);
        session_->timer().async_wait([self = shared_from_this()](error_code ec) {
          if (ec) return self->session_->close();
          self->next();
        });
        return;
      case reply::step::kind::close:
        return session_->close();
      case reply::step::kind::reset:
        return session_->reset();
      case reply::step::kind::hang:
        // Read and drop until the client closes or the fake stops.
        session_->read_stream([](std::string_view) {},
                              [self = shared_from_this()](bool) { self->session_->close(); });
        return;
      case reply::step::kind::read_upload:
        return read_upload();
      case reply::step::kind::write_from_upload:
        return write_from_upload(step);
      case reply::step::kind::write_forever:
        return write_forever(step, 0);
    }
  }

 private:
  static constexpr std::size_t unlimited = std::numeric_limits<std::size_t>::max();
  static constexpr std::size_t max_upload = std::size_t{64} << 20;

  // Writes within the cut budget; `then` runs once the bytes are written, unless the
  // connection is done (an error, or the cut's budget spent: then it closes or resets).
  void write(std::string_view bytes, std::function<void()> then) {
    const std::size_t n = std::min(budget_, bytes.size());
    if (n > 0) {
      session_->send_raw(std::string(bytes.substr(0, n)));
      if (budget_ != unlimited) budget_ -= n;
    }
    session_->after_drain([self = shared_from_this(), then = std::move(then)] {
      if (self->session_->closed()) return;
      if (self->script_.cut() && self->budget_ == 0) {
        if (self->script_.cut_resets())
          self->session_->reset();
        else
          self->session_->close();
        return;
      }
      then();
    });
  }

  // Reads the client's upload until it half-closes; bytes that came with the request head
  // belong to it (read_stream hands them over first).
  void read_upload() {
    std::weak_ptr<script_player> weak = shared_from_this();
    session_->read_stream(
        [weak](std::string_view data) {
          auto self = weak.lock();
          if (!self) return;
          self->upload_.append(data);
          if (self->upload_.size() > max_upload) self->session_->close();
        },
        [self = shared_from_this()](bool eof) {
          if (!eof) return self->session_->close();
          self->next();
        });
  }

  void write_from_upload(const reply::step& step) {
    std::string output;
    try {
      output = step.make ? step.make(upload_) : std::string();
    } catch (...) {
      // A broken script must not take the fake down; the test sees the connection drop.
      return session_->close();
    }
    write(output, [self = shared_from_this()] { self->next(); });
  }

  // Writes `step.bytes` over and over until the peer stops reading (or `step.limit` bytes).
  void write_forever(const reply::step& step, std::size_t written) {
    if (written >= step.limit) return next();
    write(step.bytes, [self = shared_from_this(), &step, written] {
      self->write_forever(step, written + step.bytes.size());
    });
  }

  std::shared_ptr<session> session_;
  reply script_;
  std::size_t step_ = 0;
  std::size_t budget_;
  std::string upload_;
};

}  // namespace

class fake_engine::impl : public std::enable_shared_from_this<impl>,
                          public app::fake::session_host {
 public:
  impl(fake_engine& owner, const std::string& path)
      : owner_(owner), work_(asio::make_work_guard(io_)), acceptor_(io_) {
    app::fake::listen_unix(acceptor_, path, 256);
  }

  void start() { accept(); }
  void run() { io_.run(); }

  void stop() {
    asio::post(io_, [self = shared_from_this()] {
      self->stopping_ = true;
      error_code ignored;
      self->acceptor_.close(ignored);
      std::vector<std::shared_ptr<session>> open;
      for (const auto& [id, weak] : self->sessions_) {
        if (auto s = weak.lock()) open.push_back(std::move(s));
      }
      for (const auto& s : open) s->close();
      self->work_.reset();
    });
  }

  // -- session_host -----------------------------------------------------------------------
  app::fake::request_limits limits() const override {
    return {std::uint32_t{1} << 20, std::uint64_t{1} << 30};
  }

  bool on_request_head(const std::shared_ptr<session>& s) override {
    try {
      received_request request = to_received(s->head());
      std::optional<reply> answer = owner_.answer_head(request);
      if (!answer) return false;
      request.body_read = false;
      owner_.record(std::move(request));
      play(s, std::move(*answer));
    } catch (...) {
      // A broken script must not take the fake down; the test sees the connection drop.
      s->close();
    }
    return true;
  }

  void on_request(const std::shared_ptr<session>& s) override {
    try {
      received_request request = to_received(s->req());
      request.body = std::move(s->req().body());
      reply answer = owner_.answer(request);
      owner_.record(std::move(request));
      play(s, std::move(answer));
    } catch (...) {
      s->close();
    }
  }

  void on_session_open(uint64_t /*id*/) override { owner_.on_open(); }
  void on_session_gone(uint64_t id) override {
    sessions_.erase(id);
    owner_.on_close();
  }
  bool shutting_down() const override { return stopping_; }

 private:
  void accept() {
    acceptor_.async_accept([self = shared_from_this()](error_code ec, unix_socket socket) {
      if (self->stopping_) return;
      if (ec) {
        if (ec == asio::error::operation_aborted) return;
        return self->accept();
      }
      const uint64_t id = self->next_id_++;
      auto s = std::make_shared<session>(*self, std::move(socket), id);
      self->sessions_.emplace(id, s);
      s->read_request();
      self->accept();
    });
  }

  static void play(const std::shared_ptr<session>& s, reply script) {
    std::make_shared<script_player>(s, std::move(script))->next();
  }

  // What a session touches when it goes comes before the io_context, which may destroy it.
  fake_engine& owner_;
  std::map<uint64_t, std::weak_ptr<session>> sessions_;
  uint64_t next_id_ = 1;
  bool stopping_ = false;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  asio::local::stream_protocol::acceptor acceptor_;
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
