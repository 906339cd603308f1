#include "actors/policy_file.hpp"

#include <arpa/inet.h>
#include <simdjson.h>
#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include "actors/policy.hpp"
#include "actors/units.hpp"
#include "docker/json.hpp"

namespace corral::actors {

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using simdjson::dom::element;
using simdjson::dom::element_type;

constexpr std::size_t max_file_bytes = 1 << 20;
constexpr int64_t min_memory = 6LL << 20;  // the engine refuses less
constexpr int64_t max_pids_ceiling = 1 << 16;

// -- where each key is in the text -----------------------------------------------------------

// Byte offsets of every key path ("limits.memory", "workspace_roots[0].path") in the order
// they appear (a duplicate key has two), found by a small structural scan: simdjson's DOM
// keeps no positions. On malformed text, `broken_at` is where the structure broke.
struct key_locations {
  std::map<std::string, std::vector<std::size_t>> at;
  std::optional<std::size_t> broken_at;
};

class locator {
 public:
  explicit locator(std::string_view text) : text_(text) {}

  key_locations scan() {
    skip_space();
    out_.at[""].push_back(pos_);
    if (!value("") && !out_.broken_at) out_.broken_at = pos_;
    return std::move(out_);
  }

 private:
  bool fail() {
    if (!out_.broken_at) out_.broken_at = pos_;
    return false;
  }
  void skip_space() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  bool string(std::string* raw) {
    if (pos_ >= text_.size() || text_[pos_] != '"') return fail();
    const std::size_t start = ++pos_;
    while (pos_ < text_.size() && text_[pos_] != '"') {
      if (static_cast<unsigned char>(text_[pos_]) < 0x20) return fail();
      pos_ += text_[pos_] == '\\' ? 2 : 1;
    }
    if (pos_ >= text_.size()) return fail();
    if (raw) *raw = std::string(text_.substr(start, pos_ - start));
    ++pos_;
    return true;
  }
  bool value(const std::string& path) {
    if (pos_ >= text_.size()) return fail();
    const char c = text_[pos_];
    if (c == '{') return object(path);
    if (c == '[') return array(path);
    if (c == '"') return string(nullptr);
    const std::size_t start = pos_;
    while (pos_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[pos_])) ||
                                   text_[pos_] == '-' || text_[pos_] == '+' || text_[pos_] == '.'))
      ++pos_;
    return pos_ > start || fail();
  }
  bool object(const std::string& path) {
    ++pos_;
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == '}') return ++pos_, true;
    while (true) {
      skip_space();
      const std::size_t key_at = pos_;
      std::string key;
      if (!string(&key)) return false;
      const std::string child = path.empty() ? key : path + "." + key;
      out_.at[child].push_back(key_at);
      skip_space();
      if (pos_ >= text_.size() || text_[pos_] != ':') return fail();
      ++pos_;
      skip_space();
      if (!value(child)) return false;
      skip_space();
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < text_.size() && text_[pos_] == '}') return ++pos_, true;
      return fail();
    }
  }
  bool array(const std::string& path) {
    ++pos_;
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == ']') return ++pos_, true;
    for (std::size_t i = 0;; ++i) {
      skip_space();
      const std::string child = path + "[" + std::to_string(i) + "]";
      out_.at[child].push_back(pos_);
      if (!value(child)) return false;
      skip_space();
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < text_.size() && text_[pos_] == ']') return ++pos_, true;
      return fail();
    }
  }

  std::string_view text_;
  std::size_t pos_ = 0;
  key_locations out_;
};

std::size_t line_of(std::string_view text, std::size_t offset) {
  return 1 + static_cast<std::size_t>(
                 std::count(text.begin(), text.begin() + std::min(offset, text.size()), '\n'));
}

// -- reading values --------------------------------------------------------------------------

std::string json_quoted(std::string_view s) {
  std::string out;
  docker::append_json_string(out, s.substr(0, 80));
  return out;
}

