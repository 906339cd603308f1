// Fuzzes the HTTP response path of docker/http_client: the input is what the engine writes
// back on the socket (head, body, chunked framing, a hijacked stream), read by the same
// unix_http_client the adapter uses, through Beast's parser as the client configures it.
//
// Input: one control byte (which call: send(), stream(), HEAD, upgraded stream with an
// upload; a sink that refuses; a client that reuses connections), then the peer's bytes.
// Properties: the completion runs exactly once and in time; send() never holds more than its
// cap; an error body never grows past max_error_body; nothing crashes or leaks.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <string>

#include "docker/http_client.hpp"
#include "fuzz_common.hpp"
#include "scripted_peer.hpp"

namespace docker = corral::docker;
using corral::fuzz::input;

namespace {

constexpr std::size_t max_header = 2048;
constexpr std::size_t max_error_body = 512;
constexpr std::size_t max_buffered_body = 8192;

docker::http_client_options options_for(const std::string& socket, std::size_t max_idle) {
  docker::http_client_options o;
  o.socket_path = socket;
  o.max_idle = max_idle;
  o.default_timeout = std::chrono::seconds(3);
  o.max_header_bytes = max_header;
  o.max_error_body = max_error_body;
  o.max_buffered_body = max_buffered_body;
  return o;
}

struct harness {
  corral::fuzz::scripted_peer peer;
  // A fresh connection per request: replies never leak into the next input.
  docker::unix_http_client fresh{options_for(peer.path(), 0)};
  // Parks a connection that ended cleanly; the peer has closed it by the next request, which
  // therefore takes the stale-connection retry.
  docker::unix_http_client reusing{options_for(peer.path(), 1)};
};

void check_error(const docker::error& e) {
  // An error message is ours (bounded) or the engine's capped body, never the whole reply.
  CORRAL_FUZZ_CHECK(e.message.size() <= max_error_body + 512);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  static harness* h = new harness;  // never destroyed: libFuzzer exits without unwinding
  // A completion called twice would show up after its input returned: check the last one.
  static std::shared_ptr<std::atomic<int>> previous;
  if (previous) CORRAL_FUZZ_CHECK(*previous == 1);
  input in(data, size);
  const uint8_t mode = in.byte();
  h->peer.set_reply(in.rest());
  auto& client = (mode & 0x10) ? h->reusing : h->fresh;

  docker::http_request request;
  request.target = "/v1.41/fuzz";
  auto calls = std::make_shared<std::atomic<int>>(0);
  std::promise<void> finished;
  auto future = finished.get_future();

  switch (mode % 4) {
    case 0:  // send(): the whole body, capped
    case 2: {
      if (mode % 4 == 2) request.method = docker::http_method::head;
      client.send(std::move(request), [&, calls](docker::result<docker::http_response> r) {
        if (r) {
          CORRAL_FUZZ_CHECK(r->body.size() <= max_buffered_body);
          CORRAL_FUZZ_CHECK(r->head.status >= 100 && r->head.status < 1000);
        } else {
          check_error(r.err());
        }
        if (++*calls == 1) finished.set_value();
      });
      break;
    }
    case 1:  // stream(): the body in pieces, and the head first
    case 3: {
      if (mode % 4 == 3) {
        request.method = docker::http_method::post;
        request.upgrade = true;
        if (mode & 4) request.upload = std::string(1000, 'u');
      }
      auto seen = std::make_shared<std::size_t>(0);
      client.stream(
          std::move(request),
          [seen, mode](std::string_view chunk) -> std::optional<docker::error> {
            *seen += chunk.size();
            // Sometimes refuse mid-stream, as the demuxer and the splitter do on bad input.
            if ((mode & 8) && *seen > 100)
              return docker::error{docker::errc::protocol, "sink refused", 0};
            return std::nullopt;
          },
          [&, calls](docker::result<docker::http_response_head> r) {
            if (!r) check_error(r.err());
            if (++*calls == 1) finished.set_value();
          },
          [](const docker::http_response_head& head) {
            CORRAL_FUZZ_CHECK(head.status >= 100 && head.status < 1000);
          });
      break;
    }
  }
  // The client's own deadline is 3 s; libFuzzer's -timeout catches a completion that never
  // comes, and this catches one that comes late.
  CORRAL_FUZZ_CHECK(future.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  CORRAL_FUZZ_CHECK(*calls == 1);
  previous = calls;
  return 0;
}
