#include "actors/policy.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <filesystem>
#include <type_traits>

#include <caf/deep_to_string.hpp>

#include "messages/errors.hpp"

namespace corral::actors {

namespace fs = std::filesystem;
using messages::corral_errc;
using messages::make_error;

namespace {

std::string upper(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return out;
}

bool has_control_or_nul(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](unsigned char c) { return c == 0; });
}

std::string shown(std::string_view s) {
  std::string out = "'";
  for (unsigned char c : s.substr(0, 80)) {
    if (c < 0x20 || c == 0x7f) {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xF];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > 80) out += "...";
  return out + "'";
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
    if (has_control_or_nul(v)) {
      return make_error(corral_errc::invalid_request, "env value of " + k + " contains a NUL byte");
    }
    if (is_reserved_env_key(k)) {
      warnings.push_back("env " + k + " is reserved and was stripped");
      continue;
    }
    if (!cfg.env_allowlist.empty() && std::find(cfg.env_allowlist.begin(), cfg.env_allowlist.end(),
                                                k) == cfg.env_allowlist.end()) {
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

caf::error check_duration(std::string_view what, caf::timespan t, std::chrono::milliseconds max) {
  if (t.count() < 0) {
    return make_error(corral_errc::invalid_request, std::string(what) + " must not be negative");
  }
  if (to_ms(t) > max) {
    return make_error(corral_errc::invalid_request,
                      std::string(what) + " of " + std::to_string(to_ms(t).count()) +
                          " ms is over the limit of " + std::to_string(max.count()) + " ms");
  }
  return {};
}

caf::error check_output_cap(std::string_view what, uint64_t v, uint64_t max) {
  if (v > max) {
    return make_error(corral_errc::invalid_request, std::string(what) + " of " + std::to_string(v) +
                                                        " bytes is over the limit of " +
                                                        std::to_string(max) + " bytes");
  }
  return {};
}

// uid and gid for the tmpfs owner: the sandbox user's numbers, or 1000 when it is a name.
std::pair<std::string, std::string> owner_ids(const std::string& user) {
  auto numeric = [](std::string_view s) {
    return !s.empty() &&
           std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
  };
  const auto colon = user.find(':');
  std::string uid = user.substr(0, colon);
  std::string gid = colon == std::string::npos ? uid : user.substr(colon + 1);
  if (!numeric(uid)) uid = "1000";
  if (!numeric(gid)) gid = uid;
  return {uid, gid};
}

caf::error check_container_path(std::string_view what, const std::string& path) {
  const fs::path p(path);
  if (!p.is_absolute() || p == "/" || p.lexically_normal() != p ||
      std::any_of(p.begin(), p.end(), [](const fs::path& part) { return part == ".."; })) {
    return make_error(corral_errc::invalid_request,
                      std::string(what) + " " + shown(path) +
                          " must be an absolute, normalised path other than /");
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

// Host directories that are never a workspace: the system's own, and the engine's state.
caf::error check_system_directory(const fs::path& real, const std::string& asked) {
  static const std::array<std::string_view, 9> subtree = {"/proc",
                                                          "/sys",
                                                          "/dev",
                                                          "/boot",
                                                          "/etc",
                                                          "/var/lib/docker",
                                                          "/var/lib/containerd",
                                                          "/run/containerd",
                                                          "/run/docker"};
  static const std::array<std::string_view, 11> exact = {
      "/usr", "/bin", "/sbin", "/lib", "/lib64", "/var", "/home", "/root", "/run", "/opt", "/srv"};
  const std::string p = real.string();
  for (auto dir : subtree) {
    if (p == dir ||
        (p.size() > dir.size() && p.compare(0, dir.size(), dir) == 0 && p[dir.size()] == '/')) {
      return make_error(corral_errc::policy_violation,
                        "workspace " + shown(asked) + " is inside the host's " + std::string(dir));
    }
  }
  for (auto dir : exact) {
    if (p == dir)
      return make_error(corral_errc::policy_violation,
                        "workspace " + shown(asked) + " is a host system directory");
  }
  return {};
}

caf::error check_workspace(const messages::workspace_mount& ws, const std::string& engine_socket) {
  if (ws.host_path.empty() || !fs::path(ws.host_path).is_absolute()) {
    return make_error(corral_errc::invalid_request,
                      "workspace " + shown(ws.host_path) + " must be an absolute host path");
  }
  std::error_code ec;
  const fs::path real = fs::canonical(ws.host_path, ec);
  if (ec) {
    return make_error(corral_errc::invalid_request,
                      "workspace " + shown(ws.host_path) + " does not exist: " + ec.message());
  }
  if (!fs::is_directory(real, ec)) {
    return make_error(corral_errc::invalid_request,
                      "workspace " + shown(ws.host_path) + " is not a directory");
  }
  if (real == "/") {
    return make_error(corral_errc::policy_violation,
                      "workspace must not be the host's root directory");
  }
  if (real.string().find(':') != std::string::npos ||
      ws.container_path.find(':') != std::string::npos) {
    return make_error(corral_errc::invalid_request, "workspace paths must not contain ':'");
  }
  // Neither the engine's socket nor anything that contains it may be mounted: that would hand
  // the sandbox the engine.
  for (const std::string& socket :
       {engine_socket, std::string("/var/run/docker.sock"), std::string("/run/docker.sock")}) {
    if (socket.empty()) continue;
    const fs::path socket_path = fs::weakly_canonical(socket, ec);
    if (ec) continue;
    const fs::path socket_dir = socket_path.parent_path();
    auto contains = [](const fs::path& outer, const fs::path& inner) {
      auto o = outer.begin(), i = inner.begin();
      for (; o != outer.end(); ++o, ++i) {
        if (i == inner.end() || *o != *i) return false;
      }
      return true;
    };
    if (contains(real, socket_path) || real == socket_dir) {
      return make_error(corral_errc::policy_violation, "workspace " + shown(ws.host_path) +
                                                           " would expose the Docker socket " +
                                                           socket_path.string());
    }
  }
  if (auto err = check_system_directory(real, ws.host_path)) return err;
  return check_container_path("workspace container path", ws.container_path);
}

constexpr std::array<std::string_view, 14> forbidden_caps = {
    "SYS_ADMIN",    "SYS_MODULE", "SYS_RAWIO",       "SYS_PTRACE", "SYS_BOOT", "MAC_ADMIN",
    "MAC_OVERRIDE", "NET_ADMIN",  "DAC_READ_SEARCH", "SYS_TIME",   "SYSLOG",   "BPF",
    "PERFMON",      "ALL"};

}  // namespace

caf::error check_key(std::string_view key) {
  const bool ok = !key.empty() && key.size() <= 128 &&
                  std::isalnum(static_cast<unsigned char>(key[0])) &&
                  std::all_of(key.begin(), key.end(), [](unsigned char c) {
                    return std::isalnum(c) || c == '_' || c == '.' || c == '-';
                  });
  if (!ok) {
    return make_error(corral_errc::invalid_request,
                      "sandbox key " + shown(key) +
                          " is invalid: 1-128 characters of letters, digits, '_', '.', '-', "
                          "starting with a letter or digit");
  }
  return {};
}

caf::error check_image_reference(std::string_view image) {
  auto bad = [&](std::string why) {
    return make_error(corral_errc::invalid_request,
                      "image reference " + shown(image) + " is invalid: " + why);
  };
  if (image.empty()) return bad("empty");
  if (image.size() > 256) return bad("longer than 256 characters");
  for (unsigned char c : image) {
    if (!(std::isalnum(c) || c == '.' || c == '_' || c == '-' || c == '/' || c == ':' ||
          c == '@')) {
      return bad("character " + shown(std::string(1, static_cast<char>(c))) + " is not allowed");
    }
  }
  std::string_view name = image;
  std::string_view digest;
  if (const auto at = image.find('@'); at != std::string_view::npos) {
    name = image.substr(0, at);
    digest = image.substr(at + 1);
    const auto colon = digest.find(':');
    if (colon == std::string_view::npos || colon == 0 || colon + 1 >= digest.size()) {
      return bad("digest must be algorithm:hex");
    }
    for (unsigned char c : digest.substr(colon + 1)) {
      if (!std::isxdigit(c) || std::isupper(c)) return bad("digest must be lower-case hex");
    }
    if (digest.substr(0, colon) == "sha256" && digest.size() - colon - 1 != 64) {
      return bad("a sha256 digest has 64 hex digits");
    }
  }
  // A tag follows the last ':' after the last '/' (a ':' before it is a registry port).
  std::string_view repository = name;
  const auto slash = name.rfind('/');
  const auto colon = name.rfind(':');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    repository = name.substr(0, colon);
    const auto tag = name.substr(colon + 1);
    if (tag.empty() || tag.size() > 128 || tag[0] == '.' || tag[0] == '-')
      return bad("malformed tag");
  }
  if (repository.empty()) return bad("no repository");
  std::size_t start = 0;
  bool first = true;
  while (start <= repository.size()) {
    auto end = repository.find('/', start);
    if (end == std::string_view::npos) end = repository.size();
    const auto part = repository.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return bad("empty or relative path component");
    if (!std::isalnum(static_cast<unsigned char>(part.front())) ||
        !std::isalnum(static_cast<unsigned char>(part.back()))) {
      return bad("path components must start and end with a letter or digit");
    }
    // The first component may be a registry host (upper case and ports allowed); the rest of
    // the repository path is lower case, as the engine requires.
    const bool registry = first && end != repository.size() &&
                          (part.find('.') != std::string_view::npos ||
                           part.find(':') != std::string_view::npos || part == "localhost");
    if (!registry) {
      for (unsigned char c : part) {
        if (std::isupper(c) || c == ':') return bad("repository must be lower case");
      }
    }
    first = false;
    start = end + 1;
  }
  return {};
}

bool image_allowed(std::string_view image, const std::vector<std::string>& allowlist) {
  if (allowlist.empty()) return true;
  // The repository: the reference without its tag or digest.
  std::string_view repository = image.substr(0, image.find('@'));
  const auto slash = repository.rfind('/');
  const auto colon = repository.rfind(':');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    repository = repository.substr(0, colon);
  }
  for (const auto& entry : allowlist) {
    if (entry.empty()) continue;
    const char last = entry.back();
    if (last == '/' || last == ':' || last == '@') {
      // A prefix that ends on a boundary: "ghcr.io/org/" never matches "ghcr.io/org-evil/".
      if (image.substr(0, entry.size()) == entry && image.size() > entry.size()) return true;
    } else if (repository == entry) {
      // A bare repository allows any tag or digest of exactly that repository.
      return true;
    }
  }
  return false;
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
  if (auto err = check_key(key)) return err;
  sandbox_plan plan;
  auto& c = plan.create;
  auto& h = c.host;

  c.image = spec.image.empty() ? cfg.default_image : spec.image;
  if (auto err = check_image_reference(c.image)) return err;
  if (!image_allowed(c.image, cfg.image_allowlist)) {
    std::string allowed;
    for (const auto& e : cfg.image_allowlist) allowed += (allowed.empty() ? "" : ", ") + e;
    return make_error(corral_errc::policy_violation,
                      "image " + shown(c.image) + " is not in the allowlist (" + allowed + ")");
  }

  // Limits: zero means the strict default; nonsense is an error, excess a violation.
  auto limit = [&](std::string_view what, int64_t asked, int64_t fallback, int64_t minimum,
                   int64_t maximum, int64_t& out) -> caf::error {
    if (asked < 0)
      return make_error(corral_errc::invalid_request, std::string(what) + " must not be negative");
    out = asked == 0 ? fallback : asked;
    if (out < minimum) {
      return make_error(corral_errc::invalid_request,
                        std::string(what) + " of " + std::to_string(out) +
                            " is below the minimum of " + std::to_string(minimum));
    }
    if (out > maximum) {
      return make_error(corral_errc::policy_violation,
                        std::string(what) + " of " + std::to_string(out) +
                            " is over the limit of " + std::to_string(maximum));
    }
    return {};
  };
  if (auto err = limit("memory", spec.memory_bytes, default_memory_bytes, 6LL << 20,
                       cfg.max_memory_bytes, h.memory))
    return err;
  if (spec.memory_swap_bytes < 0) {
    return make_error(corral_errc::invalid_request, "memory-swap must not be negative");
  }
  h.memory_swap = spec.memory_swap_bytes == 0 ? h.memory : spec.memory_swap_bytes;
  if (h.memory_swap < h.memory) {
    return make_error(corral_errc::invalid_request,
                      "memory-swap must be at least memory (it includes it)");
  }
  if (h.memory_swap > 2 * cfg.max_memory_bytes) {
    return make_error(corral_errc::policy_violation,
                      "memory-swap of " + std::to_string(h.memory_swap) + " is over the limit of " +
                          std::to_string(2 * cfg.max_memory_bytes));
  }
  if (h.memory_swap > h.memory) plan.warnings.push_back("swap allowed (loosened)");
  if (auto err = limit("cpus (nano)", spec.nano_cpus, default_nano_cpus, 10'000'000,
                       std::max<int64_t>(cfg.max_nano_cpus, default_nano_cpus), h.nano_cpus))
    return err;
  if (auto err =
          limit("pids limit", spec.pids_limit, default_pids_limit, 8, cfg.max_pids, h.pids_limit))
    return err;

  // Network: none unless asked for; never the host's or another container's namespace.
  h.network_mode = spec.network_mode.empty() ? "none" : spec.network_mode;
  if (h.network_mode.size() > 128 ||
      !std::all_of(h.network_mode.begin(), h.network_mode.end(), [](unsigned char ch) {
        return std::isalnum(ch) || ch == '_' || ch == '.' || ch == '-' || ch == ':';
      })) {
    return make_error(corral_errc::invalid_request,
                      "network mode " + shown(h.network_mode) + " is not a network name");
  }
  if (h.network_mode == "host" || h.network_mode.rfind("container:", 0) == 0) {
    return make_error(
        corral_errc::policy_violation,
        "network mode " + shown(h.network_mode) + " would share a namespace outside the sandbox");
  }
  if (h.network_mode != "none")
    plan.warnings.push_back("network " + h.network_mode + " (loosened)");

  h.readonly_rootfs = !spec.writable_root;
  if (spec.writable_root) plan.warnings.push_back("writable root (loosened)");
  h.cap_drop = {"ALL"};
  for (const auto& cap : spec.cap_add) {
    std::string name = upper(cap);
    if (name.rfind("CAP_", 0) == 0) name = name.substr(4);
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](unsigned char ch) {
          return std::isupper(ch) || ch == '_';
        })) {
      return make_error(corral_errc::invalid_request,
                        "capability " + shown(cap) + " is not a capability name");
    }
    if (std::find(forbidden_caps.begin(), forbidden_caps.end(), name) != forbidden_caps.end()) {
      return make_error(corral_errc::policy_violation,
                        "capability " + name + " is never granted to a sandbox");
    }
    h.cap_add.push_back(name);
    plan.warnings.push_back("capability " + name + " added (loosened)");
  }
  h.security_opt = {"no-new-privileges"};
  h.init = true;  // docker-init reaps zombies and forwards signals

  plan.user = spec.user.empty() ? default_user : spec.user;
  if (!std::all_of(plan.user.begin(), plan.user.end(),
                   [](unsigned char ch) {
                     return std::isalnum(ch) || ch == '_' || ch == '.' || ch == '-' || ch == ':';
                   }) ||
      plan.user.front() == ':' || plan.user.back() == ':') {
    return make_error(corral_errc::invalid_request,
                      "user " + shown(plan.user) + " is invalid: use uid[:gid] or a name");
  }
  const std::string uid_part = plan.user.substr(0, plan.user.find(':'));
  const bool all_zero = !uid_part.empty() && uid_part.find_first_not_of('0') == std::string::npos;
  if (all_zero || uid_part == "root") {
    plan.warnings.push_back("runs as root (loosened)");
  }
  c.user = plan.user;
  const auto [uid, gid] = owner_ids(plan.user);

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
    if (auto err = check_workspace(spec.workspace, engine_socket)) return err;
    std::error_code ec;
    const auto real = fs::canonical(spec.workspace.host_path, ec).string();
    h.binds.push_back(real + ":" + spec.workspace.container_path +
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

  for (const auto& arg : spec.command) {
    if (has_control_or_nul(arg))
      return make_error(corral_errc::invalid_request, "command argument contains a NUL byte");
  }
  // The keep-alive: docker-init (PID 1) forwards the stop signal to it, so it ends at once.
  c.cmd = spec.command.empty() ? std::vector<std::string>{"sleep", "2147483647"} : spec.command;

  for (const auto& [k, v] : spec.labels) {
    if (k.empty() || k.rfind("corral.", 0) == 0) {
      return make_error(corral_errc::policy_violation,
                        "label " + shown(k) + " is reserved for corral");
    }
    c.labels[k] = v;
  }

  if (auto err = check_duration("exec timeout", spec.exec_timeout, cfg.max_exec_timeout))
    return err;
  if (auto err = check_duration("lifetime", spec.lifetime, std::chrono::hours(24 * 365)))
    return err;
  if (auto err = check_duration("idle limit", spec.idle_limit, std::chrono::hours(24 * 365)))
    return err;
  if (auto err = check_output_cap("stdout cap", spec.max_stdout, cfg.max_output_bytes)) return err;
  if (auto err = check_output_cap("stderr cap", spec.max_stderr, cfg.max_output_bytes)) return err;
  plan.exec_timeout =
      spec.exec_timeout.count() > 0 ? to_ms(spec.exec_timeout) : cfg.default_exec_timeout;
  plan.max_stdout = spec.max_stdout > 0 ? spec.max_stdout : cfg.default_max_output;
  plan.max_stderr = spec.max_stderr > 0 ? spec.max_stderr : cfg.default_max_output;
  plan.lifetime = spec.lifetime.count() > 0 ? to_ms(spec.lifetime) : cfg.default_lifetime;
  plan.idle_limit = spec.idle_limit.count() > 0 ? to_ms(spec.idle_limit) : cfg.default_idle_limit;
  plan.setup_command = spec.setup_command;

  plan.spec_hash = fingerprint(caf::deep_to_string(spec));
  c.labels[label_managed_by] = "corral";
  c.labels[label_runtime] = cfg.name;
  c.labels[label_key] = key;
  c.labels[label_created_at] = std::to_string(now_ms);
  c.labels[label_spec_hash] = plan.spec_hash;
  c.stop_signal = "SIGTERM";
  c.stop_timeout =
      static_cast<int>(std::chrono::duration_cast<std::chrono::seconds>(cfg.stop_grace).count());
  return plan;
}

caf::expected<exec_plan> plan_exec(const runtime_config& cfg, const sandbox_plan& sandbox,
                                   const messages::exec_request& request) {
  if (request.argv.empty()) return make_error(corral_errc::invalid_request, "exec: empty command");
  if (auto err = check_total("exec argv", request.argv, cfg.max_argv_bytes)) return err;
  if (auto err = check_total("exec env", request.env, cfg.max_env_bytes)) return err;
  if (request.stdin_data.size() > cfg.max_stdin_bytes) {
    return make_error(corral_errc::invalid_request,
                      "exec stdin of " + std::to_string(request.stdin_data.size()) +
                          " bytes is over the limit of " + std::to_string(cfg.max_stdin_bytes) +
                          " bytes");
  }
  for (const auto& arg : request.argv) {
    if (has_control_or_nul(arg))
      return make_error(corral_errc::invalid_request, "exec: argument contains a NUL byte");
  }
  if (auto err = check_duration("exec timeout", request.timeout, cfg.max_exec_timeout)) return err;
  if (auto err = check_output_cap("stdout cap", request.max_stdout, cfg.max_output_bytes))
    return err;
  if (auto err = check_output_cap("stderr cap", request.max_stderr, cfg.max_output_bytes))
    return err;
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
