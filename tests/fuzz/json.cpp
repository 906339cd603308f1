// Fuzzes docker/json: the reader of error bodies (json_field_string, error_from_response), the
// padded-input guard of the endpoint readers (pad) and the JSON string writer
// (append_json_string), whose output must always be valid JSON.
//
// Input: one byte choosing the key and the status, then a document.
// Properties: no crash on any document; a found field is no longer than the document; an
// error message is never empty; append_json_string always writes one valid JSON string that
// reads back as the input when the input is valid UTF-8 (and as well-formed UTF-8 always).
#include <cstdint>
#include <string>

#include <simdjson.h>

#include "docker/error.hpp"
#include "docker/json.hpp"
#include "docker/json_read.hpp"
#include "fuzz_common.hpp"

namespace docker = corral::docker;
using corral::fuzz::input;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  input in(data, size);
  const uint8_t choice = in.byte();
  const std::string_view doc = in.rest();
  static constexpr std::string_view keys[] = {"message", "Id", "", "a\"b", "message\\u0000"};
  const auto key = keys[choice % 5];

  if (auto field = docker::json_field_string(doc, key)) {
    CORRAL_FUZZ_CHECK(field->size() <= doc.size());
  }
  const auto err = docker::error_from_response(400 + choice % 200, doc);
  CORRAL_FUZZ_CHECK(!err.message.empty());

  // pad(): well-formed documents come back whole, anything else empty.
  const auto padded = docker::pad(doc);
  CORRAL_FUZZ_CHECK(padded.size() == 0 || padded.size() == doc.size());

  // The writer: one valid JSON string, whatever the bytes.
  std::string quoted;
  docker::append_json_string(quoted, doc);
  simdjson::dom::parser parser;
  std::string_view back;
  const auto parsed = parser.parse(quoted).get_string().get(back);
  CORRAL_FUZZ_CHECK(parsed == simdjson::SUCCESS);
  CORRAL_FUZZ_CHECK(simdjson::validate_utf8(back.data(), back.size()));
  if (simdjson::validate_utf8(doc.data(), doc.size())) CORRAL_FUZZ_CHECK(back == doc);
  return 0;
}
