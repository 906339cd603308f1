// Fuzzes docker/stream_demux (the multiplexed stdout/stderr stream of exec start and logs)
// and capped_buffer, fed in pieces of sizes taken from the input.
//
// Input: one byte for the frame-size limit, one for the piece sizes and the cap, then the
// stream.
// Properties: the sink never sees more bytes than were fed, never an empty piece, never a
// stream type above 3, nothing after an error; an error stays the same; capped buffers hold
// at most their cap and count every byte; no allocation follows a frame's declared length.
#include <cstdint>
#include <optional>
#include <string>

#include "docker/stream_demux.hpp"
#include "fuzz_common.hpp"

namespace docker = corral::docker;
using corral::fuzz::input;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  input in(data, size);
  const uint8_t limit_choice = in.byte();
  const uint8_t split = in.byte();
  // Small limits reach the "frame too large" path; 0xFF keeps the default (64 MiB).
  const uint32_t max_frame = limit_choice == 0xFF ? 64u << 20 : limit_choice * 17u;
  const std::size_t piece = 1 + split % 13;
  const std::size_t cap = split / 4;

  std::size_t sunk = 0;
  bool failed = false;
  docker::capped_buffer out{{}, cap}, err{{}, cap};
  docker::stream_demuxer demux(
      [&](docker::stream_kind kind, std::string_view bytes) {
        CORRAL_FUZZ_CHECK(!failed);
        CORRAL_FUZZ_CHECK(!bytes.empty());
        CORRAL_FUZZ_CHECK(static_cast<unsigned>(kind) <= 3);
        sunk += bytes.size();
        (kind == docker::stream_kind::stderr_stream ? err : out).append(bytes);
      },
      max_frame);

  std::optional<docker::error> first_error;
  std::size_t fed = 0;
  while (!in.empty()) {
    const auto bytes = in.take(piece);
    fed += bytes.size();
    auto e = demux.feed(bytes);
    if (first_error) {
      CORRAL_FUZZ_CHECK(e && e->message == first_error->message);
    } else if (e) {
      CORRAL_FUZZ_CHECK(e->code == docker::errc::protocol);
      first_error = e;
      failed = true;
    }
  }
  auto end = demux.finish();
  if (first_error) CORRAL_FUZZ_CHECK(end && end->message == first_error->message);
  CORRAL_FUZZ_CHECK(sunk <= fed);
  for (const auto* b : {&out, &err}) {
    CORRAL_FUZZ_CHECK(b->data.size() <= cap);
    CORRAL_FUZZ_CHECK(b->truncated == (b->total > cap));
    CORRAL_FUZZ_CHECK(b->data.capacity() <= std::max<std::size_t>(cap, 15) * 2 + 64);
  }
  CORRAL_FUZZ_CHECK(out.total + err.total == sunk);
  return 0;
}
