// The request checks' core: plan_sandbox and plan_exec turn a request into the exact create,
// in order (text first, then image, limits, network, egress, capabilities, user, mounts, env,
// durations, labels), with the limit and env helpers only they use. The checks of a single
// area live beside it: policy_text.cpp (strings, users, keys, images), policy_workspace.cpp
// (the host directory), policy_egress.cpp (egress hosts), policy_pool.cpp (the agent, the warm
// pool and container names).
#include "actors/policy.hpp"

#include "actors/policy_detail.hpp"
#include "actors/spec_record.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <type_traits>

#include <caf/deep_to_string.hpp>

#include "actors/units.hpp"
#include "messages/capabilities.hpp"
#include "messages/errors.hpp"

namespace corral::actors {

using messages::corral_errc;
using messages::make_error;
using policy_detail::check_container_path;
using policy_detail::check_exec_text;
using policy_detail::check_spec_text;
using policy_detail::check_workspace;
using policy_detail::shown;
using policy_detail::violation;

namespace {

std::string upper(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return out;
}

// FNV-1a: a stable fingerprint of the spec for the container's labels, not a secret.
std::string fingerprint(std::string_view text) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  static constexpr char hex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4) out[static_cast<std::size_t>(i)] = hex[h & 0xF];
  return out;
}

std::chrono::milliseconds to_ms(caf::timespan t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t);
}

// Filters env per policy: reserved keys and keys outside a configured allowlist are stripped
// and reported; malformed keys are errors.
caf::error filter_env(const runtime_config& cfg, const std::map<std::string, std::string>& env,
                      std::vector<std::string>& out, std::vector<std::string>& warnings) {
  for (const auto& [k, v] : env) {
    const bool well_formed = !k.empty() &&
                             (std::isalpha(static_cast<unsigned char>(k[0])) || k[0] == '_') &&
                             std::all_of(k.begin(), k.end(), [](unsigned char c) {
                               return std::isalnum(c) || c == '_' || c == '.' || c == '-';
                             });
    if (!well_formed) {
      return make_error(
          corral_errc::invalid_request,
          "env key " + shown(k) +
              " is invalid: use letters, digits, '_', '.' and '-', not starting with a digit");
    }
    if (is_reserved_env_key(k)) {
      warnings.push_back("env " + k + " is reserved and was stripped");
      continue;
    }
    const auto& allowed = cfg.policy.env_allowlist;
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), k) == allowed.end()) {
      warnings.push_back("env " + k + " is not in the allowlist and was stripped");
      continue;
    }
    out.push_back(k + "=" + v);
  }
  return {};
}

template <class Strings>
caf::error check_total(std::string_view what, const Strings& items, std::size_t max) {
  std::size_t total = 0;
  for (const auto& item : items) {
    if constexpr (std::is_same_v<std::decay_t<decltype(item)>, std::string>)
      total += item.size() + 1;
    else
      total += item.first.size() + item.second.size() + 2;
  }
  if (total > max) {
    return make_error(corral_errc::invalid_request,
                      std::string(what) + " of " + std::to_string(total) +
                          " bytes is over the limit of " + std::to_string(max) + " bytes");
  }
  return {};
}

// Negative is invalid; above `max` a violation of the policy key `key` (none: invalid too).
caf::error check_duration(std::string_view what, caf::timespan t, std::chrono::milliseconds max,
                          std::string_view key = {}) {
  if (t.count() < 0) {
    return make_error(corral_errc::invalid_request, std::string(what) + " must not be negative");
  }
  if (to_ms(t) > max) {
    const std::string text = std::string(what) + " of " + format_duration(to_ms(t)) +
                             " is over the limit of " + format_duration(max);
    if (key.empty()) return make_error(corral_errc::invalid_request, text);
    return violation(text, key);
  }
  return {};
}

caf::error check_output_cap(std::string_view what, uint64_t v, uint64_t max) {
  if (v > max) {
    return violation(std::string(what) + " of " + std::to_string(v) +
                         " bytes is over the limit of " + std::to_string(max) + " bytes",
                     "limits.max_output");
  }
  return {};
}

