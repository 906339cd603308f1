// Private to the policy file's split sources (actors/policy_file*.cpp), not a public header:
// the reader that turns simdjson's DOM into a policy and names each error's key path and line,
// the limits its sections share, and the section readers parse_policy calls. It includes
// simdjson, which the public actors/policy_file.hpp keeps out.
#pragma once

#include <simdjson.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "actors/policy_file.hpp"
#include "actors/units.hpp"

namespace corral::actors::policy_file_detail {

using simdjson::dom::element;
using simdjson::dom::element_type;

constexpr int64_t min_memory = 6LL << 20;  // the engine refuses less
constexpr int64_t max_pids_ceiling = 1 << 16;

// Byte offsets of every key path ("limits.memory", "workspace_roots[0].path") in the order
// they appear (a duplicate key has two), found by a small structural scan: simdjson's DOM
// keeps no positions. On malformed text, `broken_at` is where the structure broke.
struct key_locations {
  std::map<std::string, std::vector<std::size_t>> at;
  std::optional<std::size_t> broken_at;
};

// The 1-based line of a byte offset.
std::size_t line_of(std::string_view text, std::size_t offset);

// A value as an error shows it: a JSON string of at most 80 bytes.
std::string json_quoted(std::string_view s);
// What a JSON value is, for "expected X, got Y".
std::string type_name(const element& e);

// Reads the DOM value by value into a policy; keeps the first error, with its key path and line.
class reader {
 public:
  // Scans `text` for where each key is (locator, actors/policy_file.cpp) before any reading.
  reader(std::string_view text, std::string_view source);

  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }

  // Records the first error: "SOURCE:LINE: PATH: what" (the `nth` occurrence of the key).
  void fail(const std::string& path, const std::string& what, std::size_t nth = 0) {
    if (failed()) return;
    std::string line;
    if (auto it = where_.at.find(path); it != where_.at.end() && nth < it->second.size())
      line = ":" + std::to_string(line_of(text_, it->second[nth]));
    error_ = std::string(source_) + line + ": " + (path.empty() ? "" : path + ": ") + what;
  }

  void syntax_error(const std::string& what) {
    std::string line;
    if (where_.broken_at) line = ":" + std::to_string(line_of(text_, *where_.broken_at));
    error_ = std::string(source_) + line + ": not valid JSON: " + what;
  }

  // Calls on_field(key, path, value) for each member of the object at `path`, in order;
  // unknown and duplicate keys are errors.
  template <class OnField>
  void members(const element& e, const std::string& path,
               std::initializer_list<std::string_view> known, OnField on_field) {
    simdjson::dom::object obj;
    if (e.get(obj)) return fail(path, "expected an object, got " + type_name(e));
    std::map<std::string, std::size_t> seen;
    for (auto field : obj) {
      if (failed()) return;
      const std::string key(field.key);
      const std::string child = path.empty() ? key : path + "." + key;
      if (seen[key]++ > 0) {
        return fail(child, "duplicate key (each key may appear once)", seen[key] - 1);
      }
      if (std::find(known.begin(), known.end(), field.key) == known.end()) {
        std::string names;
        for (auto k : known) names += (names.empty() ? "" : ", ") + std::string(k);
        return fail(child, "unknown key (known here: " + names + ")");
      }
      on_field(field.key, child, field.value);
    }
  }

  std::optional<std::string> string(const element& e, const std::string& path) {
    std::string_view s;
    if (e.get(s)) return fail(path, "expected a string, got " + type_name(e)), std::nullopt;
    for (unsigned char c : s) {
      if (c < 0x20 || c == 0x7f) return fail(path, "contains a control character"), std::nullopt;
    }
    return std::string(s);
  }

  bool boolean(const element& e, const std::string& path, bool& out) {
    if (e.get(out)) return fail(path, "expected true or false, got " + type_name(e)), false;
    return true;
  }

  bool count(const element& e, const std::string& path, uint64_t min, uint64_t max, uint64_t& out) {
    uint64_t n = 0;
    if (e.get(n)) {
      fail(path, "expected a whole number from " + std::to_string(min) + " to " +
                     std::to_string(max) + ", got " + type_name(e));
      return false;
    }
    if (n < min || n > max) {
      fail(path, std::to_string(n) + " is out of range (" + std::to_string(min) + " to " +
                     std::to_string(max) + ")");
      return false;
    }
    out = n;
    return true;
  }

  bool size(const element& e, const std::string& path, int64_t min, int64_t& out) {
    auto s = string(e, path);
    if (!s) return false;
    auto n = parse_size(*s);
    if (!n) return fail(path, json_quoted(*s) + " is not a size (like 512k, 256m, 2g)"), false;
    if (*n < min)
      return fail(path, json_quoted(*s) + " is below the minimum of " + format_size(min)), false;
    out = *n;
    return true;
  }

  bool duration(const element& e, const std::string& path, bool zero_ok,
                std::chrono::milliseconds& out) {
    auto s = string(e, path);
    if (!s) return false;
    auto d = parse_duration(*s);
    if (!d)
      return fail(path, json_quoted(*s) + " is not a duration (like 500ms, 30s, 10m, 1h)"), false;
    if (!zero_ok && d->count() == 0) return fail(path, "must be longer than 0s"), false;
    out = *d;
    return true;
  }

  bool cpus(const element& e, const std::string& path, int64_t& out) {
    double x = 0;
    if (e.get(x))
      return fail(path, "expected a number of CPUs (like 0.5 or 2), got " + type_name(e)), false;
    if (!(x >= 0.01 && x <= 1e6))
      return fail(path, "must be a number of CPUs from 0.01 to 1000000"), false;
    out = static_cast<int64_t>(std::llround(x * 1e9));
    return true;
  }

  // An array of strings, each checked by `check` (an error text, or empty).
  bool strings(const element& e, const std::string& path,
               const std::function<std::string(std::string&)>& check,
               std::vector<std::string>& out) {
    simdjson::dom::array arr;
    if (e.get(arr)) return fail(path, "expected an array of strings, got " + type_name(e)), false;
    std::vector<std::string> items;
    std::size_t i = 0;
    for (auto item : arr) {
      const std::string at = path + "[" + std::to_string(i++) + "]";
      auto s = string(item, at);
      if (!s) return false;
      if (auto problem = check(*s); !problem.empty()) return fail(at, problem), false;
      if (std::find(items.begin(), items.end(), *s) != items.end())
        return fail(at, json_quoted(*s) + " is listed twice"), false;
      items.push_back(*s);
    }
    out = std::move(items);
    return true;
  }

 private:
  std::string_view text_;
  std::string_view source_;
  key_locations where_;
  std::string error_;
};

// -- checks of single values (actors/policy_file_sections.cpp): an error text, or empty -------

std::string check_image_entry(std::string& s);
std::string check_network(std::string& s);
std::string check_capability(std::string& s);  // normalises to upper case without CAP_
std::string check_env_key(std::string& s);
std::string check_principal(std::string& s);

// -- the sections (actors/policy_file_sections.cpp): each reads its key into `out` ----------

void read_users(reader& r, const element& e, user_policy& out);
void read_roots(reader& r, const element& e, std::vector<workspace_root>& out);
void read_limits(reader& r, const element& e, policy_limits& out);
void read_defaults(reader& r, const element& e, policy_defaults& out);
void read_pools(reader& r, const element& e, std::vector<pool_entry>& out);
void read_egress(reader& r, const element& e, egress_policy& out);
void read_budget(reader& r, const element& e, policy_budget& out);
void read_per_principal(reader& r, const element& e, principal_budget& out);

}  // namespace corral::actors::policy_file_detail
