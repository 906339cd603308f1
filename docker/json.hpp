// JSON for request bodies (json_writer) and for the one field we read from error bodies.
// Response parsers live elsewhere and use docker/json_read.hpp; simdjson stays out of here so
// that every user of the adapter does not pay for its header.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace corral::docker {

// Appends s to out as a quoted JSON string.
//
// Escapes '"', '\\', every control character below 0x20 (\b \f \n \r \t in their short forms,
// the rest as \u00XX) and DEL (0x7F, as \u007f).
//
// Invalid UTF-8 is replaced, never passed through and never rejected: each maximal ill-formed
// subsequence (a stray continuation byte, a lead byte whose sequence is cut short, an overlong
// form, a UTF-16 surrogate encoded as UTF-8, a code point above U+10FFFF, bytes 0xC0, 0xC1 and
// 0xF5..0xFF) becomes one U+FFFD, emitted as the raw bytes EF BF BD. This is the Unicode
// "maximal subpart" practice, so "\xE2\x82" gives one U+FFFD and "\xC0\xAF" gives two, the
// same as Python's and browsers' decoders. Valid multi-byte UTF-8 passes through byte for byte.
//
// Why replace rather than fail: container names, commands and environment values are user
// input, and JSON (RFC 8259) must be UTF-8, so passing bad bytes on would make every body a
// gamble on the reader's leniency (the engine's Go decoder happens to replace them too, one
// U+FFFD per byte; stricter tools in between, and our own simdjson, reject them). Refusing
// the request would turn a stray byte in one env value into a failed run.
void append_json_string(std::string& out, std::string_view s);

// Builds compact JSON. Commas and the colon after a key are inserted automatically; the
// caller is responsible for the shape (a key before every value inside an object, none inside
// an array, every container closed), which is checked only by assertions in debug builds.
//
//   json_writer w;
//   w.begin_object().field("Image", "alpine").field_array("Cmd").value("sh").end_array()
//       .end_object();
class json_writer {
 public:
  json_writer& begin_object();
  json_writer& end_object();
  json_writer& begin_array();
  json_writer& end_array();

  json_writer& key(std::string_view k);

  json_writer& value(std::string_view v);
  json_writer& value(const char* v);  // nullptr writes null; also stops a literal becoming bool
  json_writer& value(bool v);
  json_writer& value(int64_t v);
  json_writer& value(uint64_t v);
  json_writer& value(int v);
  json_writer& value(unsigned v);  // without it an unsigned argument is ambiguous
  json_writer& null_value();

  template <class T>
  json_writer& field(std::string_view k, const T& v) {
    key(k);
    return value(v);
  }
  json_writer& field_object(std::string_view k) { return key(k).begin_object(); }
  json_writer& field_array(std::string_view k) { return key(k).begin_array(); }

  // The document so far. take() leaves the writer empty and ready for a new document.
  const std::string& str() const { return out_; }
  std::string take();

 private:
  struct level {
    bool object;
    bool empty;
  };

  void before_value();

  std::string out_;
  std::vector<level> stack_;
  bool after_key_ = false;
};

// The top-level string field `key` of the JSON object `doc`, unescaped. nullopt when doc is not
// a JSON object (including empty, truncated or non-JSON text), has no such field, or the
// field is not a string. Never throws.
std::optional<std::string> json_field_string(std::string_view doc, std::string_view key);

}  // namespace corral::docker
