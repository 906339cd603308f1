#include "actors/policy.hpp"
#include "actors/egress_rules.hpp"
#include "actors/workspace_access.hpp"

#include "actors/spec_record.hpp"
#include "messages/agent_protocol.hpp"

#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <optional>
#include <type_traits>

#include <caf/deep_to_string.hpp>

#include "actors/units.hpp"
#include "messages/errors.hpp"

namespace corral::actors {

namespace fs = std::filesystem;
using messages::corral_errc;
using messages::make_error;

namespace {

// A request beyond the policy: names what was refused and the key that would allow it.
caf::error violation(const std::string& what, std::string_view key) {
  return make_error(corral_errc::policy_violation,
                    what + " (policy key " + std::string(key) + " would allow it)");
}

std::string upper(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return out;
}

std::string shown(std::string_view s) {
  // Invalid UTF-8 is shown escaped: an error text never carries the bytes it refuses.
  const bool escape_high = !valid_utf8(s);
  std::string out = "'";
  for (unsigned char c : s.substr(0, 80)) {
    if (c < 0x20 || c == 0x7f || (escape_high && c >= 0x80)) {
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

// `inner` is `outer` or below it, component by component.
bool within(const fs::path& inner, const fs::path& outer) {
  auto o = outer.begin(), i = inner.begin();
  for (; o != outer.end(); ++o, ++i) {
    if (o->empty()) continue;  // a trailing separator
    if (i == inner.end() || *o != *i) return false;
  }
  return true;
}

// Host trees that are never a workspace, nor anything inside them (canonical paths: /bin,
// /sbin and /lib* are links into /usr on a merged-/usr system and resolve there).
constexpr std::array<std::string_view, 15> system_trees = {
    "/etc",  "/usr", "/bin",  "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
    "/boot", "/dev", "/proc", "/sys",  "/run", "/var",   "/root"};
// Below a system tree, yet fine: temporary space (still subject to the ownership rules).
constexpr std::array<std::string_view, 1> system_tree_exceptions = {"/var/tmp"};
// Never a workspace themselves: they hold everyone's directories (what is below is fine).
constexpr std::array<std::string_view, 3> shared_roots = {"/home", "/opt", "/srv"};

// Host directories that are never a workspace: the system's own, and the engine's state.
caf::error check_system_directory(const runtime_config& cfg, const fs::path& real,
                                  const std::string& asked) {
  auto refuse = [&](const std::string& why) {
    return make_error(corral_errc::policy_violation, "workspace " + shown(asked) + " " + why);
  };
  // The engine's and containerd's state: neither inside nor any directory above it.
  std::error_code ec;
  std::vector<fs::path> engine_state = {"/var/lib/containerd", "/run/containerd",
                                        "/var/lib/docker"};
  if (!cfg.engine_data_root.empty()) {
    auto root = fs::weakly_canonical(cfg.engine_data_root, ec);
    engine_state.push_back(ec ? fs::path(cfg.engine_data_root) : root);
  }
  for (const auto& dir : engine_state) {
    if (within(real, dir) || within(dir, real)) {
      return refuse("would expose the engine's state in " + dir.string() +
                    " (engine data root and containerd directories are never workspaces)");
    }
  }
  for (auto dir : system_trees) {
    if (!within(real, fs::path(dir))) continue;
    const bool excepted =
        std::any_of(system_tree_exceptions.begin(), system_tree_exceptions.end(),
                    [&](std::string_view ok) { return within(real, fs::path(ok)); });
    if (excepted) continue;
    return refuse("is inside the host's " + std::string(dir) + " (resolved to " + real.string() +
                  "; system directories are never workspaces)");
  }
  for (auto dir : shared_roots) {
    if (real == fs::path(dir))
      return refuse("is a host system directory (" + std::string(dir) + ")");
  }
  return {};
}

// Walks the path as given, one component at a time, without following links: none may be a
// link (it could be swapped between this check and the engine's mount), and none may be
// writable by anyone but root or its owner, except a sticky directory (/tmp) whose next
// component belongs to us, root or the sticky directory's owner (nobody else may rename it).
// An ACL named by the engine's remapped range (corral's own grant to a sandbox's user,
// actors/workspace_access.hpp) does not make a component writable by others.
bool writable_by_others(const std::string& path, const struct stat& st, uint32_t mapped_first) {
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) == 0) return false;
  if ((st.st_mode & S_IWOTH) != 0 || !has_extended_acl(path)) return true;
  const auto by_acl =
      acl_writable_by_others(path, st.st_uid, mapped_first, mapped_first != 0 ? 65536 : 0);
  return !by_acl || *by_acl;
}

caf::expected<workspace_identity> walk_workspace(const std::string& asked, uint32_t mapped_first) {
  auto refuse = [&](corral_errc code, const std::string& why) {
    return make_error(code, "workspace " + shown(asked) + ": " + why);
  };
  std::vector<std::string> prefixes = {"/"};
  std::size_t start = 0;
  while (start < asked.size()) {
    auto end = asked.find('/', start);
    if (end == std::string::npos) end = asked.size();
    const std::string_view part = std::string_view(asked).substr(start, end - start);
    if (part == "." || part == "..") {
      return refuse(corral_errc::invalid_request, "give the path without '.' or '..' components");
    }
    if (!part.empty()) prefixes.push_back(asked.substr(0, end));
    start = end + 1;
  }
  std::vector<struct stat> info(prefixes.size());
  for (std::size_t i = 0; i < prefixes.size(); ++i) {
    if (::lstat(prefixes[i].c_str(), &info[i]) != 0) {
      return refuse(corral_errc::invalid_request,
                    "cannot inspect " + shown(prefixes[i]) + ": " + std::strerror(errno));
    }
    if (S_ISLNK(info[i].st_mode)) {
      return refuse(corral_errc::policy_violation,
                    "component " + shown(prefixes[i]) +
                        " is a symbolic link (it could be swapped before the mount; give the "
                        "real path)");
    }
  }
  const uid_t caller = ::geteuid();
  for (std::size_t i = 0; i < prefixes.size(); ++i) {
    const auto& st = info[i];
    if (!writable_by_others(prefixes[i], st, mapped_first)) continue;
    const bool last = i + 1 == prefixes.size();
    const bool sticky_above_ours = (st.st_mode & S_ISVTX) != 0 && !last &&
                                   (info[i + 1].st_uid == caller || info[i + 1].st_uid == 0 ||
                                    info[i + 1].st_uid == st.st_uid);
    if (sticky_above_ours) continue;
    return refuse(corral_errc::policy_violation,
                  "component " + shown(prefixes[i]) +
                      " is writable by its group or others (only root or its owner may be able "
                      "to change a workspace path)");
  }
  const auto& dir = info.back();
  if (!S_ISDIR(dir.st_mode)) return refuse(corral_errc::invalid_request, "is not a directory");
  workspace_identity id;
  id.device = static_cast<uint64_t>(dir.st_dev);
  id.inode = static_cast<uint64_t>(dir.st_ino);
  return id;
}

// The workspace roots of the policy: the resolved path must be below one (component by
// component, roots resolved too), and a read-write mount below a writable one.
caf::error check_workspace_roots(const policy& p, const fs::path& real,
                                 const messages::workspace_mount& ws) {
  std::string roots;
  std::optional<std::size_t> read_only_root;
  for (std::size_t i = 0; i < p.workspace_roots.size(); ++i) {
    const auto& root = p.workspace_roots[i];
    roots += (roots.empty() ? "" : ", ") + root.path;
    std::error_code ec;
    auto resolved = fs::weakly_canonical(root.path, ec);
    if (ec || !within(real, resolved)) continue;
    if (root.writable || ws.access != messages::access_mode::rw) return {};
    read_only_root = i;
  }
  if (read_only_root) {
    return violation("workspace " + shown(ws.host_path) + " is read-write, but its root " +
                         p.workspace_roots[*read_only_root].path + " allows read-only (:ro) only",
                     "workspace_roots[" + std::to_string(*read_only_root) + "].writable");
  }
  return violation("workspace " + shown(ws.host_path) + " (resolved to " + real.string() +
                       ") is outside every workspace root (" + roots + ")",
                   "workspace_roots");
}

caf::expected<workspace_identity> check_workspace(const runtime_config& cfg,
                                                  const messages::workspace_mount& ws,
                                                  const std::string& engine_socket) {
  if (ws.host_path.empty() || !fs::path(ws.host_path).is_absolute()) {
    return make_error(corral_errc::invalid_request,
                      "workspace " + shown(ws.host_path) + " must be an absolute host path");
  }
  if (ws.host_path.find(':') != std::string::npos ||
      ws.container_path.find(':') != std::string::npos) {
    return make_error(corral_errc::invalid_request, "workspace paths must not contain ':'");
  }
  // What the path names once every link is followed: the deny rules apply to that, even when
  // it does not exist (a missing /root/.ssh is still refused as /root).
  std::error_code ec;
  const fs::path real = fs::weakly_canonical(ws.host_path, ec);
  if (ec) {
    return make_error(corral_errc::invalid_request,
                      "workspace " + shown(ws.host_path) + " cannot be resolved: " + ec.message());
  }
  if (real == "/") {
    return make_error(corral_errc::policy_violation,
                      "workspace must not be the host's root directory");
  }
  // Neither the engine's socket, nor anything that contains it, nor anything beside it in its
  // directory may be mounted: that would hand the sandbox the engine.
  for (const std::string& socket :
       {engine_socket, std::string("/var/run/docker.sock"), std::string("/run/docker.sock")}) {
    if (socket.empty()) continue;
    const fs::path socket_path = fs::weakly_canonical(socket, ec);
    if (ec) continue;
    if (within(socket_path, real) || within(real, socket_path.parent_path())) {
      return make_error(corral_errc::policy_violation, "workspace " + shown(ws.host_path) +
                                                           " would expose the Docker socket " +
                                                           socket_path.string());
    }
  }
  if (auto err = check_system_directory(cfg, real, ws.host_path)) return err;
  if (auto err = check_workspace_roots(cfg.policy, real, ws)) return err;
  if (!fs::exists(real, ec)) {
    return make_error(corral_errc::invalid_request,
                      "workspace " + shown(ws.host_path) + " does not exist");
  }
  if (!fs::is_directory(real, ec)) {
    return make_error(corral_errc::invalid_request,
                      "workspace " + shown(ws.host_path) + " is not a directory");
  }
  auto id = walk_workspace(ws.host_path, cfg.agent_root_uid);
  if (!id) return id;
  if (auto err = check_container_path("workspace container path", ws.container_path)) return err;
  id->host_path = real.string();
  id->container_path = ws.container_path;
  id->writable = ws.access == messages::access_mode::rw;
  return id;
}

template <class Strings>
caf::error check_argv_text(std::string_view what, const Strings& argv,
                           text_kind kind = text_kind::multi_line) {
  for (std::size_t i = 0; i < argv.size(); ++i) {
    if (auto err = check_text(std::string(what) + "[" + std::to_string(i) + "]", argv[i], kind))
      return err;
  }
  return {};
}

caf::error check_env_text(std::string_view what, const std::map<std::string, std::string>& env) {
  for (const auto& [k, v] : env) {
    if (auto err = check_text(std::string(what) + " key", k, text_kind::single_line)) return err;
    if (auto err = check_text(std::string(what) + " value of " + k, v, text_kind::multi_line))
      return err;
  }
  return {};
}

// Every string of a sandbox request: valid UTF-8, and control characters only where a
// multi-line script needs them.
caf::error check_spec_text(const std::string& key, const messages::sandbox_spec& spec) {
  using enum text_kind;
  if (auto err = check_text("sandbox key", key, single_line)) return err;
  if (auto err = check_text("image", spec.image, single_line)) return err;
  if (auto err = check_text("workspace", spec.workspace.host_path, single_line)) return err;
  if (auto err = check_text("workspace container path", spec.workspace.container_path, single_line))
    return err;
  if (auto err = check_text("workdir", spec.workdir, single_line)) return err;
  if (auto err = check_text("user", spec.user, single_line)) return err;
  if (auto err = check_text("network mode", spec.network_mode, single_line)) return err;
  if (auto err = check_argv_text("command", spec.command)) return err;
  if (auto err = check_argv_text("setup command", spec.setup_command)) return err;
  if (auto err = check_env_text("env", spec.env)) return err;
  for (const auto& [k, v] : spec.labels) {
    if (auto err = check_text("label key", k, single_line)) return err;
    if (auto err = check_text("label value of " + k, v, multi_line)) return err;
  }
  if (auto err = check_argv_text("capability", spec.cap_add, single_line)) return err;
  if (auto err = check_argv_text("allow-host", spec.allow_hosts, single_line)) return err;
  for (std::size_t i = 0; i < spec.tmpfs.size(); ++i) {
    const auto n = "[" + std::to_string(i) + "]";
    if (auto err = check_text("tmpfs path" + n, spec.tmpfs[i].path, single_line)) return err;
    if (auto err = check_text("tmpfs options" + n, spec.tmpfs[i].options, single_line)) return err;
  }
  return {};
}

caf::error check_exec_text(const messages::exec_request& request) {
  if (auto err = check_argv_text("exec argv", request.argv)) return err;
  if (auto err = check_env_text("exec env", request.env)) return err;
  return check_text("exec workdir", request.workdir, text_kind::single_line);
}

constexpr std::array<std::string_view, 14> forbidden_caps = {
    "SYS_ADMIN",    "SYS_MODULE", "SYS_RAWIO",       "SYS_PTRACE", "SYS_BOOT", "MAC_ADMIN",
    "MAC_OVERRIDE", "NET_ADMIN",  "DAC_READ_SEARCH", "SYS_TIME",   "SYSLOG",   "BPF",
    "PERFMON",      "ALL"};

}  // namespace

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t n = 0;
    uint32_t cp = 0;
    uint32_t lowest = 0;
    if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F, lowest = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F, lowest = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07, lowest = 0x10000;
    } else {
      return false;  // a continuation byte first, or 0xF8..0xFF
    }
    if (s.size() - i <= n) return false;  // truncated sequence
    for (std::size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < lowest || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

caf::error check_text(std::string_view field, std::string_view s, text_kind kind) {
  // Multi-line values (argv elements, env and label values) are not echoed: credentials live
  // there. Paths, keys and names are, escaped.
  const std::string named =
      std::string(field) + (kind == text_kind::single_line ? " " + shown(s) : std::string());
  if (!valid_utf8(s)) {
    return make_error(corral_errc::invalid_request, named + " is not valid UTF-8");
  }
  for (unsigned char c : s) {
    if (c >= 0x20 && c != 0x7f) continue;
    if (kind == text_kind::multi_line && (c == '\t' || c == '\n' || c == '\r')) continue;
    if (c == 0) return make_error(corral_errc::invalid_request, named + " contains a NUL byte");
    static constexpr char hex[] = "0123456789abcdef";
    const std::string code = {'\\', 'x', hex[c >> 4], hex[c & 0xF]};
    return make_error(
        corral_errc::invalid_request,
        named + " contains the control character " + code +
            (kind == text_kind::multi_line ? " (only tab, LF and CR are allowed)" : ""));
  }
  return {};
}

caf::expected<std::string> check_user(const user_policy& users, std::string_view user) {
  auto invalid = [&] {
    return make_error(corral_errc::invalid_request,
                      "user " + shown(user) +
                          " is invalid: use a numeric uid[:gid] (a name could resolve to root "
                          "in the image)");
  };
  const auto colon = user.find(':');
  const std::string_view uid_text = user.substr(0, colon);
  const std::string_view gid_text =
      colon == std::string_view::npos ? uid_text : user.substr(colon + 1);
  auto number = [](std::string_view text, uint32_t& out) {
    if (text.empty() || text.size() > 10) return false;
    if (!std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); }))
      return false;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc{} && end == text.data() + text.size();
  };
  uint32_t uid = 0;
  uint32_t gid = 0;
  if (!number(uid_text, uid) || !number(gid_text, gid)) return invalid();
  std::string normal = std::to_string(uid) + ":" + std::to_string(gid);
  auto check = [&](const char* what, uint32_t id, const id_range& range,
                   const char* key) -> caf::error {
    if (id == 0) {
      if (users.allow_root) return {};
      return violation("user " + shown(user) + ": " + what + " 0 (root" +
                           (std::string_view(what) == "gid" ? "'s group" : "") + ") is refused",
                       "users.allow_root");
    }
    if (id < range.min || id > range.max) {
      return violation("user " + shown(user) + ": " + what + " " + std::to_string(id) +
                           " is outside the allowed range " + std::to_string(range.min) + "-" +
                           std::to_string(range.max),
                       key);
    }
    return {};
  };
  if (auto err = check("uid", uid, users.uids, "users.uids")) return err;
  if (auto err = check("gid", gid, users.gids, "users.gids")) return err;
  return normal;
}

