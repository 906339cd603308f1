// The fake engine's JSON fields and text forms: see json_fields.hpp.
#include "app/fake_engine/json_fields.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>

namespace corral::app::fake {

using docker::json_writer;

// {"label":["a=b"]} or {"label":{"a=b":true}}; nullopt when malformed.
std::optional<std::map<std::string, std::vector<std::string>>> parse_filters(
    simdjson::dom::parser& parser, const std::string& text) {
  std::map<std::string, std::vector<std::string>> out;
  if (text.empty()) return out;
  simdjson::dom::element doc;
  if (parser.parse(text).get(doc) != simdjson::SUCCESS) return std::nullopt;
  simdjson::dom::object obj;
  if (doc.get_object().get(obj) != simdjson::SUCCESS) return std::nullopt;
  for (auto field : obj) {
    auto& values = out[std::string(field.key)];
    simdjson::dom::array arr;
    simdjson::dom::object map;
    if (field.value.get_array().get(arr) == simdjson::SUCCESS) {
      for (auto v : arr) {
        std::string_view s;
        if (v.get_string().get(s) != simdjson::SUCCESS) return std::nullopt;
        values.emplace_back(s);
      }
    } else if (field.value.get_object().get(map) == simdjson::SUCCESS) {
      for (auto kv : map) values.emplace_back(kv.key);
    } else {
      return std::nullopt;
    }
  }
  return out;
}

bool label_matches(const std::map<std::string, std::string>& labels, const std::string& filter) {
  auto eq = filter.find('=');
  if (eq == std::string::npos) return labels.count(filter) > 0;
  auto it = labels.find(filter.substr(0, eq));
  return it != labels.end() && it->second == filter.substr(eq + 1);
}

std::vector<std::string> json_strings(simdjson::dom::object& o, const char* key) {
  std::vector<std::string> out;
  simdjson::dom::array a;
  if (o[key].get_array().get(a) != simdjson::SUCCESS) return out;
  for (auto v : a) {
    std::string_view s;
    if (v.get_string().get(s) == simdjson::SUCCESS) out.emplace_back(s);
  }
  return out;
}

std::map<std::string, std::string> json_string_map(simdjson::dom::object& o, const char* key) {
  std::map<std::string, std::string> out;
  simdjson::dom::object m;
  if (o[key].get_object().get(m) != simdjson::SUCCESS) return out;
  for (auto kv : m) {
    std::string_view s;
    if (kv.value.get_string().get(s) == simdjson::SUCCESS)
      out.emplace(std::string(kv.key), std::string(s));
  }
  return out;
}

std::string json_string(simdjson::dom::object& o, const char* key) {
  std::string_view s;
  if (o[key].get_string().get(s) != simdjson::SUCCESS) return {};
  return std::string(s);
}

bool json_bool(simdjson::dom::object& o, const char* key, bool fallback) {
  bool b = false;
  if (o[key].get_bool().get(b) != simdjson::SUCCESS) return fallback;
  return b;
}

void write_strings(json_writer& w, std::string_view key, const std::vector<std::string>& values) {
  w.key(key).begin_array();
  for (const auto& v : values) w.value(v);
  w.end_array();
}

void write_map(json_writer& w, std::string_view key,
               const std::map<std::string, std::string>& values) {
  w.key(key).begin_object();
  for (const auto& [k, v] : values) w.field(k, v);
  w.end_object();
}

std::string to_hex(std::size_t n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%zx", n);
  return buf;
}

std::string rfc3339(std::chrono::system_clock::time_point t) {
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ns / 1'000'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char frac[16];
  std::snprintf(frac, sizeof frac, ".%09lldZ", static_cast<long long>(ns % 1'000'000'000));
  return std::string(buf) + frac;
}

bool valid_container_name(std::string_view n) {
  if (n.size() < 2) return false;
  if (!std::isalnum(static_cast<unsigned char>(n[0]))) return false;
  return std::all_of(n.begin() + 1, n.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '.' || c == '-';
  });
}

}  // namespace corral::app::fake