// Extra tmpfs options may only tune the mount, never undo corral's own (size, owner,
// noexec, nosuid, nodev): the engine lets later options win.
caf::error check_tmpfs_options(const messages::tmpfs_mount& t) {
  std::size_t start = 0;
  while (start < t.options.size()) {
    auto end = t.options.find(',', start);
    if (end == std::string::npos) end = t.options.size();
    const std::string_view opt = std::string_view(t.options).substr(start, end - start);
    const bool numeric_value = [&] {
      const auto eq = opt.find('=');
      return eq != std::string_view::npos && eq + 1 < opt.size() &&
             std::all_of(opt.begin() + static_cast<long>(eq) + 1, opt.end(),
                         [](unsigned char c) { return std::isdigit(c); });
    }();
    // Restating what corral sets anyway (noexec, nosuid, nodev) is harmless.
    const bool allowed =
        opt == "noatime" || opt == "nodiratime" || opt == "relatime" || opt == "noexec" ||
        opt == "nosuid" || opt == "nodev" ||
        ((opt.rfind("mode=", 0) == 0 || opt.rfind("nr_inodes=", 0) == 0) && numeric_value);
    if (!allowed) {
      return make_error(corral_errc::policy_violation,
                        "tmpfs " + t.path + " option " + shown(opt) +
                            " is not allowed (allowed: mode=, nr_inodes=, noatime, nodiratime, "
                            "relatime, noexec, nosuid, nodev; size is "
                            "set by the size field)");
    }
    start = end + 1;
  }
  return {};
}

constexpr std::array<std::string_view, 14> forbidden_caps = {
    "SYS_ADMIN",    "SYS_MODULE", "SYS_RAWIO",       "SYS_PTRACE", "SYS_BOOT", "MAC_ADMIN",
    "MAC_OVERRIDE", "NET_ADMIN",  "DAC_READ_SEARCH", "SYS_TIME",   "SYSLOG",   "BPF",
    "PERFMON",      "ALL"};

}  // namespace

std::optional<std::string> capability_name(std::string_view given) {
  std::string name = upper(given);
  if (name.rfind("CAP_", 0) == 0) name.erase(0, 4);
  const auto& known = messages::linux_capabilities;
  if (name != "ALL" && std::find(known.begin(), known.end(), name) == known.end())
    return std::nullopt;
  return name;
}

bool is_never_granted_capability(std::string_view name) {
  return std::find(forbidden_caps.begin(), forbidden_caps.end(), name) != forbidden_caps.end();
}

bool shares_host_namespace(std::string_view network_mode) {
  return network_mode == "host" || network_mode.rfind("container:", 0) == 0;
}

bool is_reserved_env_key(std::string_view key) {
  static constexpr std::array<std::string_view, 10> reserved = {
      "HTTP_PROXY",      "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",     "LD_PRELOAD",
      "LD_LIBRARY_PATH", "BASH_ENV",    "ENV",      "PYTHONSTARTUP", "LD_AUDIT"};
  const std::string k = upper(key);
  if (k.rfind("CORRAL_", 0) == 0) return true;
  return std::find(reserved.begin(), reserved.end(), k) != reserved.end();
}

