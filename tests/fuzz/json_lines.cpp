// Fuzzes docker/json_lines: the newline splitter of the events and image-pull streams, fed in
// pieces, and both line readers (parse_pull_progress, parse_event) on every line.
//
// Input: one byte for the line limit, one for the piece size, then the stream.
// Properties: a line is never empty, holds no '\n' and is never over the limit; the buffer never
// grows past the limit; nothing after an error; the readers never crash on any line.
#include <cstdint>
#include <optional>
#include <string>

#include "docker/json_lines.hpp"
#include "fuzz_common.hpp"

namespace docker = corral::docker;
using corral::fuzz::input;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  input in(data, size);
  const uint8_t limit_choice = in.byte();
  const std::size_t piece = 1 + in.byte() % 31;
  const std::size_t max_line = limit_choice == 0xFF ? SIZE_MAX : limit_choice * 3u;

  bool failed = false;
  std::size_t lines = 0;
  docker::json_lines_splitter splitter(
      [&](std::string_view line) {
        CORRAL_FUZZ_CHECK(!failed);
        CORRAL_FUZZ_CHECK(!line.empty());
        CORRAL_FUZZ_CHECK(line.find('\n') == std::string_view::npos);
        CORRAL_FUZZ_CHECK(line.size() <= max_line);
        ++lines;
        if (auto p = docker::parse_pull_progress(line)) {
          CORRAL_FUZZ_CHECK(p->status.size() <= line.size());
        }
        if (auto e = docker::parse_event(line)) {
          CORRAL_FUZZ_CHECK(e->attributes.size() <= line.size());
        }
      },
      max_line);

  std::optional<docker::error> first_error;
  while (!in.empty()) {
    auto e = splitter.feed(in.take(piece));
    if (first_error) {
      CORRAL_FUZZ_CHECK(e && e->message == first_error->message);
    } else if (e) {
      CORRAL_FUZZ_CHECK(e->code == docker::errc::too_large);
      first_error = e;
      failed = true;
    }
  }
  auto end = splitter.finish();
  if (first_error) CORRAL_FUZZ_CHECK(end && end->message == first_error->message);
  return 0;
}