caf::error verify_workspace_mount(const workspace_identity& checked, int64_t pid) {
  auto refuse = [&](const std::string& why) {
    return make_error(corral_errc::policy_violation, "workspace " + checked.host_path +
                                                         " could not be verified at " +
                                                         checked.container_path + ": " + why);
  };
  if (pid <= 0) return refuse("the engine reports no process for the sandbox");
  const std::string seen = "/proc/" + std::to_string(pid) + "/root" + checked.container_path;
  struct stat st {};
  if (::stat(seen.c_str(), &st) != 0) return refuse("stat " + seen + ": " + std::strerror(errno));
  if (static_cast<uint64_t>(st.st_dev) != checked.device ||
      static_cast<uint64_t>(st.st_ino) != checked.inode) {
    return make_error(corral_errc::policy_violation,
                      "workspace " + checked.host_path +
                          " changed between the check and the start: the engine mounted "
                          "another directory (device " +
                          std::to_string(st.st_dev) + ", inode " + std::to_string(st.st_ino) +
                          ", checked device " + std::to_string(checked.device) + ", inode " +
                          std::to_string(checked.inode) + ")");
  }
  return {};
}

caf::error check_principal_name(std::string_view name) {
  const bool ok = !name.empty() && name.size() <= 64 &&
                  std::isalnum(static_cast<unsigned char>(name[0])) &&
                  std::all_of(name.begin(), name.end(), [](unsigned char c) {
                    return std::isalnum(c) || c == '_' || c == '.' || c == '-' || c == '@';
                  });
  if (!ok) {
    return make_error(corral_errc::invalid_request,
                      "principal " + shown(name) +
                          " is invalid: 1-64 characters of letters, digits, '_', '.', '-', '@', "
                          "starting with a letter or digit");
  }
  return {};
}