caf::expected<sandbox_plan> plan_sandbox(const runtime_config& cfg, const std::string& key,
                                         const messages::sandbox_spec& spec,
                                         const std::string& engine_socket, int64_t now_ms) {
  // First of all: nothing below (nor the JSON writer) may see or rewrite a bad string.
  if (auto err = check_spec_text(key, spec)) return err;
  if (auto err = check_key(key)) return err;
  sandbox_plan plan;
  auto& c = plan.create;
  auto& h = c.host;

  const policy& pol = cfg.policy;
  c.image = spec.image.empty() ? pol.defaults.image : spec.image;
  if (auto err = check_image_reference(c.image)) return err;
  if (!image_allowed(c.image, pol.images)) {
    std::string allowed;
    // Shown escaped like the image: an embedder's policy reaches here unchecked by the policy
    // file's loader, and an error is one line.
    for (const auto& e : pol.images) allowed += (allowed.empty() ? "" : ", ") + shown(e);
    return violation("image " + shown(c.image) + " is not in the allowlist (" + allowed + ")",
                     "images");
  }

  // Limits: zero means the policy's default; nonsense is an error, excess a violation.
  auto limit = [&](std::string_view what, int64_t asked, int64_t fallback, int64_t minimum,
                   int64_t maximum, std::string_view key, int64_t& out) -> caf::error {
    if (asked < 0)
      return make_error(corral_errc::invalid_request, std::string(what) + " must not be negative");
    out = asked == 0 ? fallback : asked;
    if (out < minimum) {
      return make_error(corral_errc::invalid_request,
                        std::string(what) + " of " + std::to_string(out) +
                            " is below the minimum of " + std::to_string(minimum));
    }
    if (out > maximum) {
      return violation(std::string(what) + " of " + std::to_string(out) + " is over the limit of " +
                           std::to_string(maximum),
                       key);
    }
    return {};
  };
  if (auto err = limit("memory", spec.memory_bytes, pol.defaults.memory, 6LL << 20,
                       pol.limits.memory, "limits.memory", h.memory))
    return err;
  if (spec.memory_swap_bytes < 0) {
    return make_error(corral_errc::invalid_request, "memory-swap must not be negative");
  }
  h.memory_swap = spec.memory_swap_bytes == 0 ? h.memory : spec.memory_swap_bytes;
  if (h.memory_swap < h.memory) {
    return make_error(corral_errc::invalid_request,
                      "memory-swap must be at least memory (it includes it)");
  }
  if (h.memory_swap > 2 * pol.limits.memory) {
    return violation("memory-swap of " + std::to_string(h.memory_swap) + " is over the limit of " +
                         std::to_string(2 * pol.limits.memory) + " (twice the memory limit)",
                     "limits.memory");
  }
  if (h.memory_swap > h.memory) plan.warnings.push_back("swap allowed (loosened)");
  if (auto err = limit("cpus (nano)", spec.nano_cpus, pol.defaults.nano_cpus, 10'000'000,
                       pol.limits.nano_cpus, "limits.cpus", h.nano_cpus))
    return err;
  if (auto err = limit("pids limit", spec.pids_limit, pol.defaults.pids, 8, pol.limits.pids,
                       "limits.pids", h.pids_limit))
    return err;

  // Network: none unless asked for; never the host's or another container's namespace;
  // anything else only when the policy lists it.
  h.network_mode = spec.network_mode.empty() ? "none" : spec.network_mode;
  if (h.network_mode.size() > 128 ||
      !std::all_of(h.network_mode.begin(), h.network_mode.end(), [](unsigned char ch) {
        return std::isalnum(ch) || ch == '_' || ch == '.' || ch == '-' || ch == ':';
      })) {
    return make_error(corral_errc::invalid_request,
                      "network mode " + shown(h.network_mode) + " is not a network name");
  }
  if (shares_host_namespace(h.network_mode)) {
    return make_error(
        corral_errc::policy_violation,
        "network mode " + shown(h.network_mode) + " would share a namespace outside the sandbox");
  }
  if (h.network_mode != "none" &&
      std::find(pol.networks.begin(), pol.networks.end(), h.network_mode) == pol.networks.end()) {
    return violation("network mode " + shown(h.network_mode) + " is not allowed", "networks");
  }
  if (h.network_mode != "none")
    plan.warnings.push_back("network " + h.network_mode + " (loosened)");

  // Egress: hosts within the policy's egress.allow, none of them denied, through the proxy
  // outside an empty network namespace.
  if (spec.allow_hosts.size() > 64)
    return make_error(corral_errc::invalid_request, "allow-host: at most 64 hosts");
  for (auto host : spec.allow_hosts) {
    if (auto problem = check_egress_pattern(host); !problem.empty())
      return make_error(corral_errc::invalid_request, "allow-host: " + problem);
    if (h.network_mode != "none")
      return make_error(corral_errc::invalid_request, "allow-host " + shown(host) +
                                                          " needs network none (egress goes "
                                                          "through corral's proxy), not network " +
                                                          shown(h.network_mode));
    if (cfg.agent_path.empty())
      return make_error(corral_errc::invalid_request, "allow-host " + shown(host) +
                                                          ": egress needs the sandbox agent, which "
                                                          "this runtime does not run");
    const auto& eg = pol.egress;
    if (std::none_of(eg.allow.begin(), eg.allow.end(),
                     [&](const std::string& a) { return egress_pattern_covers(a, host); }))
      return violation("host " + shown(host) + " is not allowed for egress", "egress.allow");
    // A host wholly denied is refused here; a wildcard with denied names below it is not:
    // the proxy refuses those names at each connection.
    if (std::any_of(eg.deny.begin(), eg.deny.end(),
                    [&](const std::string& d) { return egress_pattern_covers(d, host); }))
      return violation("host " + shown(host) + " is denied for egress", "egress.deny");
    if (std::find(plan.egress_hosts.begin(), plan.egress_hosts.end(), host) ==
        plan.egress_hosts.end())
      plan.egress_hosts.push_back(host);
  }

  if (spec.writable_root && !pol.writable_root)
    return violation("a writable root filesystem is not allowed", "writable_root");
  h.readonly_rootfs = !spec.writable_root;
  if (spec.writable_root) plan.warnings.push_back("writable root (loosened)");
  h.cap_drop = {"ALL"};
  for (const auto& cap : spec.cap_add) {
    const auto known = capability_name(cap);
    if (!known) {
      return make_error(corral_errc::invalid_request,
                        "capability " + shown(cap) + " is not a Linux capability");
    }
    const std::string& name = *known;
    if (is_never_granted_capability(name)) {
      return make_error(corral_errc::policy_violation,
                        "capability " + name + " is never granted to a sandbox");
    }
    if (std::find(pol.capabilities.begin(), pol.capabilities.end(), name) ==
        pol.capabilities.end()) {
      return violation("capability " + name + " is not allowed", "capabilities");
    }
    h.cap_add.push_back(name);
    plan.warnings.push_back("capability " + name + " added (loosened)");
  }
  h.security_opt = {"no-new-privileges"};
  h.init = true;  // docker-init reaps zombies and forwards signals

  auto user = check_user(pol.users, spec.user.empty() ? default_user : spec.user);
  if (!user) return std::move(user.error());
  plan.user = std::move(*user);
  if (plan.user.rfind("0:", 0) == 0 || plan.user.substr(plan.user.find(':')) == ":0") {
    plan.warnings.push_back("runs as root or root's group (loosened)");
  }
  c.user = plan.user;
  const std::string uid = plan.user.substr(0, plan.user.find(':'));
  const std::string gid = plan.user.substr(plan.user.find(':') + 1);

  // /tmp (and any other tmpfs) writable by the sandbox user, never executable.
  std::vector<messages::tmpfs_mount> tmpfs = spec.tmpfs;
  if (tmpfs.empty()) tmpfs.push_back({"/tmp", default_tmp_bytes, {}});
  for (const auto& t : tmpfs) {
    if (auto err = check_container_path("tmpfs path", t.path)) return err;
    if (t.size_bytes < 0 || t.size_bytes > (4LL << 30)) {
      return make_error(corral_errc::invalid_request,
                        "tmpfs " + t.path + " size must be between 0 and 4 GiB");
    }
    if (auto err = check_tmpfs_options(t)) return err;
    std::string options = "rw,noexec,nosuid,nodev,size=" +
                          std::to_string(t.size_bytes == 0 ? default_tmp_bytes : t.size_bytes) +
                          ",uid=" + uid + ",gid=" + gid;
    if (!t.options.empty()) options += "," + t.options;
    h.tmpfs[t.path] = options;
  }

  if (spec.workspace.access != messages::access_mode::none) {
    if (pol.workspace_roots.empty()) {
      return violation("workspace " + shown(spec.workspace.host_path) +
                           " refused: this runtime allows no workspace",
                       "workspace_roots");
    }
    auto checked = check_workspace(cfg, spec.workspace, engine_socket);
    if (!checked) return std::move(checked.error());
    plan.workspace = std::move(*checked);
    h.binds.push_back(plan.workspace.host_path + ":" + plan.workspace.container_path +
                      (spec.workspace.access == messages::access_mode::ro ? ":ro" : ":rw"));
  }
  if (!spec.workdir.empty()) {
    if (auto err = check_container_path("workdir", spec.workdir)) return err;
    c.working_dir = spec.workdir;
  } else if (spec.workspace.access != messages::access_mode::none) {
    c.working_dir = spec.workspace.container_path;
  }

  if (auto err = check_total("env", spec.env, cfg.max_env_bytes)) return err;
  if (auto err = check_total("command", spec.command, cfg.max_argv_bytes)) return err;
  if (auto err = check_total("setup command", spec.setup_command, cfg.max_argv_bytes)) return err;
  if (auto err = check_total("labels", spec.labels, cfg.max_env_bytes)) return err;
  if (auto err = filter_env(cfg, spec.env, c.env, plan.warnings)) return err;

  // The keep-alive: docker-init (PID 1) forwards the stop signal to it, so it ends at once.
  c.cmd = spec.command.empty() ? std::vector<std::string>{"sleep", "2147483647"} : spec.command;

  for (const auto& [k, v] : spec.labels) {
    if (k.empty() || k.rfind("corral.", 0) == 0) {
      return make_error(corral_errc::policy_violation,
                        "label " + shown(k) + " is reserved for corral");
    }
    c.labels[k] = v;
  }

  if (auto err =
          check_duration("exec timeout", spec.exec_timeout, pol.limits.timeout, "limits.timeout"))
    return err;
  if (auto err = check_duration("lifetime", spec.lifetime, pol.limits.lifetime, "limits.lifetime"))
    return err;
  if (auto err = check_duration("idle limit", spec.idle_limit, std::chrono::hours(24 * 365)))
    return err;
  if (auto err = check_output_cap("stdout cap", spec.max_stdout, pol.limits.max_output)) return err;
  if (auto err = check_output_cap("stderr cap", spec.max_stderr, pol.limits.max_output)) return err;
  plan.exec_timeout =
      spec.exec_timeout.count() > 0 ? to_ms(spec.exec_timeout) : pol.defaults.timeout;
  plan.max_stdout = spec.max_stdout > 0 ? spec.max_stdout : pol.defaults.max_output;
  plan.max_stderr = spec.max_stderr > 0 ? spec.max_stderr : pol.defaults.max_output;
  // Every sandbox ends by itself: a one-shot (`corral run`) one after run_lifetime, any other
  // after the default lifetime, which is at most limits.lifetime.
  plan.lifetime = spec.lifetime.count() > 0           ? to_ms(spec.lifetime)
                  : spec.one_shot                     ? pol.run_lifetime
                  : pol.defaults.lifetime.count() > 0 ? pol.defaults.lifetime
                                                      : pol.limits.lifetime;
  plan.lifetime = std::min(plan.lifetime, pol.limits.lifetime);
  plan.idle_limit = spec.idle_limit.count() > 0 ? to_ms(spec.idle_limit) : pol.defaults.idle;
  plan.setup_command = spec.setup_command;

  plan.spec_record = encode(make_spec_record(spec, cfg.spec_secret));
  plan.spec_hash = fingerprint(plan.spec_record);
  c.labels[label_managed_by] = "corral";
  c.labels[label_runtime] = cfg.name;
  c.labels[label_key] = key;
  if (const auto slash = key.find('/'); slash != std::string::npos)
    c.labels[label_principal] = key.substr(0, slash);
  c.labels[label_spec] = plan.spec_record;
  c.labels[label_created_at] = std::to_string(now_ms);
  // The backstop: any later process removes the sandbox past this, whatever its agent does.
  c.labels[label_deadline] = std::to_string(now_ms + plan.lifetime.count());
  c.labels[label_spec_hash] = plan.spec_hash;
  c.stop_signal = "SIGTERM";
  c.stop_timeout =
      static_cast<int>(std::chrono::duration_cast<std::chrono::seconds>(cfg.stop_grace).count());
  return plan;
}

