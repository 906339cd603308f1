// The policy file's reader, its core: the two built-in policies, parse_policy (simdjson's DOM
// read key by key, each error naming its key path and line, which a small structural scan
// finds because the DOM keeps no positions), the rules between keys, and the file and host
// checks. The reader class and the section readers are in actors/policy_file_reader.hpp and
// actors/policy_file_sections.cpp, the writer of the effective policy in
// actors/policy_file_json.cpp.
#include "actors/policy_file.hpp"

#include <simdjson.h>
#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>

#include "actors/policy.hpp"
#include "actors/policy_file_reader.hpp"
#include "actors/units.hpp"
#include "docker/json.hpp"

namespace corral::actors {

using namespace policy_file_detail;

namespace {

using namespace std::chrono_literals;

constexpr std::size_t max_file_bytes = 1 << 20;

// -- where each key is in the text -----------------------------------------------------------

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

}  // namespace

namespace policy_file_detail {

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

reader::reader(std::string_view text, std::string_view source)
    : text_(text), source_(source), where_(locator(text).scan()) {}

}  // namespace policy_file_detail

namespace {

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

bool policy::reaches_host_files() const {
  return users.allow_root || std::any_of(workspace_roots.begin(), workspace_roots.end(),
                                         [](const workspace_root& r) { return r.writable; });
}

}  // namespace corral::actors
