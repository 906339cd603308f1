#include "actors/runtime_lock.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <set>
#include <string_view>
#include <utility>

namespace corral::actors {

namespace {

// FNV-1a: the same on every build and version, so nodes of two corral releases on one
// machine still meet in one file.
uint64_t fnv1a(std::string_view bytes) {
  uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

std::string engine_identity(const std::string& socket_path) {
  char resolved[PATH_MAX];
  if (::realpath(socket_path.c_str(), resolved) != nullptr) return resolved;
  // No socket now (the engine is down): the path as given still tells engines apart.
  return socket_path;
}

std::string system_error(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

// Whoever may write in the directory may hold any name: it must be ours alone.
std::string check_lock_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return system_error("mkdir " + dir);
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return system_error("stat " + dir);
  if (!S_ISDIR(st.st_mode)) return dir + " is not a directory";
  if (st.st_uid != ::geteuid() || (st.st_mode & 022) != 0) {
    return dir + " must belong to uid " + std::to_string(::geteuid()) +
           " and be writable by it alone";
  }
  return {};
}

// The pid holding a lock on the file now, if any (0: a process of another PID namespace).
std::optional<pid_t> holder_of(int fd) {
  struct flock probe {};
  probe.l_type = F_WRLCK;
  probe.l_whence = SEEK_SET;
  if (::fcntl(fd, F_GETLK, &probe) != 0 || probe.l_type == F_UNLCK) return std::nullopt;
  return probe.l_pid;
}

// Whether the locked file is still the one the directory names: a holder removes it as it
// lets go, and a lock on a removed file excludes nobody.
bool still_named(int fd, const std::string& path) {
  struct stat held {};
  struct stat named {};
  return ::fstat(fd, &held) == 0 && ::stat(path.c_str(), &named) == 0 &&
         held.st_dev == named.st_dev && held.st_ino == named.st_ino;
}

// Record locks belong to the process, so a second take in this process would succeed, and
// closing either descriptor would drop both. The paths this process holds refuse that
// instead; the mutex spans a whole take, so two threads cannot both pass the check.
std::mutex held_mutex;
std::set<std::string> held_paths;

}  // namespace

struct runtime_lock_access {
  static runtime_lock make(int fd, std::string path) { return runtime_lock(fd, std::move(path)); }
};

runtime_lock::runtime_lock(runtime_lock&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}

runtime_lock& runtime_lock::operator=(runtime_lock&& other) noexcept {
  if (this != &other) {
    release();
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

runtime_lock::~runtime_lock() {
  release();
}

void runtime_lock::release() noexcept {
  if (fd_ < 0) return;
  std::lock_guard<std::mutex> guard(held_mutex);
  held_paths.erase(path_);
  // Removed while still locked, so names that come and go leave nothing behind. A process
  // that opened it before gets the lock of a removed file: still_named() sends it back for
  // the new one. A holder killed with -9 leaves its file for the next to take.
  ::unlink(path_.c_str());
  ::close(fd_);
  fd_ = -1;
}

std::variant<runtime_lock, runtime_lock_refusal> lock_runtime_name(const std::string& socket_path,
                                                                   const std::string& name,
                                                                   const std::string& lock_dir) {
  runtime_lock_refusal refusal;
  refusal.reason = check_lock_dir(lock_dir);
  if (!refusal.reason.empty()) return refusal;
  const std::string engine = engine_identity(socket_path);
  char file[48];
  std::snprintf(file, sizeof file, "runtime-%016llx.lock",
                static_cast<unsigned long long>(fnv1a(engine + '\0' + name)));
  refusal.path = lock_dir + "/" + file;

  std::lock_guard<std::mutex> guard(held_mutex);
  if (held_paths.count(refusal.path) > 0) {
    refusal.held_elsewhere = true;
    refusal.holder = ::getpid();
    return refusal;
  }
  // Each attempt can lose a race with the holder: it may let go between our try and our
  // question who holds the lock, or remove the file (release) after we opened it.
  for (int attempt = 0; attempt < 3; ++attempt) {
    const int fd = ::open(refusal.path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
      refusal.reason = system_error("open " + refusal.path);
      return refusal;
    }
    struct flock whole {};  // l_start 0, l_len 0: the whole file, however long
    whole.l_type = F_WRLCK;
    whole.l_whence = SEEK_SET;
    if (::fcntl(fd, F_SETLK, &whole) == 0) {
      if (!still_named(fd, refusal.path)) {
        ::close(fd);
        continue;
      }
      // For an operator looking in the directory; a refusal asks the kernel, not this text.
      const std::string about =
          "pid " + std::to_string(::getpid()) + "\nname " + name + "\nengine " + engine + "\n";
      if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, about.data(), about.size(), 0) < 0) {
        // The lock holds without its note.
      }
      held_paths.insert(refusal.path);
      return runtime_lock_access::make(fd, refusal.path);
    }
    if (errno != EACCES && errno != EAGAIN) {
      refusal.reason = system_error("lock " + refusal.path);
      ::close(fd);
      return refusal;
    }
    const auto holder = holder_of(fd);
    ::close(fd);
    if (holder) {
      refusal.held_elsewhere = true;
      refusal.holder = *holder;
      return refusal;
    }
  }
  refusal.held_elsewhere = true;  // taken again each time it was free: held, by whom unknown
  return refusal;
}

}  // namespace corral::actors