caf::expected<exec_plan> plan_exec(const runtime_config& cfg, const sandbox_plan& sandbox,
                                   const messages::exec_request& request) {
  if (auto err = check_exec_text(request)) return err;
  if (request.argv.empty()) return make_error(corral_errc::invalid_request, "exec: empty command");
  if (auto err = check_total("exec argv", request.argv, cfg.max_argv_bytes)) return err;
  if (auto err = check_total("exec env", request.env, cfg.max_env_bytes)) return err;
  if (request.stdin_data.size() > cfg.max_stdin_bytes) {
    return make_error(corral_errc::invalid_request,
                      "exec stdin of " + std::to_string(request.stdin_data.size()) +
                          " bytes is over the limit of " + std::to_string(cfg.max_stdin_bytes) +
                          " bytes");
  }
  const auto& limits = cfg.policy.limits;
  if (auto err = check_duration("exec timeout", request.timeout, limits.timeout, "limits.timeout"))
    return err;
  if (auto err = check_output_cap("stdout cap", request.max_stdout, limits.max_output)) return err;
  if (auto err = check_output_cap("stderr cap", request.max_stderr, limits.max_output)) return err;
  exec_plan plan;
  plan.create.cmd = request.argv;
  plan.create.user = sandbox.user;
  plan.create.attach_stdin = request.has_stdin;
  if (!request.workdir.empty()) {
    if (auto err = check_container_path("exec workdir", request.workdir)) return err;
    plan.create.working_dir = request.workdir;
  }
  if (auto err = filter_env(cfg, request.env, plan.create.env, plan.warnings)) return err;
  plan.timeout = request.timeout.count() > 0 ? to_ms(request.timeout) : sandbox.exec_timeout;
  plan.max_stdout = request.max_stdout > 0 ? request.max_stdout : sandbox.max_stdout;
  plan.max_stderr = request.max_stderr > 0 ? request.max_stderr : sandbox.max_stderr;
  return plan;
}

}  // namespace corral::actors
