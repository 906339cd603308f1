#include "docker/json.hpp"

#include <cassert>
#include <charconv>

#include "docker/json_read.hpp"

namespace corral::docker {

namespace {

constexpr std::string_view replacement_character = "\xEF\xBF\xBD";

struct utf8_scan {
  size_t length;  // of the well-formed sequence, or of the maximal ill-formed subpart
  bool valid;
};

// s starts with a byte >= 0x80. The ranges are the Unicode well-formed byte sequences table
// (Unicode 15, table 3-7); the narrowed second-byte ranges after E0, ED, F0 and F4 are what
// exclude overlongs, surrogates and code points above U+10FFFF.
utf8_scan scan_utf8(std::string_view s) {
  const auto lead = static_cast<unsigned char>(s[0]);
  size_t trailing = 0;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    trailing = 1;
  } else if (lead == 0xE0) {
    trailing = 2;
    lo = 0xA0;
  } else if ((lead >= 0xE1 && lead <= 0xEC) || lead == 0xEE || lead == 0xEF) {
    trailing = 2;
  } else if (lead == 0xED) {
    trailing = 2;
    hi = 0x9F;
  } else if (lead == 0xF0) {
    trailing = 3;
    lo = 0x90;
  } else if (lead >= 0xF1 && lead <= 0xF3) {
    trailing = 3;
  } else if (lead == 0xF4) {
    trailing = 3;
    hi = 0x8F;
  } else {
    return {1, false};  // a continuation byte, C0, C1 or F5..FF: never valid in this position
  }
  for (size_t k = 1; k <= trailing; ++k) {
    if (k >= s.size()) return {k, false};
    const auto b = static_cast<unsigned char>(s[k]);
    if (b < lo || b > hi) return {k, false};
    lo = 0x80;
    hi = 0xBF;
  }
  return {trailing + 1, true};
}

void append_escaped_ascii(std::string& out, unsigned char c) {
  static constexpr char hex[] = "0123456789abcdef";
  switch (c) {
    case '"':
      out += "\\\"";
      return;
    case '\\':
      out += "\\\\";
      return;
    case '\b':
      out += "\\b";
      return;
    case '\f':
      out += "\\f";
      return;
    case '\n':
      out += "\\n";
      return;
    case '\r':
      out += "\\r";
      return;
    case '\t':
      out += "\\t";
      return;
    default:
      break;
  }
  const char escape[] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
  out.append(escape, sizeof escape);
}

template <class Int>
void append_integer(std::string& out, Int v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;  // 24 bytes hold any 64-bit integer
  out.append(buf, end);
}

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
  out.reserve(out.size() + s.size() + 2);
  out.push_back('"');
  size_t run_start = 0;  // plain bytes are copied in runs rather than one at a time
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
      ++i;
      continue;
    }
    out.append(s, run_start, i - run_start);
    if (c < 0x80) {
      append_escaped_ascii(out, c);
      ++i;
    } else {
      const utf8_scan scan = scan_utf8(s.substr(i));
      if (scan.valid) {
        out.append(s, i, scan.length);
      } else {
        out += replacement_character;
      }
      i += scan.length;
    }
    run_start = i;
  }
  out.append(s, run_start, i - run_start);
  out.push_back('"');
}

void json_writer::before_value() {
  if (stack_.empty()) {
    assert(out_.empty() && "json_writer: a second top-level value");
    return;
  }
  level& top = stack_.back();
  if (top.object) {
    assert(after_key_ && "json_writer: a value inside an object needs a key first");
    after_key_ = false;
    return;
  }
  if (!top.empty) out_.push_back(',');
  top.empty = false;
}

json_writer& json_writer::begin_object() {
  before_value();
  out_.push_back('{');
  stack_.push_back({true, true});
  return *this;
}

json_writer& json_writer::end_object() {
  assert(!stack_.empty() && stack_.back().object && !after_key_);
  stack_.pop_back();
  out_.push_back('}');
  return *this;
}

json_writer& json_writer::begin_array() {
  before_value();
  out_.push_back('[');
  stack_.push_back({false, true});
  return *this;
}

json_writer& json_writer::end_array() {
  assert(!stack_.empty() && !stack_.back().object);
  stack_.pop_back();
  out_.push_back(']');
  return *this;
}

json_writer& json_writer::key(std::string_view k) {
  assert(!stack_.empty() && stack_.back().object && !after_key_);
  level& top = stack_.back();
  if (!top.empty) out_.push_back(',');
  top.empty = false;
  append_json_string(out_, k);
  out_.push_back(':');
  after_key_ = true;
  return *this;
}

json_writer& json_writer::value(std::string_view v) {
  before_value();
  append_json_string(out_, v);
  return *this;
}

json_writer& json_writer::value(const char* v) {
  if (v == nullptr) return null_value();
  return value(std::string_view(v));
}

json_writer& json_writer::value(bool v) {
  before_value();
  out_ += v ? "true" : "false";
  return *this;
}

json_writer& json_writer::value(int64_t v) {
  before_value();
  append_integer(out_, v);
  return *this;
}

json_writer& json_writer::value(uint64_t v) {
  before_value();
  append_integer(out_, v);
  return *this;
}

json_writer& json_writer::value(int v) {
  return value(static_cast<int64_t>(v));
}

json_writer& json_writer::value(unsigned v) {
  return value(static_cast<uint64_t>(v));
}

json_writer& json_writer::null_value() {
  before_value();
  out_ += "null";
  return *this;
}

std::string json_writer::take() {
  std::string out = std::move(out_);
  out_.clear();
  stack_.clear();
  after_key_ = false;
  return out;
}

std::optional<std::string> json_field_string(std::string_view doc, std::string_view key) {
  simdjson::padded_string padded = pad(doc);
  simdjson::ondemand::parser parser;
  simdjson::ondemand::document document;
  if (parser.iterate(padded).get(document) != simdjson::SUCCESS) return std::nullopt;
  simdjson::ondemand::object object;
  if (document.get_object().get(object) != simdjson::SUCCESS) return std::nullopt;
  std::string_view value;
  if (object.find_field_unordered(key).get_string().get(value) != simdjson::SUCCESS) {
    return std::nullopt;
  }
  return std::string(value);
}

}  // namespace corral::docker