caf::error check_key(std::string_view key) {
  auto plain_key_ok = [](std::string_view k) {
    return !k.empty() && k.size() <= 128 && std::isalnum(static_cast<unsigned char>(k[0])) &&
           std::all_of(k.begin(), k.end(), [](unsigned char c) {
             return std::isalnum(c) || c == '_' || c == '.' || c == '-';
           });
  };
  // A node's keys are per principal: "alice/session-42" (the facade adds the prefix).
  bool ok = plain_key_ok(key);
  if (const auto slash = key.find('/'); !ok && slash != std::string_view::npos) {
    ok = !check_principal_name(key.substr(0, slash)) && plain_key_ok(key.substr(slash + 1));
  }
  if (!ok) {
    return make_error(corral_errc::invalid_request,
                      "sandbox key " + shown(key) +
                          " is invalid: 1-128 characters of letters, digits, '_', '.', '-', "
                          "starting with a letter or digit");
  }
  return {};
}

caf::error check_image_reference(std::string_view image) {
  auto bad = [&](const std::string& why) {
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
  // The repository: the reference without its tag or digest.
  std::string_view repository = image.substr(0, image.find('@'));
  const auto slash = repository.rfind('/');
  const auto colon = repository.rfind(':');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    repository = repository.substr(0, colon);
  }
  for (const auto& entry : allowlist) {
    if (entry.empty()) continue;
    if (entry == "*") return true;
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

bool is_never_granted_capability(std::string_view name) {
  return std::find(forbidden_caps.begin(), forbidden_caps.end(), name) != forbidden_caps.end();
}

std::string check_egress_pattern(std::string& s) {
  s = normalize_host(s);
  unsigned char buf[16];
  if (inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1)
    return {};
  std::string_view name = s;
  if (name.rfind("*.", 0) == 0) name.remove_prefix(2);
  // The proxy's own test of a name (actors/egress_rules.hpp): what passes here, it can match.
  if (!valid_dns_name(name) || name.find('*') != std::string_view::npos)
    return "\"" + s + "\" is not a host name (like pypi.org or *.pythonhosted.org)";
  return {};
}

bool egress_pattern_covers(std::string_view allowed, std::string_view requested) {
  if (allowed == requested) return true;
  if (allowed.rfind("*.", 0) != 0) return false;
  const auto suffix = allowed.substr(1);  // ".d"
  auto name = requested;
  if (name.rfind("*.", 0) == 0) name.remove_prefix(2);
  return name.size() > suffix.size() && name.substr(name.size() - suffix.size()) == suffix;
}

std::vector<std::string> egress_env() {
  const std::string proxy = "http://127.0.0.1:3128";
  const std::string bundle = std::string(agent_protocol::run_dir_inside) + "/ca.pem";
  return {"HTTP_PROXY=" + proxy,           "HTTPS_PROXY=" + proxy,
          "http_proxy=" + proxy,           "https_proxy=" + proxy,
          "NO_PROXY=localhost,127.0.0.1",  "no_proxy=localhost,127.0.0.1",
          "SSL_CERT_FILE=" + bundle,       "REQUESTS_CA_BUNDLE=" + bundle,
          "NODE_EXTRA_CA_CERTS=" + bundle, "CURL_CA_BUNDLE=" + bundle};
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
    std::string name = upper(cap);
    if (name.rfind("CAP_", 0) == 0) name = name.substr(4);
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](unsigned char ch) {
          return std::isupper(ch) || ch == '_';
        })) {
      return make_error(corral_errc::invalid_request,
                        "capability " + shown(cap) + " is not a capability name");
    }
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

