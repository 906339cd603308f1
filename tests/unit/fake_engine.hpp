// A scripted fake of the Docker engine for unit tests: a unix-socket HTTP server on its own
// thread, in the spirit of moby's mock client. Each test sets a handler that turns the
// request it received into a reply: a normal response, raw bytes, delays, a dropped or reset
// connection, a hang, or a hijacked raw stream. The fake records every request (for
// request-shape assertions) and counts connections.
//
// The connection loop is the fake engine's HTTP core (app/fake_engine/http_core.hpp), shared:
// each connection is one of its sessions, which reads the requests (the head first, for a
// header handler) and carries the raw bytes a script plays; so are the wire's vocabulary
// (query decoding, frame headers) and the listener.
//
// Handlers run on the fake's thread: they must not use Catch2 assertions (not thread-safe).
// Record what they see and assert on the test's thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace corral::test {

struct received_request {
  std::string method;                                       // "GET", "POST", ...
  std::string target;                                       // "/v1.41/containers/abc/stop?t=5"
  std::map<std::string, std::string, std::less<>> headers;  // names lower-cased
  std::string body;
  bool body_read = true;  // false when a header handler answered before the body

  // The value of a header, or "" when absent.
  std::string header(std::string_view name) const;
  // target before '?'
  std::string path() const;
  // The raw (still percent-encoded) value of a query parameter, if present.
  std::optional<std::string> query(std::string_view name) const;
};

// What the fake does with one request: a script of steps played in order on the
// connection. After the script the connection reads the next request (keep-alive) unless
// the script ended it.
class reply {
 public:
  // -- normal responses ---------------------------------------------------------------
  // A Content-Length response. `headers` are added as given.
  static reply response(int status, std::string body,
                        std::vector<std::pair<std::string, std::string>> headers = {});
  static reply json(int status, std::string body);
  static reply text(int status, std::string body);
  static reply empty(int status);  // no body: Content-Length: 0, none at all for 1xx/204/304
  // Docker's error shape: {"message": "..."}.
  static reply error(int status, std::string_view message);
  // Transfer-Encoding: chunked, one chunk per element, `gap` between them.
  static reply chunked(int status, std::vector<std::string> chunks,
                       std::chrono::milliseconds gap = std::chrono::milliseconds(0),
                       std::string content_type = "application/json");
  // The same without the last chunk: the body stays open (a live stream such as /events).
  // Follow it with then_hang(), then_close() or more then_write().
  static reply chunked_open(int status, std::vector<std::string> chunks,
                            std::chrono::milliseconds gap = std::chrono::milliseconds(0),
                            std::string content_type = "application/json");

  // -- faults -------------------------------------------------------------------------
  static reply raw(std::string bytes);  // written verbatim; then the connection stays open
  static reply close();                 // close at once, without answering
  // Close with SO_LINGER 0. On a unix socket that is abortive (the client sees ECONNRESET)
  // only while bytes it sent are still unread here, e.g. a body left unread by a header
  // handler; otherwise the client sees an ordinary EOF, as with close().
  static reply reset();
  static reply hang();  // answer nothing until the client closes or the fake stops

  // -- hijacked stream (exec start, attach) -------------------------------------------
  // 101 Switching Protocols; if `read_stdin`, reads the client's upload until it
  // half-closes; then writes make_output(upload) and closes.
  static reply upgraded(std::function<std::string(const std::string& upload)> make_output,
                        bool read_stdin = true);

  // -- composition --------------------------------------------------------------------
  reply& after(std::chrono::milliseconds delay);  // wait before the script
  reply& then_write(std::string bytes);
  reply& then_pause(std::chrono::milliseconds delay);
  // Writes `piece` (not empty) over and over until the peer stops reading (or `limit` bytes).
  reply& then_write_forever(std::string piece, std::size_t limit = std::size_t{256} << 20);
  reply& then_close();
  reply& then_reset();
  reply& then_hang();
  // Writes at most `n` bytes of the script's output, then closes (or resets).
  reply& cut_after(std::size_t n, bool reset = false);

  // One step of the script; public so the server can play it.
  struct step {
    enum class kind : uint8_t {
      write,
      pause,
      close,
      reset,
      hang,
      read_upload,
      write_from_upload,
      write_forever
    };
    kind what = kind::write;
    std::string bytes;
    std::chrono::milliseconds duration{0};
    std::size_t limit = 0;
    std::function<std::string(const std::string&)> make;
  };
  const std::vector<step>& steps() const { return steps_; }
  std::optional<std::size_t> cut() const { return cut_; }
  bool cut_resets() const { return cut_reset_; }

 private:
  std::vector<step> steps_;
  std::optional<std::size_t> cut_;
  bool cut_reset_ = false;
};

// HTTP head bytes: "HTTP/1.1 <status> <reason>\r\n<headers>\r\n".
std::string http_head(int status, const std::vector<std::pair<std::string, std::string>>& headers);
// One frame of Docker's multiplexed stream (1 stdout, 2 stderr, 3 system error).
std::string mux_frame(uint8_t stream, std::string_view payload);
// A frame header alone, declaring `size` bytes.
std::string mux_header(uint8_t stream, uint32_t size);
// Percent-decoding of a query value, as the engine reads one: '+' is a space (dockerd parses
// queries as application/x-www-form-urlencoded). The fake engine's decoder (one for both).
std::string url_decode(std::string_view text);

class fake_engine {
 public:
  using handler = std::function<reply(const received_request&)>;
  // Sees the request head before the body is read; a reply it returns is played at once,
  // leaving the body unread (as an engine that rejects early, or dies mid-request).
  using header_handler = std::function<std::optional<reply>(const received_request&)>;

  // Starts listening at once. Without a handler every request gets 404.
  explicit fake_engine(handler h = {});
  ~fake_engine();  // stop()

  fake_engine(const fake_engine&) = delete;
  fake_engine& operator=(const fake_engine&) = delete;

  const std::string& socket_path() const { return socket_path_; }

  void set_handler(handler h);
  void set_header_handler(header_handler h);

  // Every request received so far, in arrival order.
  std::vector<received_request> requests() const;
  std::size_t request_count() const;
  received_request last_request() const;  // requires at least one
  // Waits until at least n requests have arrived; false on timeout.
  bool wait_for_requests(std::size_t n,
                         std::chrono::milliseconds timeout = std::chrono::seconds(5)) const;
  // Waits until at most n connections are open; false on timeout.
  bool wait_for_open_at_most(std::size_t n,
                             std::chrono::milliseconds timeout = std::chrono::seconds(5)) const;

  std::size_t accepted() const { return accepted_; }  // connections accepted so far
  std::size_t open_now() const { return open_; }      // connections open right now
  std::size_t max_open() const { return max_open_; }  // most open at once

  // Closes the listener and every connection, ends every script, joins the thread.
  // Idempotent.
  void stop();

  class impl;

 private:
  friend class impl;
  void record(received_request r);
  void on_open();
  void on_close();
  reply answer(const received_request& r);
  std::optional<reply> answer_head(const received_request& r);

  std::string dir_;
  std::string socket_path_;
  std::shared_ptr<impl> impl_;
  std::thread thread_;

  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  handler handler_;
  header_handler header_handler_;
  std::vector<received_request> requests_;
  std::atomic<std::size_t> accepted_{0}, open_{0}, max_open_{0};
};

}  // namespace corral::test
