// Newline-delimited JSON streams: image-pull progress and the events stream. The engine
// writes one JSON document per line; chunked transfer splits them anywhere.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "docker/error.hpp"

namespace corral::docker {

// Splits a byte stream into lines on '\n'. A trailing '\r' is stripped and empty lines are
// skipped, so the handler only sees content. Lines that arrive whole inside one feed() are
// passed without copying; only a line split across feeds is buffered.
class json_lines_splitter {
 public:
  using line_handler = std::function<void(std::string_view)>;

  // max_line bounds one line (without its "\r\n") and so the buffer: a peer that never sends
  // '\n' must not make us hold the whole stream.
  explicit json_lines_splitter(line_handler handler, size_t max_line = 1 << 20);

  // A line over max_line is errc::too_large; after it, every later feed() and finish()
  // returns the same error and the handler is not called again.
  std::optional<error> feed(std::string_view bytes);

  // End of stream: delivers a last line that had no '\n' (the engine does not always end the
  // final line).
  std::optional<error> finish();

 private:
  std::optional<error> deliver(std::string_view line);
  std::optional<error> too_long();
  size_t buffer_limit() const;

  line_handler handler_;
  size_t max_line_;
  std::string pending_;  // the start of a line whose '\n' has not arrived
  std::optional<error> error_;
};

// One line of POST /images/create output. Docker sends status lines
//   {"status":"Downloading","id":"a1b2","progressDetail":{"current":1,"total":9},
//    "progress":"[=>   ] 1B/9B"}
// and, when the pull fails part-way (the HTTP status is already 200), an error line
//   {"errorDetail":{"message":"..."},"error":"..."}.
struct pull_progress {
  std::string id;  // layer id; empty for whole-image lines ("Pulling from library/x")
  std::string status;
  std::string progress;  // the engine's progress bar text
  int64_t current = 0;
  int64_t total = 0;
  std::string error_message;  // non-empty means the pull failed
};

// nullopt when the line is not a JSON object. Unknown fields are ignored and missing ones
// left empty, so a future engine's extra output does not break pulls.
std::optional<pull_progress> parse_pull_progress(std::string_view line);

// One line of GET /events.
struct event_message {
  std::string type;    // "container", "image", "network", ...
  std::string action;  // "die", "start", or with details, e.g. "exec_start: sh -c ls"
  std::string id;      // Actor.ID
  std::map<std::string, std::string> attributes;  // Actor.Attributes: name, image, exitCode...
  int64_t time_nano = 0;
};

// nullopt when the line is not a JSON object. Fields are taken as the engine spells them;
// action is kept whole (callers match its prefix).
std::optional<event_message> parse_event(std::string_view line);

}  // namespace corral::docker