void use_agent(sandbox_plan& plan, const runtime_config& cfg, const std::string& sandbox_id) {
  auto& c = plan.create;
  auto& h = c.host;
  plan.agent = true;
  plan.sandbox_id = sandbox_id;
  plan.run_dir = cfg.agent_run_root + "/" + sandbox_id;
  plan.sandbox_env = std::move(c.env);
  c.env.clear();
  if (!plan.egress_hosts.empty())
    for (auto& kv : egress_env()) plan.sandbox_env.push_back(std::move(kv));
  // The keep-alive is the agent itself; a `command` of the spec is its first command.
  const bool keep_alive = c.cmd == std::vector<std::string>{"sleep", "2147483647"};
  plan.main_command = keep_alive ? std::vector<std::string>{} : std::move(c.cmd);
  c.entrypoint = {agent_protocol::agent_path_inside};
  c.cmd = {"--socket",
           std::string(agent_protocol::run_dir_inside) + "/" + agent_protocol::socket_name};
  c.user = "0:0";
  h.init = false;
  plan.command_caps = h.cap_add;
  for (const char* cap : {"SETUID", "SETGID", "KILL", "SETPCAP"})
    if (std::find(h.cap_add.begin(), h.cap_add.end(), cap) == h.cap_add.end())
      h.cap_add.push_back(cap);
  // A negative OomScoreAdj for the agent fails the container's start on an engine without
  // CAP_SYS_RESOURCE (this one): each command raises its own to 1000 instead (app/agent/).
  h.binds.push_back(cfg.agent_path + ":" + agent_protocol::agent_path_inside + ":ro");
  h.binds.push_back(plan.run_dir + ":" + agent_protocol::run_dir_inside + ":rw");
  c.labels[label_sandbox_id] = sandbox_id;
}

