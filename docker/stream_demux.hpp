// Docker's multiplexed attach/logs stream (non-TTY containers): each frame is an 8-byte
// header, then the payload. Header byte 0 is the stream (0 stdin, 1 stdout, 2 stderr,
// 3 system error), bytes 1-3 are zero, bytes 4-7 the payload length, big-endian.
// A TTY container's stream is raw output with no frames and must not go through here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "docker/error.hpp"

namespace corral::docker {

enum class stream_kind : uint8_t {
  stdin_stream = 0,
  stdout_stream = 1,
  stderr_stream = 2,
  system_error = 3,  // the engine's own complaint (e.g. a failed exec), not program output
};

// Splits the stream into payload pieces as bytes arrive. Payloads are handed on in whatever
// pieces the transport delivered, never gathered into whole frames: a frame's length is the
// peer's claim, and buffering it would let one header make us allocate up to 4 GiB. So a
// frame may reach the sink in several pieces, and a sink that needs whole frames (system_error
// messages) must gather them itself. Empty frames produce no call.
class stream_demuxer {
 public:
  using sink = std::function<void(stream_kind, std::string_view payload_piece)>;

  // max_frame bounds the declared length of one frame; a larger header is a protocol error.
  explicit stream_demuxer(sink s, uint32_t max_frame = 64u << 20);

  // Accepts any split of the stream, down to one byte at a time. After an error, every later
  // feed() and finish() returns the same error and the sink is not called again.
  std::optional<error> feed(std::string_view bytes);

  // End of stream. A protocol error if it fell inside a header or a payload.
  std::optional<error> finish();

 private:
  std::optional<error> fail(std::string message);
  std::optional<error> parse_header();

  sink sink_;
  uint32_t max_frame_;
  unsigned char header_[8] = {};
  size_t header_have_ = 0;
  stream_kind kind_ = stream_kind::stdout_stream;
  uint32_t payload_size_ = 0;
  uint32_t payload_left_ = 0;
  std::optional<error> error_;
};

// A byte sink that keeps the first `cap` bytes and counts the rest, for output we report but
// must not hold unbounded. The string grows with what is kept; cap is never reserved up front
// (it is usually far larger than what arrives).
struct capped_buffer {
  std::string data;
  size_t cap = 0;
  uint64_t total = 0;      // every byte offered, kept or not
  bool truncated = false;  // some bytes were dropped

  void append(std::string_view bytes);
};

}  // namespace corral::docker