std::string type_name(const element& e) {
  switch (e.type()) {
    case element_type::ARRAY:
      return "an array";
    case element_type::OBJECT:
      return "an object";
    case element_type::STRING:
      return "a string";
    case element_type::BOOL:
      return "a boolean";
    case element_type::NULL_VALUE:
      return "null";
    default:
      return "a number";
  }
}

class reader {
 public:
  reader(std::string_view text, std::string_view source)
      : text_(text), source_(source), where_(locator(text).scan()) {}

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

// -- checks of single values -----------------------------------------------------------------

std::string check_image_entry(std::string& s) {
  if (s == "*") return {};
  if (s.empty() || s.size() > 256) return "an image entry has 1 to 256 characters";
  for (unsigned char c : s) {
    if (!(std::isalnum(c) || c == '.' || c == '_' || c == '-' || c == '/' || c == ':' || c == '@'))
      return json_quoted(s) + " is not an image repository or prefix";
  }
  return {};
}

std::string check_network(std::string& s) {
  if (s.empty() || s.size() > 128 || !std::all_of(s.begin(), s.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '_' || c == '.' || c == '-' || c == ':';
      }))
    return json_quoted(s) + " is not a network name";
  if (shares_host_namespace(s))
    return json_quoted(s) + " is never allowed: it would share a namespace outside the sandbox";
  return {};
}

std::string check_capability(std::string& s) {
  std::string name;
  for (unsigned char c : s) name += static_cast<char>(std::toupper(c));
  if (name.rfind("CAP_", 0) == 0) name = name.substr(4);
  if (name.empty() || !std::all_of(name.begin(), name.end(), [](unsigned char c) {
        return std::isupper(c) || c == '_' || std::isdigit(c);
      }))
    return json_quoted(s) + " is not a capability name";
  if (is_never_granted_capability(name)) return name + " is never granted to a sandbox";
  s = name;
  return {};
}

std::string check_env_key(std::string& s) {
  const bool ok = !s.empty() && (std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_') &&
                  std::all_of(s.begin(), s.end(), [](unsigned char c) {
                    return std::isalnum(c) || c == '_' || c == '.' || c == '-';
                  });
  return ok ? std::string() : json_quoted(s) + " is not an env key";
}

std::string check_principal(std::string& s) {
  const bool ok = !s.empty() && s.size() <= 64 && std::isalnum(static_cast<unsigned char>(s[0])) &&
                  std::all_of(s.begin(), s.end(), [](unsigned char c) {
                    return std::isalnum(c) || c == '_' || c == '.' || c == '-' || c == '@';
                  });
  return ok ? std::string()
            : json_quoted(s) +
                  " is not a principal: 1-64 letters, digits, '_', '.', '-', '@', starting with a "
                  "letter or digit";
}

std::string check_root_path(const std::string& s) {
  const fs::path p(s);
  if (!p.is_absolute()) return json_quoted(s) + " is not an absolute path";
  if (p.lexically_normal() != p || (s.size() > 1 && s.back() == '/'))
    return json_quoted(s) + " is not normalised (no '.', '..', '//' or trailing '/')";
  return {};
}

// "127.0.0.0/8", "::1/128": an address and a prefix length within its family's width.
std::string check_cidr(std::string& s) {
  const auto slash = s.find('/');
  if (slash == std::string::npos) return json_quoted(s) + " is not a CIDR (like 127.0.0.0/8)";
  const std::string addr = s.substr(0, slash);
  const std::string bits = s.substr(slash + 1);
  unsigned char buf[16];
  int width = 0;
  if (inet_pton(AF_INET, addr.c_str(), buf) == 1) width = 32;
  if (inet_pton(AF_INET6, addr.c_str(), buf) == 1) width = 128;
  const bool digits =
      !bits.empty() && bits.size() <= 3 &&
      std::all_of(bits.begin(), bits.end(), [](unsigned char c) { return std::isdigit(c); });
  if (width == 0 || !digits || std::stoi(bits) > width)
    return json_quoted(s) + " is not a CIDR (like 127.0.0.0/8)";
  return {};
}

std::string check_header_name(const std::string& s) {
  const bool ok =
      !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '-' || c == '_';
      });
  return ok ? std::string() : json_quoted(s) + " is not a header name";
}

