// HTTP/1.1 over a unix stream socket, asynchronous, on its own I/O thread.
//
// One unix_http_client owns an io_context and the one thread that runs it, a bounded pool of
// keep-alive connections and queues of requests waiting for one. Long-lived requests (an
// exec's stream, events, a wait) draw on a budget of their own within the pool, so however
// many of them run, short control requests still find a connection. Nothing here blocks the
// caller: send() hands the request to the I/O thread and returns. Every request ends in
// exactly one call of its completion, on the I/O thread, also when it times out, is
// cancelled, or the client shuts down. Callbacks must therefore be quick and must not call
// shutdown(); the actors only post a message from them.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "docker/error.hpp"

namespace corral::docker {

enum class http_method : uint8_t { get, head, post, put, delete_ };

struct http_request {
  http_method method = http_method::get;
  std::string target;        // origin-form: "/v1.41/containers/json?all=1"
  std::string body;          // sent as is, with Content-Length
  std::string content_type;  // e.g. "application/json"; empty: no body header
  // Deadline for the whole exchange, queueing included. Zero: the client's default.
  std::chrono::milliseconds timeout{0};
  // Ask the engine to hijack the connection (exec start, attach): after the response head,
  // the body is a raw stream that ends when the engine closes it.
  bool upgrade = false;
  // With upgrade: bytes to write on the raw stream (the process's stdin), after which our
  // side is half-closed so the process sees EOF. Written while the output is being read.
  std::optional<std::string> upload;
  // Holds its connection for as long as something runs on the engine (an exec's stream,
  // events, a wait, a pull): served from max_stream_connections, never from the connections
  // reserved for control requests.
  bool long_lived = false;
};

struct http_response_head {
  int status = 0;
  std::map<std::string, std::string, std::less<>> headers;  // names lower-cased
};

struct http_response {
  http_response_head head;
  std::string body;
};

// Receives the body of a successful (1xx/2xx/3xx) response as it arrives. Returning an
// error aborts the request with it. Error responses never reach the sink: their bodies are
// collected (capped) into the error's message.
using body_sink = std::function<std::optional<error>(std::string_view chunk)>;
using head_handler = std::function<void(const http_response_head&)>;
using stream_completion = std::function<void(result<http_response_head>)>;
using response_completion = std::function<void(result<http_response>)>;

struct http_client_options {
  std::string socket_path = "/var/run/docker.sock";
  // Open at once, of both kinds; requests beyond wait in a queue (control requests first).
  std::size_t max_connections = 80;
  // Of those, held by long-lived requests at most (at least 1); more wait in their own
  // queue. The rest, max_connections - max_stream_connections, stay for control requests
  // (create, start, stop, remove, inspect, list, exec create and inspect): 64 hanging
  // execs cannot make a stop wait out its timeout.
  std::size_t max_stream_connections = 64;
  std::size_t max_idle = 16;  // kept-alive connections parked for reuse
  std::chrono::milliseconds default_timeout{std::chrono::seconds(60)};
  std::size_t max_header_bytes = std::size_t{64} * 1024;  // an endless header is a protocol error
  std::size_t max_error_body =
      std::size_t{64} * 1024;  // error bodies are read up to this, then cut
  std::size_t max_buffered_body =
      std::size_t{64} * 1024 * 1024;  // send(): bodies over this are too_large
};

struct http_client_stats {
  std::size_t open_connections = 0;
  std::size_t idle_connections = 0;
  std::size_t active_requests = 0;
  std::size_t queued_requests = 0;     // of both kinds
  std::size_t stream_connections = 0;  // held by long-lived requests
  uint64_t connections_opened = 0;
  uint64_t requests_completed = 0;
};

class unix_http_client {
 public:
  using request_id = uint64_t;

  explicit unix_http_client(http_client_options options);
  ~unix_http_client();  // shutdown()

  unix_http_client(const unix_http_client&) = delete;
  unix_http_client& operator=(const unix_http_client&) = delete;

  // Streams the body of a successful response into `sink`. `on_head`, if set, sees the
  // response head first (for the version headers of /_ping, or to learn the status early).
  request_id stream(http_request request, body_sink sink, stream_completion done,
                    head_handler on_head = {});

  // Collects the body (up to max_buffered_body) and completes with it.
  request_id send(http_request request, response_completion done);

  // Ends the request with errc::cancelled, wherever it is (queued, connecting, streaming).
  // Unknown or finished ids are ignored. Safe from any thread.
  void cancel(request_id id);

  // Completes every queued and in-flight request with errc::cancelled, closes every socket
  // and joins the I/O thread. Idempotent. Must not be called from a completion.
  void shutdown();

  http_client_stats stats() const;
  const http_client_options& options() const noexcept { return options_; }

  class impl;

 private:
  http_client_options options_;
  std::shared_ptr<impl> impl_;
};

}  // namespace corral::docker
