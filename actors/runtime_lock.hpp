// A runtime name held exclusively on one engine, for as long as the process lives.
//
// A runtime adopts, prunes and removes every container labelled with its name: two runtimes
// of one name on one engine would take each other's sandboxes. `corral node` therefore holds
// its name with this lock; an embedding program that wants the same guarantee takes it
// before spawn_supervisor. Embedded CLI processes share their name on purpose (they
// cooperate through the engine) and take no lock.
//
// The lock is a POSIX record lock on a file in a directory only root can enter (default
// /run/corral, made 0700), named from a hash of the engine's socket path and the name. The
// kernel drops it when the process dies, however it dies: a node killed with -9 can start
// again at once. Unlike flock, a record lock is not inherited by a forked child, and the
// kernel names its holder (F_GETLK), so a refusal says which process holds the name.
#pragma once

#include <sys/types.h>

#include <string>
#include <variant>

namespace corral::actors {

inline constexpr const char* default_lock_dir = "/run/corral";

// Holds one (engine, name) lock until destroyed. Move-only.
class runtime_lock {
 public:
  runtime_lock(runtime_lock&& other) noexcept;
  runtime_lock& operator=(runtime_lock&& other) noexcept;
  runtime_lock(const runtime_lock&) = delete;
  runtime_lock& operator=(const runtime_lock&) = delete;
  ~runtime_lock();

  const std::string& path() const noexcept { return path_; }

 private:
  friend struct runtime_lock_access;
  runtime_lock(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  void release() noexcept;

  int fd_ = -1;
  std::string path_;
};

// Why the lock was not taken.
struct runtime_lock_refusal {
  // Another live process holds the name on this engine (holder: its pid, 0 when it lives in
  // another PID namespace); else the lock itself could not be taken (`reason` says why).
  bool held_elsewhere = false;
  pid_t holder = 0;
  std::string path;    // the lock file
  std::string reason;  // "mkdir /run/corral: Permission denied", when not held_elsewhere
};

// Takes the name on the engine at `socket_path` (compared after resolving symbolic links,
// so /var/run/docker.sock and /run/docker.sock are one engine). A second take of a name this
// process holds already is refused as well, with this process as the holder.
std::variant<runtime_lock, runtime_lock_refusal> lock_runtime_name(
    const std::string& socket_path, const std::string& name,
    const std::string& lock_dir = default_lock_dir);

}  // namespace corral::actors