// -- the sections ----------------------------------------------------------------------------

void read_range(reader& r, const element& e, const std::string& path, id_range& out) {
  r.members(
      e, path, {"min", "max"}, [&](std::string_view key, const std::string& at, const element& v) {
        uint64_t n = 0;
        if (!r.count(v, at, 0, 4'294'967'294ULL, n)) return;
        if (n == 0)
          return r.fail(at, "0 is root: ranges start at 1 (users.allow_root decides about root)");
        (key == "min" ? out.min : out.max) = static_cast<uint32_t>(n);
      });
  if (!r.failed() && out.min > out.max)
    r.fail(path, "min " + std::to_string(out.min) + " is above max " + std::to_string(out.max));
}

void read_users(reader& r, const element& e, user_policy& out) {
  r.members(e, "users", {"uids", "gids", "allow_root"},
            [&](std::string_view key, const std::string& at, const element& v) {
              if (key == "allow_root") return void(r.boolean(v, at, out.allow_root));
              read_range(r, v, at, key == "uids" ? out.uids : out.gids);
            });
}

void read_roots(reader& r, const element& e, std::vector<workspace_root>& out) {
  simdjson::dom::array arr;
  if (e.get(arr)) return r.fail("workspace_roots", "expected an array, got " + type_name(e));
  out.clear();
  std::size_t i = 0;
  for (auto item : arr) {
    const std::string at = "workspace_roots[" + std::to_string(i++) + "]";
    workspace_root root;
    bool has_path = false;
    r.members(item, at, {"path", "writable"},
              [&](std::string_view key, const std::string& field, const element& v) {
                if (key == "writable") return void(r.boolean(v, field, root.writable));
                auto s = r.string(v, field);
                if (!s) return;
                if (auto problem = check_root_path(*s); !problem.empty())
                  return r.fail(field, problem);
                root.path = *s;
                has_path = true;
              });
    if (r.failed()) return;
    if (!has_path) return r.fail(at, "needs a \"path\"");
    out.push_back(std::move(root));
  }
}

void read_limits(reader& r, const element& e, policy_limits& out) {
  r.members(e, "limits", {"memory", "cpus", "pids", "timeout", "lifetime", "max_output"},
            [&](std::string_view key, const std::string& at, const element& v) {
              if (key == "memory") return void(r.size(v, at, min_memory, out.memory));
              if (key == "cpus") return void(r.cpus(v, at, out.nano_cpus));
              if (key == "timeout") return void(r.duration(v, at, false, out.timeout));
              if (key == "lifetime") return void(r.duration(v, at, false, out.lifetime));
              if (key == "max_output") {
                int64_t n = 0;
                if (r.size(v, at, 1, n)) out.max_output = static_cast<uint64_t>(n);
                return;
              }
              uint64_t n = 0;
              if (r.count(v, at, 8, max_pids_ceiling, n)) out.pids = static_cast<int64_t>(n);
            });
}

void read_defaults(reader& r, const element& e, policy_defaults& out) {
  r.members(e, "defaults",
            {"image", "memory", "cpus", "pids", "timeout", "max_output", "lifetime", "idle"},
            [&](std::string_view key, const std::string& at, const element& v) {
              if (key == "image") {
                if (auto s = r.string(v, at)) out.image = *s;
                return;
              }
              if (key == "memory") return void(r.size(v, at, min_memory, out.memory));
              if (key == "cpus") return void(r.cpus(v, at, out.nano_cpus));
              if (key == "timeout") return void(r.duration(v, at, false, out.timeout));
              if (key == "lifetime") return void(r.duration(v, at, false, out.lifetime));
              if (key == "idle") return void(r.duration(v, at, true, out.idle));
              if (key == "max_output") {
                int64_t n = 0;
                if (r.size(v, at, 1, n)) out.max_output = static_cast<uint64_t>(n);
                return;
              }
              uint64_t n = 0;
              if (r.count(v, at, 8, max_pids_ceiling, n)) out.pids = static_cast<int64_t>(n);
            });
}

void read_pools(reader& r, const element& e, std::vector<pool_entry>& out) {
  simdjson::dom::array arr;
  if (e.get(arr)) return r.fail("pools", "expected an array, got " + type_name(e));
  out.clear();
  std::size_t i = 0;
  for (auto item : arr) {
    const std::string at = "pools[" + std::to_string(i++) + "]";
    pool_entry pool;
    r.members(item, at, {"image", "memory", "cpus", "pids", "min", "max"},
              [&](std::string_view key, const std::string& field, const element& v) {
                if (key == "image") {
                  if (auto s = r.string(v, field)) pool.image = *s;
                  return;
                }
                if (key == "memory") return void(r.size(v, field, min_memory, pool.memory));
                if (key == "cpus") return void(r.cpus(v, field, pool.nano_cpus));
                if (key == "min") return void(r.count(v, field, 1, 10'000, pool.min));
                if (key == "max") return void(r.count(v, field, 1, 10'000, pool.max));
                uint64_t n = 0;
                if (r.count(v, field, 8, max_pids_ceiling, n)) pool.pids = static_cast<int64_t>(n);
              });
    if (r.failed()) return;
    if (pool.max != 0 && pool.max < pool.min)
      return r.fail(at + ".max", std::to_string(pool.max) + " is below its min (" +
                                     std::to_string(pool.min) + ")");
    out.push_back(std::move(pool));
  }
}

void read_credentials(reader& r, const element& e, std::vector<egress_credential_entry>& out) {
  simdjson::dom::array arr;
  if (e.get(arr)) return r.fail("egress.credentials", "expected an array, got " + type_name(e));
  out.clear();
  std::size_t i = 0;
  for (auto item : arr) {
    const std::string at = "egress.credentials[" + std::to_string(i++) + "]";
    egress_credential_entry c;
    r.members(item, at, {"host", "header", "value_file", "scheme"},
              [&](std::string_view key, const std::string& field, const element& v) {
                auto s = r.string(v, field);
                if (!s) return;
                if (key == "host") {
                  if (auto problem = check_egress_pattern(*s); !problem.empty())
                    return r.fail(field, problem);
                  if (s->rfind("*.", 0) == 0)
                    return r.fail(field, "a credential names one host, not a wildcard");
                  c.host = *s;
                } else if (key == "header") {
                  if (auto problem = check_header_name(*s); !problem.empty())
                    return r.fail(field, problem);
                  c.header = *s;
                } else if (key == "value_file") {
                  if (auto problem = check_root_path(*s); !problem.empty())
                    return r.fail(field, problem);
                  c.value_file = *s;
                } else {
                  if (s->find_first_of(" \t\r\n") != std::string::npos || s->size() > 64)
                    return r.fail(field, json_quoted(*s) + " is not an auth scheme");
                  c.scheme = *s;
                }
              });
    if (r.failed()) return;
    if (c.host.empty() || c.header.empty() || c.value_file.empty())
      return r.fail(at, "needs \"host\", \"header\" and \"value_file\"");
    for (const auto& other : out)
      if (other.host == c.host && other.header == c.header)
        return r.fail(at, "a second credential for " + c.host + " " + c.header);
    out.push_back(std::move(c));
  }
}

void read_egress(reader& r, const element& e, egress_policy& out) {
  r.members(e, "egress",
            {"allow", "deny", "ports", "allow_private_cidrs", "credentials",
             "max_bytes_per_sandbox", "resolve", "upstream_ca"},
            [&](std::string_view key, const std::string& at, const element& v) {
              if (key == "allow") return void(r.strings(v, at, check_egress_pattern, out.allow));
              if (key == "deny") return void(r.strings(v, at, check_egress_pattern, out.deny));
              if (key == "allow_private_cidrs")
                return void(r.strings(v, at, check_cidr, out.allow_private_cidrs));
              if (key == "credentials") return read_credentials(r, v, out.credentials);
              if (key == "max_bytes_per_sandbox")
                return void(r.size(v, at, 1, out.max_bytes_per_sandbox));
              if (key == "upstream_ca") {
                auto s = r.string(v, at);
                if (!s) return;
                // Empty: the host's system store.
                if (auto problem = s->empty() ? std::string() : check_root_path(*s);
                    !problem.empty())
                  return r.fail(at, problem);
                out.upstream_ca = *s;
                return;
              }
              if (key == "ports") {
                simdjson::dom::array arr;
                if (v.get(arr))
                  return r.fail(at, "expected an array of ports, got " + type_name(v));
                out.ports.clear();
                std::size_t i = 0;
                for (auto item : arr) {
                  uint64_t port = 0;
                  if (!r.count(item, at + "[" + std::to_string(i++) + "]", 1, 65535, port)) return;
                  out.ports.push_back(static_cast<uint16_t>(port));
                }
                if (out.ports.empty()) r.fail(at, "allows no port at all");
                return;
              }
              // resolve: {"name": "address"}
              simdjson::dom::object obj;
              if (v.get(obj)) return r.fail(at, "expected an object, got " + type_name(v));
              out.resolve.clear();
              for (auto field : obj) {
                std::string name(field.key);
                const std::string here = at + "." + name;
                if (auto problem = check_egress_pattern(name);
                    !problem.empty() || name.rfind("*.", 0) == 0)
                  return r.fail(here, json_quoted(std::string(field.key)) + " is not a host name");
                auto addr = r.string(field.value, here);
                if (!addr) return;
                unsigned char buf[16];
                if (inet_pton(AF_INET, addr->c_str(), buf) != 1 &&
                    inet_pton(AF_INET6, addr->c_str(), buf) != 1)
                  return r.fail(here, json_quoted(*addr) + " is not an IP address");
                if (!out.resolve.emplace(name, *addr).second) return r.fail(here, "listed twice");
              }
            });
}

void read_budget(reader& r, const element& e, policy_budget& out) {
  r.members(e, "budget", {"sandboxes", "memory", "execs"},
            [&](std::string_view key, const std::string& at, const element& v) {
              if (key == "memory") return void(r.size(v, at, min_memory, out.memory));
              r.count(v, at, 1, 1'000'000, key == "sandboxes" ? out.sandboxes : out.execs);
            });
}

void read_per_principal(reader& r, const element& e, principal_budget& out) {
  r.members(e, "per_principal", {"sandboxes", "execs", "queued_execs"},
            [&](std::string_view key, const std::string& at, const element& v) {
              uint64_t& field = key == "sandboxes" ? out.sandboxes
                                : key == "execs"   ? out.execs
                                                   : out.queued_execs;
              r.count(v, at, key == "queued_execs" ? 0 : 1, 1'000'000, field);
            });
}

// Rules between keys, each reported at the key that has to change.
void cross_check(reader& r, const policy& p) {
  const auto& l = p.limits;
  const auto& d = p.defaults;
  auto above = [&](const std::string& path, const std::string& value, const std::string& limit,
                   const std::string& limit_key) {
    r.fail(path, value + " is above " + limit_key + " (" + limit + ")");
  };
  if (check_image_reference(d.image))
    r.fail("defaults.image", json_quoted(d.image) + " is not an image reference");
  else if (!image_allowed(d.image, p.images))
    r.fail("defaults.image", json_quoted(d.image) + " is not allowed by images");
  if (d.memory > l.memory)
    above("defaults.memory", format_size(d.memory), format_size(l.memory), "limits.memory");
  if (d.nano_cpus > l.nano_cpus)
    above("defaults.cpus", format_cpus(d.nano_cpus), format_cpus(l.nano_cpus), "limits.cpus");
  if (d.pids > l.pids)
    above("defaults.pids", std::to_string(d.pids), std::to_string(l.pids), "limits.pids");
  if (d.timeout > l.timeout)
    above("defaults.timeout", format_duration(d.timeout), format_duration(l.timeout),
          "limits.timeout");
  if (d.max_output > l.max_output)
    above("defaults.max_output", format_size(static_cast<int64_t>(d.max_output)),
          format_size(static_cast<int64_t>(l.max_output)), "limits.max_output");
  if (d.lifetime > l.lifetime)
    above("defaults.lifetime", format_duration(d.lifetime), format_duration(l.lifetime),
          "limits.lifetime");
  if (p.run_lifetime > l.lifetime)
    above("run_lifetime", format_duration(p.run_lifetime), format_duration(l.lifetime),
          "limits.lifetime");
  if (p.budget.memory < d.memory)
    r.fail("budget.memory", format_size(p.budget.memory) + " is below defaults.memory (" +
                                format_size(d.memory) + "): no sandbox would fit");
  if (p.per_principal.sandboxes > p.budget.sandboxes)
    above("per_principal.sandboxes", std::to_string(p.per_principal.sandboxes),
          std::to_string(p.budget.sandboxes), "budget.sandboxes");
  if (p.per_principal.execs > p.budget.execs)
    above("per_principal.execs", std::to_string(p.per_principal.execs),
          std::to_string(p.budget.execs), "budget.execs");
  uint64_t pooled = 0;
  for (std::size_t i = 0; i < p.pools.size(); ++i) {
    const auto& pool = p.pools[i];
    const std::string at = "pools[" + std::to_string(i) + "]";
    if (!pool.image.empty() && check_image_reference(pool.image))
      r.fail(at + ".image", json_quoted(pool.image) + " is not an image reference");
    else if (!pool.image.empty() && !image_allowed(pool.image, p.images))
      r.fail(at + ".image", json_quoted(pool.image) + " is not allowed by images");
    if (pool.memory > l.memory)
      above(at + ".memory", format_size(pool.memory), format_size(l.memory), "limits.memory");
    if (pool.nano_cpus > l.nano_cpus)
      above(at + ".cpus", format_cpus(pool.nano_cpus), format_cpus(l.nano_cpus), "limits.cpus");
    if (pool.pids > l.pids)
      above(at + ".pids", std::to_string(pool.pids), std::to_string(l.pids), "limits.pids");
    pooled += pool.min;
  }
  if (pooled > p.budget.sandboxes)
    r.fail("pools", "the pools' minimums (" + std::to_string(pooled) +
                        " sandboxes) are above budget.sandboxes (" +
                        std::to_string(p.budget.sandboxes) + ")");
}

// -- writing ---------------------------------------------------------------------------------

std::string json_string(std::string_view s) {
  std::string out;
  docker::append_json_string(out, s);
  return out;
}

std::string json_strings(const std::vector<std::string>& items) {
  std::string out = "[";
  for (const auto& s : items) out += (out.size() > 1 ? ", " : "") + json_string(s);
  return out + "]";
}

std::string json_range(const id_range& r) {
  return "{\"min\": " + std::to_string(r.min) + ", \"max\": " + std::to_string(r.max) + "}";
}

}  // namespace

policy policy::node_default() {
  return policy{};
}

policy policy::embedded_default() {
  policy p;
  p.workspace_roots = {{"/", true}};
  return p;
}

parsed_policy parse_policy(std::string_view json, std::string_view source_name) {
  reader r(json, source_name);
  parsed_policy out;
  simdjson::dom::parser parser;
  const simdjson::padded_string padded(json);
  element root;
  if (auto err = parser.parse(padded).get(root)) {
    r.syntax_error(simdjson::error_message(err));
    out.error = r.error();
    return out;
  }
  policy p = policy::node_default();
  bool given_per_principal = false;
  r.members(root, "",
            {"images", "users", "workspace_roots", "networks", "capabilities", "env_allowlist",
             "limits", "defaults", "writable_root", "budget", "per_principal", "run_lifetime",
             "admins", "require_userns_remap", "pools", "egress"},
            [&](std::string_view key, const std::string& at, const element& v) {
              if (key == "images") {
                if (r.strings(v, at, check_image_entry, p.images) && p.images.empty())
                  r.fail(at, "allows no image at all (\"*\" allows any)");
              } else if (key == "users") {
                read_users(r, v, p.users);
              } else if (key == "workspace_roots") {
                read_roots(r, v, p.workspace_roots);
              } else if (key == "networks") {
                r.strings(v, at, check_network, p.networks);
              } else if (key == "capabilities") {
                r.strings(v, at, check_capability, p.capabilities);
              } else if (key == "env_allowlist") {
                r.strings(v, at, check_env_key, p.env_allowlist);
              } else if (key == "limits") {
                read_limits(r, v, p.limits);
              } else if (key == "defaults") {
                read_defaults(r, v, p.defaults);
              } else if (key == "writable_root") {
                r.boolean(v, at, p.writable_root);
              } else if (key == "budget") {
                read_budget(r, v, p.budget);
              } else if (key == "per_principal") {
                given_per_principal = true;
                read_per_principal(r, v, p.per_principal);
              } else if (key == "run_lifetime") {
                r.duration(v, at, false, p.run_lifetime);
              } else if (key == "require_userns_remap") {
                r.boolean(v, at, p.require_userns_remap);
              } else if (key == "pools") {
                read_pools(r, v, p.pools);
              } else if (key == "egress") {
                read_egress(r, v, p.egress);
              } else {
                r.strings(v, at, check_principal, p.admins);
              }
            });
  // Left out, a principal's share is at most the whole budget.
  if (!given_per_principal) {
    p.per_principal.sandboxes = std::min(p.per_principal.sandboxes, p.budget.sandboxes);
    p.per_principal.execs = std::min(p.per_principal.execs, p.budget.execs);
  }
  if (!r.failed()) cross_check(r, p);
  if (r.failed()) {
    out.error = r.error();
    return out;
  }
  out.value = std::move(p);
  return out;
}

std::string check_policy_for_host(const policy& p, uint64_t pid_max) {
  if (pid_max > 0 && static_cast<uint64_t>(p.limits.pids) > pid_max / 8) {
    return "limits.pids: " + std::to_string(p.limits.pids) +
           " is too close to this host's kernel.pid_max (" + std::to_string(pid_max) +
           "): at most " + std::to_string(pid_max / 8);
  }
  return {};
}

parsed_policy load_policy_file(const std::string& path) {
  parsed_policy out;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    out.error = path + ": cannot read the policy file";
    return out;
  }
  std::string text(max_file_bytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > max_file_bytes) {
    out.error = path + ": the policy file is larger than 1 MiB";
    return out;
  }
  out = parse_policy(text, path);
  if (!out) return out;
  uint64_t pid_max = 0;
  std::ifstream("/proc/sys/kernel/pid_max") >> pid_max;
  if (auto problem = check_policy_for_host(*out.value, pid_max); !problem.empty()) {
    out.value.reset();
    out.error = path + ": " + problem;
  }
  return out;
}

std::string to_json(const policy& p) {
  const auto& l = p.limits;
  const auto& d = p.defaults;
  auto size = [](auto n) { return json_string(format_size(static_cast<int64_t>(n))); };
  auto duration = [](std::chrono::milliseconds x) { return json_string(format_duration(x)); };
  std::string roots = "[";
  for (const auto& root : p.workspace_roots) {
    roots += std::string(roots.size() > 1 ? ", " : "") + "{\"path\": " + json_string(root.path) +
             ", \"writable\": " + (root.writable ? "true" : "false") + "}";
  }
  roots += "]";
  std::string out = "{\n";
  out += "  \"images\": " + json_strings(p.images) + ",\n";
  out += "  \"users\": {\"uids\": " + json_range(p.users.uids) +
         ", \"gids\": " + json_range(p.users.gids) +
         ", \"allow_root\": " + (p.users.allow_root ? "true" : "false") + "},\n";
  out += "  \"workspace_roots\": " + roots + ",\n";
  out += "  \"networks\": " + json_strings(p.networks) + ",\n";
  out += "  \"capabilities\": " + json_strings(p.capabilities) + ",\n";
  out += "  \"env_allowlist\": " + json_strings(p.env_allowlist) + ",\n";
  out += "  \"limits\": {\"memory\": " + size(l.memory) +
         ", \"cpus\": " + format_cpus(l.nano_cpus) + ", \"pids\": " + std::to_string(l.pids) +
         ", \"timeout\": " + duration(l.timeout) + ", \"lifetime\": " + duration(l.lifetime) +
         ", \"max_output\": " + size(l.max_output) + "},\n";
  out += "  \"defaults\": {\"image\": " + json_string(d.image) + ", \"memory\": " + size(d.memory) +
         ", \"cpus\": " + format_cpus(d.nano_cpus) + ", \"pids\": " + std::to_string(d.pids) +
         ", \"timeout\": " + duration(d.timeout) + ", \"max_output\": " + size(d.max_output) +
         ", \"lifetime\": " + duration(d.lifetime.count() > 0 ? d.lifetime : l.lifetime) +
         ", \"idle\": " + duration(d.idle) + "},\n";
  out += std::string("  \"writable_root\": ") + (p.writable_root ? "true" : "false") + ",\n";
  out += "  \"budget\": {\"sandboxes\": " + std::to_string(p.budget.sandboxes) +
         ", \"memory\": " + size(p.budget.memory) +
         ", \"execs\": " + std::to_string(p.budget.execs) + "},\n";
  out += "  \"per_principal\": {\"sandboxes\": " + std::to_string(p.per_principal.sandboxes) +
         ", \"execs\": " + std::to_string(p.per_principal.execs) +
         ", \"queued_execs\": " + std::to_string(p.per_principal.queued_execs) + "},\n";
  out += "  \"run_lifetime\": " + duration(p.run_lifetime) + ",\n";
  out += "  \"admins\": " + json_strings(p.admins) + ",\n";
  out += std::string("  \"require_userns_remap\": ") + (p.require_userns_remap ? "true" : "false") +
         ",\n";
  std::string pools = "[";
  for (const auto& pool : p.pools) {
    pools += std::string(pools.size() > 1 ? ", " : "") +
             "{\"image\": " + json_string(pool.image.empty() ? d.image : pool.image) +
             ", \"memory\": " + size(pool.memory > 0 ? pool.memory : d.memory) +
             ", \"cpus\": " + format_cpus(pool.nano_cpus > 0 ? pool.nano_cpus : d.nano_cpus) +
             ", \"pids\": " + std::to_string(pool.pids > 0 ? pool.pids : d.pids) +
             ", \"min\": " + std::to_string(pool.min) +
             ", \"max\": " + std::to_string(pool.max > 0 ? pool.max : 2 * pool.min) + "}";
  }
  out += "  \"pools\": " + pools + "],\n";
  const auto& eg = p.egress;
  std::string ports = "[", credentials = "[", resolve = "{";
  for (auto port : eg.ports) ports += (ports.size() > 1 ? ", " : "") + std::to_string(port);
  for (const auto& c : eg.credentials)
    credentials += std::string(credentials.size() > 1 ? ", " : "") +
                   "{\"host\": " + json_string(c.host) + ", \"header\": " + json_string(c.header) +
                   ", \"value_file\": " + json_string(c.value_file) +
                   ", \"scheme\": " + json_string(c.scheme) + "}";
  for (const auto& [name, addr] : eg.resolve)
    resolve +=
        std::string(resolve.size() > 1 ? ", " : "") + json_string(name) + ": " + json_string(addr);
  out += "  \"egress\": {\"allow\": " + json_strings(eg.allow) +
         ", \"deny\": " + json_strings(eg.deny) + ", \"ports\": " + ports +
         "], \"allow_private_cidrs\": " + json_strings(eg.allow_private_cidrs) +
         ", \"credentials\": " + credentials +
         "], \"max_bytes_per_sandbox\": " + size(eg.max_bytes_per_sandbox) +
         ", \"resolve\": " + resolve + "}, \"upstream_ca\": " + json_string(eg.upstream_ca) + "}\n";
  return out + "}\n";
}

bool policy::reaches_host_files() const {
  return users.allow_root || std::any_of(workspace_roots.begin(), workspace_roots.end(),
                                         [](const workspace_root& r) { return r.writable; });
}

}  // namespace corral::actors
