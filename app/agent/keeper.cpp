// The keeper, in its own process: subreaper of one command, and the command's own last steps
// as root before its exec (capabilities cut, the sandbox user, no_new_privs). Apart from the
// agent's poll loop because none of it runs in the agent: it all runs after a fork.
//
// The keeper runs as root in its own session, so the command (another uid, no capabilities)
// can neither signal nor trace it; it kills by walking /proc for its descendants, never with
// kill(-1), which would reach other commands of the same uid.
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "app/agent/agent_state.hpp"
#include "messages/capabilities.hpp"

namespace corral::agent_detail {

uint64_t capability_mask(const std::vector<std::string>& names) {
  uint64_t mask = 0;
  for (const auto& n : names)
    for (std::size_t i = 0; i < messages::linux_capabilities.size(); ++i)
      if (n == messages::linux_capabilities[i]) mask |= uint64_t{1} << i;
  return mask;
}

namespace {

int last_capability() {
  int last = 40;
  if (FILE* f = std::fopen("/proc/sys/kernel/cap_last_cap", "r")) {
    if (std::fscanf(f, "%d", &last) != 1) last = 40;
    std::fclose(f);
  }
  return std::min(last, 63);
}

uint64_t oom_kills() {
  // cgroup v1 (this engine) then v2: the counter of the container's memory cgroup.
  for (const char* path :
       {"/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"}) {
    if (FILE* f = std::fopen(path, "r")) {
      char key[64];
      unsigned long long value = 0;
      uint64_t found = 0;
      while (std::fscanf(f, "%63s %llu", key, &value) == 2)
        if (std::strcmp(key, "oom_kill") == 0) found = value;
      std::fclose(f);
      return found;
    }
  }
  return 0;
}

// Every process below `root`: parent links from /proc, followed down from it.
std::vector<pid_t> descendants_of(pid_t root) {
  std::vector<std::pair<pid_t, pid_t>> links;  // (pid, ppid)
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d)) {
      char* end = nullptr;
      const long pid = std::strtol(e->d_name, &end, 10);
      if (*end != '\0' || pid <= 0) continue;
      char path[64];
      std::snprintf(path, sizeof path, "/proc/%ld/stat", pid);
      int fd = open(path, O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue;
      char buf[512];
      const ssize_t n = read(fd, buf, sizeof buf - 1);
      close(fd);
      if (n <= 0) continue;
      buf[n] = '\0';
      // "pid (comm) state ppid": comm may hold anything, so parse after the last ')'.
      const char* close_paren = std::strrchr(buf, ')');
      if (!close_paren) continue;
      char state = 0;
      long ppid = 0;
      if (std::sscanf(close_paren + 1, " %c %ld", &state, &ppid) != 2) continue;
      links.emplace_back(static_cast<pid_t>(pid), static_cast<pid_t>(ppid));
    }
    closedir(d);
  }
  std::vector<pid_t> found{root};
  for (std::size_t i = 0; i < found.size(); ++i)
    for (const auto& [pid, ppid] : links)
      if (ppid == found[i]) found.push_back(pid);
  found.erase(found.begin());
  return found;
}

[[noreturn]] void exec_failed(int report_fd, int err, int step) {
  const int32_t msg[2] = {err, step};
  (void)!write(report_fd, msg, sizeof msg);
  _exit(127);
}

