#include "docker/json_lines.hpp"

#include <cstdint>
#include <utility>

#include "docker/json_read.hpp"

namespace corral::docker {

json_lines_splitter::json_lines_splitter(line_handler handler, size_t max_line)
    : handler_(std::move(handler)), max_line_(max_line) {}

size_t json_lines_splitter::buffer_limit() const {
  // One byte of slack for a '\r' whose '\n' is still to come; saturating so that SIZE_MAX
  // can mean "no limit".
  return max_line_ == SIZE_MAX ? max_line_ : max_line_ + 1;
}

std::optional<error> json_lines_splitter::too_long() {
  error_ = error{errc::too_large,
                 "stream line exceeds the " + std::to_string(max_line_) + "-byte limit", 0};
  return error_;
}

std::optional<error> json_lines_splitter::deliver(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.size() > max_line_) return too_long();
  if (!line.empty()) handler_(line);
  return std::nullopt;
}

std::optional<error> json_lines_splitter::feed(std::string_view bytes) {
  if (error_) return error_;
  while (!bytes.empty()) {
    const size_t newline = bytes.find('\n');
    if (newline == std::string_view::npos) {
      if (pending_.size() + bytes.size() > buffer_limit()) return too_long();
      pending_.append(bytes);
      break;
    }
    const std::string_view head = bytes.substr(0, newline);
    bytes.remove_prefix(newline + 1);
    if (pending_.empty()) {
      if (auto err = deliver(head)) return err;
      continue;
    }
    if (pending_.size() + head.size() > buffer_limit()) return too_long();
    pending_.append(head);
    auto err = deliver(pending_);
    pending_.clear();
    if (err) return err;
  }
  return std::nullopt;
}

std::optional<error> json_lines_splitter::finish() {
  if (error_) return error_;
  auto err = deliver(pending_);
  pending_.clear();
  return err;
}

namespace {

// read(obj) on the line's top-level object; nothing when the line is not a JSON object. The
// buffer and the parser live here, as long as the object read from them.
template <class Read>
auto read_object(std::string_view line, Read read)
    -> std::optional<decltype(read(std::declval<simdjson::ondemand::object&>()))> {
  simdjson::padded_string padded = pad(line);
  simdjson::ondemand::parser parser;
  simdjson::ondemand::document doc;
  simdjson::ondemand::object obj;
  if (parser.iterate(padded).get(doc) != simdjson::SUCCESS) return std::nullopt;
  if (doc.get_object().get(obj) != simdjson::SUCCESS) return std::nullopt;
  return read(obj);
}

pull_progress read_pull_progress(simdjson::ondemand::object& obj) {
  pull_progress out;
  out.id = get_string(obj, "id");
  out.status = get_string(obj, "status");
  out.progress = get_string(obj, "progress");
  simdjson::ondemand::object detail;
  if (get_object(obj, "progressDetail", detail)) {
    out.current = get_int(detail, "current");
    out.total = get_int(detail, "total");
  }
  // errorDetail.message is the structured form; "error" is the older duplicate of it.
  simdjson::ondemand::object error_detail;
  if (get_object(obj, "errorDetail", error_detail)) {
    out.error_message = get_string(error_detail, "message");
  }
  if (out.error_message.empty()) out.error_message = get_string(obj, "error");
  return out;
}

event_message read_event(simdjson::ondemand::object& obj) {
  event_message out;
  out.type = get_string(obj, "Type");
  out.action = get_string(obj, "Action");
  simdjson::ondemand::object actor;
  if (get_object(obj, "Actor", actor)) {
    out.id = get_string(actor, "ID");
    out.attributes = get_string_map(actor, "Attributes");
  }
  out.time_nano = get_int(obj, "timeNano");
  if (out.time_nano == 0) {
    // Only "time" (seconds) on some events; the bound keeps a hostile value from overflowing.
    const int64_t seconds = get_int(obj, "time");
    if (seconds > 0 && seconds <= INT64_MAX / 1'000'000'000)
      out.time_nano = seconds * 1'000'000'000;
  }
  return out;
}

}  // namespace

std::optional<pull_progress> parse_pull_progress(std::string_view line) {
  return read_object(line, read_pull_progress);
}

std::optional<event_message> parse_event(std::string_view line) {
  return read_object(line, read_event);
}

}  // namespace corral::docker