bool is_claim_label(std::string_view label) {
  for (const char* l : {label_key, label_principal, label_spec, label_created_at, label_deadline,
                        label_spec_hash, label_claim, label_sandbox_id})
    if (label == l) return true;
  return false;
}

std::string pool_hash(const sandbox_plan& plan) {
  if (!plan.workspace.container_path.empty()) return {};
  const auto& c = plan.create;
  const auto& h = c.host;
  std::string text;
  auto add = [&text](std::string_view field, std::string_view value) {
    text.append(field).append("=").append(std::to_string(value.size())).append(":");
    text.append(value).append("\n");
  };
  auto add_list = [&add](std::string_view field, const std::vector<std::string>& values) {
    for (const auto& v : values) add(field, v);
  };
  add("image", c.image);
  add_list("entrypoint", c.entrypoint);
  add("user", c.user);
  add("workdir", c.working_dir);
  for (const auto& [k, v] : c.labels)
    if (!is_claim_label(k)) add("label", k + "=" + v);
  add("stop", c.stop_signal + "/" + std::to_string(c.stop_timeout));
  add("tty", std::to_string(c.tty) + std::to_string(c.open_stdin));
  add_list("bind", h.binds);
  for (const auto& [path, options] : h.tmpfs) add("tmpfs", path + ":" + options);
  add("limits", std::to_string(h.memory) + "/" + std::to_string(h.memory_swap) + "/" +
                    std::to_string(h.nano_cpus) + "/" + std::to_string(h.cpu_shares) + "/" +
                    std::to_string(h.pids_limit));
  add_list("cap_drop", h.cap_drop);
  add_list("cap_add", h.cap_add);
  add_list("security", h.security_opt);
  add("flags", std::to_string(h.readonly_rootfs) + std::to_string(h.init) +
                   std::to_string(h.auto_remove) + "/" + std::to_string(h.oom_score_adj));
  add("network", h.network_mode);
  return sha256_hex(text, 8);
}

std::string pool_member_name(const std::string& sandbox_id) {
  return "corral_pool-" + sandbox_id;
}

bool is_pool_member_name(std::string_view name) {
  if (!name.empty() && name.front() == '/') name.remove_prefix(1);  // as the engine lists it
  return name.rfind("corral_pool-", 0) == 0;
}

std::string unclaimed_name(const std::string& sandbox_id) {
  return "corral_new-" + sandbox_id;
}

bool is_unclaimed_name(std::string_view name) {
  if (!name.empty() && name.front() == '/') name.remove_prefix(1);
  return name.rfind("corral_new-", 0) == 0;
}

// SHA-256, because the readable part maps '/' and '@' away and is cut short: only the digest
// keeps two keys' names apart.
std::string claim_name(const std::string& runtime, const std::string& key) {
  std::string readable = key.substr(0, 40);
  std::replace(readable.begin(), readable.end(), '/', '.');
  std::replace(readable.begin(), readable.end(), '@', '_');
  return "corral-" + readable + "-" + sha256_hex(runtime + "\n" + key, 10);
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
