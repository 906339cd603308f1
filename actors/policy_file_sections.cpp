// The policy file's sections, one reader each (users, workspace_roots, limits, defaults, pools,
// egress with its credentials, budget, per_principal), and the checks of single values they
// and parse_policy apply (image entries, networks, capabilities, env keys, principals, paths,
// CIDRs, header names). Apart from actors/policy_file.cpp so that the core shows how a file is
// read and this file what each key accepts.
#include <arpa/inet.h>
#include <simdjson.h>
#include <algorithm>
#include <cctype>
#include <filesystem>

#include "actors/policy.hpp"
#include "actors/policy_file_reader.hpp"

namespace corral::actors::policy_file_detail {

namespace fs = std::filesystem;

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
  auto name = capability_name(s);
  if (!name) return json_quoted(s) + " is not a Linux capability";
  if (is_never_granted_capability(*name)) return *name + " is never granted to a sandbox";
  s = std::move(*name);
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
  // One rule for a principal's name, the request checks' (actors/policy_text.cpp); the file
  // says it in its own words.
  const bool ok = !check_principal_name(s);
  return ok ? std::string()
            : json_quoted(s) +
                  " is not a principal: 1-64 letters, digits, '_', '.', '-', '@', starting with a "
                  "letter or digit";
}

namespace {

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

}  // namespace

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

namespace {

// A field `limits` and `defaults` share (memory, cpus, pids, timeout, lifetime, max_output),
// read into either.
template <class Fields>
void read_limit_field(reader& r, std::string_view key, const std::string& at, const element& v,
                      Fields& out) {
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
}

}  // namespace

void read_limits(reader& r, const element& e, policy_limits& out) {
  r.members(e, "limits", {"memory", "cpus", "pids", "timeout", "lifetime", "max_output"},
            [&](std::string_view key, const std::string& at, const element& v) {
              read_limit_field(r, key, at, v, out);
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
              if (key == "idle") return void(r.duration(v, at, true, out.idle));
              read_limit_field(r, key, at, v, out);
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

namespace {

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

}  // namespace

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

}  // namespace corral::actors::policy_file_detail
