// The workspace: a host directory a sandbox may mount, checked at plan time (by its resolved
// path against the system's and the engine's directories and the policy's roots, then walked
// as given, without following links) and verified after the start (the mount the engine made
// is the directory that was checked). Apart from policy.cpp because it is the one check that
// looks at the host's file system.
#include "actors/policy.hpp"

#include "actors/policy_detail.hpp"
#include "actors/workspace_access.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>

#include "messages/errors.hpp"

namespace corral::actors {

namespace fs = std::filesystem;
using messages::corral_errc;
using messages::make_error;
using policy_detail::shown;
using policy_detail::violation;

namespace policy_detail {

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

}  // namespace policy_detail

namespace {

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

}  // namespace

namespace policy_detail {

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

}  // namespace policy_detail

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

}  // namespace corral::actors
