// The fake engine's JSON on both sides: fields read from request bodies (simdjson, missing or
// mistyped fields read as empty), filters from queries, and the pieces answers repeat; plus
// the few text forms answers use (RFC 3339 times, chunk sizes, container names).
#pragma once

#include <simdjson.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "docker/json.hpp"

namespace corral::app::fake {

// {"label":["a=b"]} or {"label":{"a=b":true}}; nullopt when malformed.
std::optional<std::map<std::string, std::vector<std::string>>> parse_filters(
    simdjson::dom::parser& parser, const std::string& text);
// A label filter: "key" (present) or "key=value".
bool label_matches(const std::map<std::string, std::string>& labels, const std::string& filter);

std::vector<std::string> json_strings(simdjson::dom::object& o, const char* key);
std::map<std::string, std::string> json_string_map(simdjson::dom::object& o, const char* key);
std::string json_string(simdjson::dom::object& o, const char* key);
bool json_bool(simdjson::dom::object& o, const char* key, bool fallback);

void write_strings(docker::json_writer& w, std::string_view key,
                   const std::vector<std::string>& values);
void write_map(docker::json_writer& w, std::string_view key,
               const std::map<std::string, std::string>& values);

// "2024-01-02T03:04:05.123456789Z"
std::string rfc3339(std::chrono::system_clock::time_point t);
std::string to_hex(std::size_t n);
// The engine's rule: [a-zA-Z0-9][a-zA-Z0-9_.-]+
bool valid_container_name(std::string_view n);

}  // namespace corral::app::fake