// In the command's process, still root: cut the bounding set, become the sandbox user, lose
// every capability, forbid gaining any, then exec. Errors go to `report_fd` (close-on-exec).
[[noreturn]] void become_command(const spawn_spec& s, int report_fd) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig = 1; sig < NSIG; ++sig) signal(sig, SIG_DFL);
  // The sandbox's OOM killer should pick a command, never the agent.
  if (int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC); fd >= 0) {
    (void)!write(fd, "1000", 4);
    close(fd);
  }
  const int last = last_capability();
  for (int cap = 0; cap <= last; ++cap)
    if (!(s.keep_caps & (uint64_t{1} << cap)) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 &&
        errno != EINVAL)
      exec_failed(report_fd, errno, 1);
  const gid_t gid = s.gid;
  if (setgroups(1, &gid) != 0) exec_failed(report_fd, errno, 2);
  if (setresgid(s.gid, s.gid, s.gid) != 0) exec_failed(report_fd, errno, 2);
  if (setresuid(s.uid, s.uid, s.uid) != 0) exec_failed(report_fd, errno, 2);
  // A non-root uid lost its capabilities with setresuid; root (only if the policy allows a
  // root user) keeps none beyond those asked for.
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (s.uid == 0) {
    data[0].effective = data[0].permitted = static_cast<uint32_t>(s.keep_caps);
    data[1].effective = data[1].permitted = static_cast<uint32_t>(s.keep_caps >> 32);
  }
  if (syscall(SYS_capset, &header, data) != 0) exec_failed(report_fd, errno, 1);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) exec_failed(report_fd, errno, 1);
  if (!s.workdir.empty() && chdir(s.workdir.c_str()) != 0) exec_failed(report_fd, errno, 3);
  // On a remapped engine, group-writable by default: in a workspace the ACL's mask follows the
  // group bits, and the host owner's default entry (actors/workspace_access.hpp) keeps write
  // access to what the command makes only if the mask allows it (the group is a remapped gid
  // of no host group). Elsewhere the usual 022: the gid may be a host group's.
  umask(remapped_engine ? 002 : 022);

  std::vector<char*> argv;
  for (const auto& a : s.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (const auto& e : s.env) {
    envp.push_back(const_cast<char*>(e.c_str()));
    if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
  }
  envp.push_back(nullptr);
  const std::string& file = s.argv[0];
  if (file.find('/') != std::string::npos) {
    execve(file.c_str(), argv.data(), envp.data());
    exec_failed(report_fd, errno, 4);
  }
  // PATH search as execvp does it; EACCES anywhere wins over ENOENT (126 rather than 127).
  int err = ENOENT;
  std::size_t begin = 0;
  while (begin <= path.size()) {
    std::size_t colon = path.find(':', begin);
    if (colon == std::string::npos) colon = path.size();
    std::string dir = path.substr(begin, colon - begin);
    const std::string full = (dir.empty() ? "." : dir) + "/" + file;
    execve(full.c_str(), argv.data(), envp.data());
    if (errno == EACCES)
      err = EACCES;
    else if (errno != ENOENT && errno != ENOTDIR && err != EACCES)
      err = errno;
    begin = colon + 1;
  }
  exec_failed(report_fd, err, 4);
}

void write_report(int fd, keeper_report r) {
  (void)!write(fd, &r, sizeof r);
}

}  // namespace

// The keeper: subreaper of one command. Reports the command's spawn and end, then kills
// whatever of its tree is left and reaps it all before it exits.
[[noreturn]] void run_keeper(const spawn_spec& s, int in_fd, int out_fd, int err_fd,
                             int report_fd) {
  prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  setsid();
  sigset_t wanted;
  sigemptyset(&wanted);
  sigaddset(&wanted, SIGTERM);
  sigaddset(&wanted, SIGCHLD);
  sigprocmask(SIG_SETMASK, &wanted, nullptr);
  for (int sig = 1; sig < NSIG; ++sig)
    if (sig != SIGKILL && sig != SIGSTOP && sig != SIGTERM && sig != SIGCHLD) signal(sig, SIG_DFL);

  int exec_pipe[2];
  if (pipe2(exec_pipe, O_CLOEXEC) != 0) {
    write_report(report_fd, {2, errno, 0});
    _exit(1);
  }
  const uint64_t oom_before = oom_kills();
  const pid_t child = fork();
  if (child == 0) {
    close(exec_pipe[0]);
    close(report_fd);
    dup2(in_fd, 0);
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    for (int fd : {in_fd, out_fd, err_fd})
      if (fd > 2) close(fd);
    become_command(s, exec_pipe[1]);
  }
  close(exec_pipe[1]);
  for (int fd : {in_fd, out_fd, err_fd})
    if (fd > 2) close(fd);
  if (child < 0) {
    write_report(report_fd, {2, errno, 0});
    _exit(1);
  }
  int32_t failure[2] = {0, 0};
  ssize_t got;
  do got = read(exec_pipe[0], failure, sizeof failure);
  while (got < 0 && errno == EINTR);
  close(exec_pipe[0]);
  if (got == static_cast<ssize_t>(sizeof failure)) {
    waitpid(child, nullptr, 0);
    write_report(report_fd, {2, failure[0], failure[1]});
    _exit(0);
  }
  write_report(report_fd, {1, child, 0});

  bool ending = false;  // killing the tree: asked to, or the command ended
  for (;;) {
    int status = 0;
    pid_t reaped;
    while ((reaped = waitpid(-1, &status, WNOHANG)) > 0) {
      if (reaped == child) {
        const bool oom =
            WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && oom_kills() > oom_before;
        write_report(report_fd, {3, status, oom ? 1 : 0});
        ending = true;
      }
    }
    if (reaped < 0 && errno == ECHILD) break;
    if (ending) {
      for (pid_t p : descendants_of(getpid())) kill(p, SIGKILL);
      timespec pause{0, 2'000'000};
      sigtimedwait(&wanted, nullptr, &pause);
      continue;
    }
    timespec tick{1, 0};
    siginfo_t info;
    if (sigtimedwait(&wanted, &info, &tick) == SIGTERM) ending = true;
  }
  _exit(0);
}

}  // namespace corral::agent_detail
