// Internal helpers for the endpoint parsers: small, never-throwing reads over simdjson's
// on-demand API. Only docker/*.cpp and tests include this; it is the one header that pulls in
// simdjson.h.
//
// On-demand traps these helpers exist to avoid:
//  - An object is a forward-only cursor. obj["a"] / find_field() only look ahead of the
//    cursor, so fields must be read in document order; the helpers use find_field_unordered(),
//    which wraps around, so any order works (at the cost of a rescan for fields behind the
//    cursor). A missing field scans the whole object.
//  - Keys are compared in their raw, still-escaped form, so "mess\u0061ge" does not match
//    "message". The engine never escapes its keys.
//  - Every string_view simdjson hands out points into the parser's buffer and dies with the
//    next iterate(); the helpers return owning std::string.
//  - Validation is lazy and its failures are not always safe to continue from; pad() below
//    therefore rejects malformed documents up front. Always go through it.
//  - The padded_string and the parser must outlive the document and every object from it.
//  - Reaching the same value twice, or a value after its parent moved on, is an error;
//    read each field once into a local.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <simdjson.h>

namespace corral::docker {

// Copies s into a buffer padded for simdjson, which reads up to SIMDJSON_PADDING bytes past
// the end, after checking all of it with the DOM parser. Malformed JSON comes back as an empty
// buffer, so iterate() fails with EMPTY. The check is needed because on-demand validates
// lazily, and simdjson 3.0.1 does not survive that: a body cut short just after an inner '}'
// makes the next read after the structural error dereference a null parser, and a second
// document after the first is silently ignored. Given only well-formed input, the helpers
// below can fail only with "missing" or "wrong type", which are safe to continue from.
inline simdjson::padded_string pad(std::string_view s) {
  // An empty view may have a null data(); "" keeps the copy well-defined.
  simdjson::padded_string padded(s.empty() ? "" : s.data(), s.size());
  simdjson::dom::parser validator;
  simdjson::dom::element root;
  if (validator.parse(padded).get(root) != simdjson::SUCCESS) return simdjson::padded_string("", 0);
  return padded;
}

// The string at `key`, unescaped; `fallback` if the field is absent or not a string.
inline std::string get_string(simdjson::ondemand::object& obj, std::string_view key,
                              std::string fallback = {}) {
  std::string_view v;
  if (obj.find_field_unordered(key).get_string().get(v) != simdjson::SUCCESS) return fallback;
  return std::string(v);
}

// The integer at `key`; `fallback` if absent, not an integer, or outside int64_t (a float such
// as 1.5 is not an integer).
inline int64_t get_int(simdjson::ondemand::object& obj, std::string_view key,
                       int64_t fallback = 0) {
  int64_t v = 0;
  if (obj.find_field_unordered(key).get_int64().get(v) != simdjson::SUCCESS) return fallback;
  return v;
}

// The boolean at `key`; `fallback` if absent or not true/false.
inline bool get_bool(simdjson::ondemand::object& obj, std::string_view key, bool fallback = false) {
  bool v = false;
  if (obj.find_field_unordered(key).get_bool().get(v) != simdjson::SUCCESS) return fallback;
  return v;
}

// Points `out` at the object at `key`. false if absent, null or not an object. `out` is a
// cursor into `obj`: finish with it before reading further fields of `obj`.
inline bool get_object(simdjson::ondemand::object& obj, std::string_view key,
                       simdjson::ondemand::object& out) {
  return obj.find_field_unordered(key).get_object().get(out) == simdjson::SUCCESS;
}

// The string-valued fields of the object at `key` (labels, event attributes). Non-string
// values are skipped; an absent or null object, or a non-object, gives an empty map.
inline std::map<std::string, std::string> get_string_map(simdjson::ondemand::object& obj,
                                                         std::string_view key) {
  std::map<std::string, std::string> out;
  simdjson::ondemand::object inner;
  if (!get_object(obj, key, inner)) return out;
  for (auto maybe_field : inner) {
    // pad() makes errors here unlikely, but after one the iterator does not advance and the
    // loop would never end, so stop.
    simdjson::ondemand::field field;
    if (std::move(maybe_field).get(field) != simdjson::SUCCESS) break;
    std::string_view name;
    if (field.unescaped_key().get(name) != simdjson::SUCCESS) break;
    simdjson::ondemand::json_type type;
    if (field.value().type().get(type) != simdjson::SUCCESS) break;
    if (type != simdjson::ondemand::json_type::string) continue;
    std::string_view v;
    if (field.value().get_string().get(v) != simdjson::SUCCESS) break;
    out.insert_or_assign(std::string(name), std::string(v));
  }
  return out;
}

// The strings of the array at `key` (Cmd, Entrypoint, Env). Non-string elements are skipped;
// an absent or null array, or a non-array, gives an empty list.
inline std::vector<std::string> get_string_list(simdjson::ondemand::object& obj,
                                                std::string_view key) {
  std::vector<std::string> out;
  simdjson::ondemand::array arr;
  if (obj.find_field_unordered(key).get_array().get(arr) != simdjson::SUCCESS) return out;
  for (auto maybe_element : arr) {
    simdjson::ondemand::value element;
    // As above; get() takes only an rvalue, so the move is needed (clang-tidy cannot see it).
    // NOLINTNEXTLINE(performance-move-const-arg)
    if (std::move(maybe_element).get(element) != simdjson::SUCCESS) break;
    simdjson::ondemand::json_type type;
    if (element.type().get(type) != simdjson::SUCCESS) break;
    if (type != simdjson::ondemand::json_type::string) continue;
    std::string_view v;
    if (element.get_string().get(v) != simdjson::SUCCESS) break;
    out.emplace_back(v);
  }
  return out;
}

}  // namespace corral::docker
