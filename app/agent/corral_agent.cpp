// corral-agent: PID 1 of every sandbox. It listens on a unix socket in the sandbox's run
// directory (bind-mounted from the host, mode 0700, owned by the sandbox's root, so no command
// can reach it), runs commands for corral and enforces their limits itself, so they hold when
// no corral process runs.
//
// One thread, one poll loop. Each command runs under its own keeper:
//
//   agent (PID 1, root with SETUID SETGID KILL SETPCAP)
//     └─ keeper (root, subreaper, own session; reports over a pipe)
//          └─ command (sandbox uid/gid, no capabilities, bounding set cut, no_new_privs)
//               └─ whatever it forks: every orphan comes back to the keeper
//
// A command's life, as the agent sees it:
//
//   start frame ──> spawning ──(keeper: spawned pid)──> running ──(keeper: main exited)──>
//   draining (the keeper kills what is left of the tree) ──(keeper gone, pipes at EOF)──> ended
//                 └─(keeper: exec failed)─────────────────────────────────────────────────┘
//   deadline or signal frame: SIGTERM to the keeper, which kills the whole tree at once.
//
// The keeper runs as root in its own session, so the command (another uid, no capabilities)
// can neither signal nor trace it; it kills by walking /proc for its descendants, never with
// kill(-1), which would reach other commands of the same uid.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "messages/agent_protocol.hpp"

extern char** environ;

namespace {

namespace proto = corral::agent_protocol;

int64_t mono_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The engine maps the sandbox's uids to other host uids (user-namespace remapping): read once
// at start, before any command.
bool remapped_engine = false;

void log_line(const std::string& text) {
  const std::string line = "corral-agent: " + text + "\n";
  (void)!write(2, line.data(), line.size());
}

void set_nonblocking(int fd) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

// -- capabilities --------------------------------------------------------------------------

const char* const capability_names[] = {"CHOWN",
                                        "DAC_OVERRIDE",
                                        "DAC_READ_SEARCH",
                                        "FOWNER",
                                        "FSETID",
                                        "KILL",
                                        "SETGID",
                                        "SETUID",
                                        "SETPCAP",
                                        "LINUX_IMMUTABLE",
                                        "NET_BIND_SERVICE",
                                        "NET_BROADCAST",
                                        "NET_ADMIN",
                                        "NET_RAW",
                                        "IPC_LOCK",
                                        "IPC_OWNER",
                                        "SYS_MODULE",
                                        "SYS_RAWIO",
                                        "SYS_CHROOT",
                                        "SYS_PTRACE",
                                        "SYS_PACCT",
                                        "SYS_ADMIN",
                                        "SYS_BOOT",
                                        "SYS_NICE",
                                        "SYS_RESOURCE",
                                        "SYS_TIME",
                                        "SYS_TTY_CONFIG",
                                        "MKNOD",
                                        "LEASE",
                                        "AUDIT_WRITE",
                                        "AUDIT_CONTROL",
                                        "SETFCAP",
                                        "MAC_OVERRIDE",
                                        "MAC_ADMIN",
                                        "SYSLOG",
                                        "WAKE_ALARM",
                                        "BLOCK_SUSPEND",
                                        "AUDIT_READ",
                                        "PERFMON",
                                        "BPF",
                                        "CHECKPOINT_RESTORE"};

uint64_t capability_mask(const std::vector<std::string>& names) {
  uint64_t mask = 0;
  for (const auto& n : names)
    for (int i = 0; i < static_cast<int>(std::size(capability_names)); ++i)
      if (n == capability_names[i]) mask |= uint64_t{1} << i;
  return mask;
}

int last_capability() {
  int last = 40;
  if (FILE* f = std::fopen("/proc/sys/kernel/cap_last_cap", "r")) {
    if (std::fscanf(f, "%d", &last) != 1) last = 40;
    std::fclose(f);
  }
  return std::min(last, 63);
}

// -- what a command is ---------------------------------------------------------------------

struct spawn_spec {
  std::vector<std::string> argv;
  std::vector<std::string> env;  // full KEY=VALUE list
  std::string workdir;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t keep_caps = 0;       // left in the bounding set
  bool inherit_output = false;  // the sandbox's main command writes to the container's log
};

// What the keeper tells the agent, over its report pipe.
struct keeper_report {
  int32_t kind;  // 1 spawned (a = pid), 2 exec failed (a = errno, b = step), 3 main ended (a = wait
                 // status, b = oom)
  int32_t a;
  int32_t b;
};

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

// -- the agent's own state -----------------------------------------------------------------

struct connection {
  int fd = -1;
  std::string in;
  std::string out;
  bool greeted = false;
  bool closing = false;  // flush what is queued, then close
};

struct command {
  uint32_t id = 0;
  int conn = -1;  // connection number; -1: nobody reads (its output is dropped)
  std::string argv0;
  pid_t keeper = -1;
  pid_t pid = 0;
  int in_fd = -1, out_fd = -1, err_fd = -1, report_fd = -1;
  std::string report_buf;
  std::string pending_stdin;
  bool stdin_closed = false;
  uint64_t cap[2] = {0, 0};
  uint64_t total[2] = {0, 0};
  uint64_t sent[2] = {0, 0};
  uint64_t credit = 0;
  int64_t deadline = 0;  // monotonic ms, 0: none
  bool timed_out = false;
  bool killed = false;
  bool keeper_gone = false;
  bool ended_main = false;
  int wait_status = 0;
  bool oom = false;
  bool spawn_failed = false;
  int spawn_errno = 0;
  int spawn_step = 0;
  bool main_command = false;
};

// One connection of a command to the egress port, bridged to the proxy's socket outside the
// sandbox (which decides what it may reach). Each direction buffers at most relay_buffer.
struct relay {
  int inside = -1;   // the command's TCP connection on 127.0.0.1:3128
  int outside = -1;  // the run directory's egress.sock
  std::string to_outside, to_inside;
  bool inside_eof = false, outside_eof = false;
};
constexpr std::size_t relay_buffer = 64 * 1024;
constexpr std::size_t max_relays = 64;

struct agent {
  int listen_fd = -1;
  int egress_fd = -1;  // 127.0.0.1:3128 once configured with egress
  std::vector<relay> relays;
  std::string egress_socket;              // beside our own socket
  std::vector<std::string> egress_hosts;  // as configured: told to a runtime that adopts us
  int signal_fd = -1;
  std::map<int, connection> conns;  // by number
  int next_conn = 1;
  std::map<uint64_t, command> commands;  // by (connection << 32 | id)
  uint64_t next_orphan_key = uint64_t{1} << 62;
  // What corral bound with `configure`.
  bool configured = false;
  std::string sandbox_id, key, spec_record;
  int64_t deadline_wall = 0;  // unix ms
  // A pooled sandbox nobody claims ends after this (ms, 0: never): a pool whose node died
  // and was not started again does not outlive it by more than this.
  int64_t unclaimed_limit = 0;
  int64_t idle_limit = 0;  // ms
  int64_t last_activity = mono_ms();
  int64_t started = mono_ms();
  std::vector<std::string> sandbox_env;
  uint32_t uid = 0, gid = 0;
  uint64_t keep_caps = 0;
  bool stopping = false;
  int main_exit = -1;  // the main command's status once it ended
};

agent A;

void send_frame(int conn, std::string frame) {
  auto it = A.conns.find(conn);
  if (it == A.conns.end() || it->second.closing) return;
  it->second.out += frame;
}

void refuse(int conn, uint32_t id, const std::string& reason) {
  send_frame(conn, proto::writer(proto::frame::refused, id).str(reason).finish());
}

void close_fd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

std::vector<std::string> merged_env(const std::vector<std::string>& over) {
  std::vector<std::string> out;
  auto put = [&out](const std::string& kv) {
    const auto eq = kv.find('=');
    const std::string name = kv.substr(0, eq);
    for (auto& e : out)
      if (e.compare(0, name.size() + 1, name + "=") == 0) {
        e = kv;
        return;
      }
    out.push_back(kv);
  };
  for (char** e = environ; e && *e; ++e) put(*e);
  for (const auto& kv : A.sandbox_env) put(kv);
  for (const auto& kv : over) put(kv);
  return out;
}

// Forks the keeper; the command's pipes stay on our side non-blocking.
bool spawn(command& c, const spawn_spec& s, bool has_stdin, std::string& error) {
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, report[2] = {-1, -1};
  auto cleanup = [&] {
    for (int* p : {in, out, err, report})
      for (int i = 0; i < 2; ++i) close_fd(p[i]);
  };
  if (has_stdin) {
    if (pipe2(in, O_CLOEXEC) != 0)
      return error = "pipe: " + std::string(strerror(errno)), cleanup(), false;
  } else {
    in[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  if (!s.inherit_output && (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0))
    return error = "pipe: " + std::string(strerror(errno)), cleanup(), false;
  if (pipe2(report, O_CLOEXEC) != 0)
    return error = "pipe: " + std::string(strerror(errno)), cleanup(), false;
  const pid_t keeper = fork();
  if (keeper < 0) return error = "fork: " + std::string(strerror(errno)), cleanup(), false;
  if (keeper == 0) {
    // Nothing of the agent's stays open in the keeper (its fds are close-on-exec, but the
    // keeper does not exec).
    close(A.listen_fd);
    close(A.signal_fd);
    for (auto& [n, conn] : A.conns) close(conn.fd);
    for (auto& [k, other] : A.commands)
      for (int fd : {other.in_fd, other.out_fd, other.err_fd, other.report_fd})
        if (fd >= 0) close(fd);
    close(report[0]);
    if (in[1] >= 0) close(in[1]);
    if (out[0] >= 0) close(out[0]);
    if (err[0] >= 0) close(err[0]);
    run_keeper(s, in[0], s.inherit_output ? 1 : out[1], s.inherit_output ? 2 : err[1], report[1]);
  }
  close_fd(in[0]);
  close_fd(out[1]);
  close_fd(err[1]);
  close_fd(report[1]);
  c.keeper = keeper;
  c.in_fd = in[1];
  c.out_fd = out[0];
  c.err_fd = err[0];
  c.report_fd = report[0];
  for (int fd : {c.in_fd, c.out_fd, c.err_fd, c.report_fd})
    if (fd >= 0) set_nonblocking(fd);
  return true;
}

void kill_command(command& c, bool timed_out) {
  if (c.keeper_gone || c.keeper <= 0) return;
  if (timed_out)
    c.timed_out = true;
  else
    c.killed = true;
  kill(c.keeper, SIGTERM);
}

void handle_start(int conn, uint32_t id, proto::reader& r) {
  spawn_spec s;
  s.argv = r.strs();
  const auto env = r.strs();
  s.workdir = r.str();
  s.uid = r.u32();
  s.gid = r.u32();
  const int64_t timeout = r.i64();
  const uint64_t cap_out = r.u64();
  const uint64_t cap_err = r.u64();
  const bool has_stdin = r.u8() != 0;
  const uint64_t credit = r.u64();
  if (!r.done() || s.argv.empty() || s.argv[0].empty())
    return refuse(conn, id, "start: malformed frame or empty argv");
  const uint64_t key = (static_cast<uint64_t>(conn) << 32) | id;
  if (A.commands.count(key)) return refuse(conn, id, "start: command id already in use");
  if (A.stopping) return refuse(conn, id, "start: the sandbox is ending");
  // Commands run as the user the sandbox was bound with, whatever a start frame says: a
  // process that adopts the sandbox need not know it, and no start can ask for more.
  if (!A.configured) return refuse(conn, id, "start: the sandbox is not bound yet");
  s.uid = A.uid;
  s.gid = A.gid;
  s.env = merged_env(env);
  s.keep_caps = A.keep_caps;
  command c;
  c.id = id;
  c.conn = conn;
  c.argv0 = s.argv[0];
  c.cap[0] = cap_out;
  c.cap[1] = cap_err;
  c.credit = credit;
  c.deadline = timeout > 0 ? mono_ms() + timeout : 0;
  std::string error;
  if (!spawn(c, s, has_stdin, error)) return refuse(conn, id, "start: " + error);
  A.last_activity = mono_ms();
  A.commands.emplace(key, std::move(c));
}

command* find_command(int conn, uint32_t id) {
  auto it = A.commands.find((static_cast<uint64_t>(conn) << 32) | id);
  return it == A.commands.end() ? nullptr : &it->second;
}

void start_main_command(const std::vector<std::string>& argv) {
  spawn_spec s;
  s.argv = argv;
  s.env = merged_env({});
  s.uid = A.uid;
  s.gid = A.gid;
  s.keep_caps = A.keep_caps;
  s.inherit_output = true;
  command c;
  c.conn = -1;
  c.main_command = true;
  c.argv0 = argv[0];
  std::string error;
  if (!spawn(c, s, false, error)) {
    log_line("the sandbox's command could not start: " + error);
    std::exit(126);
  }
  A.commands.emplace(A.next_orphan_key++, std::move(c));
}

// -- egress: 127.0.0.1:3128 in the sandbox's own loopback, bridged to the proxy ---------------

bool listen_for_egress(std::string& why) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(proto::egress_port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd, 64) != 0) {
    why =
        "cannot listen on 127.0.0.1:" + std::to_string(proto::egress_port) + ": " + strerror(errno);
    if (fd >= 0) close(fd);
    return false;
  }
  A.egress_fd = fd;
  return true;
}

void accept_egress() {
  for (;;) {
    const int inside = accept4(A.egress_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (inside < 0) return;
    if (A.relays.size() >= max_relays) {
      close(inside);  // the proxy would refuse it too: no more than this at once
      continue;
    }
    const int outside = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, A.egress_socket.c_str(),
                std::min(A.egress_socket.size(), sizeof addr.sun_path - 1));
    if (outside < 0 || connect(outside, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      // The proxy is gone (its runtime ended): the command sees a closed connection.
      if (outside >= 0) close(outside);
      close(inside);
      continue;
    }
    relay r;
    r.inside = inside;
    r.outside = outside;
    A.relays.push_back(std::move(r));
  }
}

// Reads what `from` has into `buffer`, up to relay_buffer; `eof` once it ended.
void pump(int from, std::string& buffer, bool& eof) {
  char buf[64 * 1024];
  while (!eof && buffer.size() < relay_buffer) {
    const ssize_t n = read(from, buf, std::min(sizeof buf, relay_buffer - buffer.size()));
    if (n > 0) {
      buffer.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    eof = true;
  }
}

// Writes what it can of `buffer` to `to`; false on an error (the peer is gone).
bool drain(int to, std::string& buffer) {
  while (!buffer.empty()) {
    const ssize_t n = send(to, buffer.data(), buffer.size(), MSG_NOSIGNAL);
    if (n > 0) {
      buffer.erase(0, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
    return false;
  }
  return true;
}

// One step of a relay after poll; false: close it.
bool step_relay(relay& r) {
  pump(r.inside, r.to_outside, r.inside_eof);
  pump(r.outside, r.to_inside, r.outside_eof);
  if (!drain(r.outside, r.to_outside) || !drain(r.inside, r.to_inside)) return false;
  // A side that ended and whose bytes are all delivered: the other side hears its end.
  if (r.inside_eof && r.to_outside.empty()) shutdown(r.outside, SHUT_WR);
  if (r.outside_eof && r.to_inside.empty()) shutdown(r.inside, SHUT_WR);
  return !(r.inside_eof && r.outside_eof && r.to_outside.empty() && r.to_inside.empty());
}

void handle_frame(int conn_no, connection& conn, const proto::frame_view& f) {
  proto::reader r(f.payload);
  if (!conn.greeted) {
    const uint32_t v = r.u32();
    if (f.type != proto::frame::hello || !r.done() || v != proto::version) {
      send_frame(conn_no, proto::writer(proto::frame::refused, f.id)
                              .str("agent protocol " + std::to_string(proto::version) +
                                   " expected a hello first, got type " +
                                   std::to_string(static_cast<int>(f.type)) + " version " +
                                   std::to_string(v))
                              .finish());
      conn.closing = true;
      return;
    }
    conn.greeted = true;
    proto::writer w(proto::frame::welcome, f.id);
    w.u32(proto::version)
        .str(A.sandbox_id)
        .str(A.key)
        .i64(A.deadline_wall)
        .i64(A.idle_limit)
        .str(A.spec_record);
    std::vector<const command*> running;
    for (const auto& [k, c] : A.commands)
      if (!c.main_command) running.push_back(&c);
    w.u32(static_cast<uint32_t>(running.size()));
    const int64_t now = mono_ms();
    for (const command* c : running)
      w.u32(c->id).i64(c->deadline ? wall_ms() + (c->deadline - now) : 0).str(c->argv0);
    w.strs(A.egress_hosts);
    send_frame(conn_no, w.finish());
    return;
  }
  switch (f.type) {
    case proto::frame::configure: {
      const std::string sandbox_id = r.str();
      const std::string key = r.str();
      const int64_t deadline_wall = r.i64();
      const int64_t idle_limit = r.i64();
      auto sandbox_env = r.strs();
      const auto main_command = r.strs();
      const uint32_t uid = r.u32();
      const uint32_t gid = r.u32();
      const uint64_t keep_caps = capability_mask(r.strs());
      std::string spec_record = r.str();
      auto egress_hosts = r.strs();
      if (!r.done()) return refuse(conn_no, f.id, "configure: malformed frame");
      // The first configure binds the sandbox for good: the claim of a pooled sandbox is
      // decided here, in one place, whoever else tries to bind it at the same moment.
      if (A.configured) {
        if (key != A.key)
          return refuse(conn_no, f.id, "configure: the sandbox is bound to another key");
        send_frame(conn_no, proto::writer(proto::frame::pong, f.id).finish());
        return;
      }
      if (!egress_hosts.empty() && A.egress_fd < 0) {
        std::string why;
        if (!listen_for_egress(why)) return refuse(conn_no, f.id, "configure: egress: " + why);
      }
      A.egress_hosts = std::move(egress_hosts);
      A.sandbox_id = sandbox_id;
      A.key = key;
      A.deadline_wall = deadline_wall;
      A.idle_limit = idle_limit;
      A.sandbox_env = std::move(sandbox_env);
      A.uid = uid;
      A.gid = gid;
      A.keep_caps = keep_caps;
      A.spec_record = std::move(spec_record);
      A.last_activity = mono_ms();
      A.configured = true;
      if (!main_command.empty()) start_main_command(main_command);
      send_frame(conn_no, proto::writer(proto::frame::pong, f.id).finish());
      return;
    }
    case proto::frame::start:
      return handle_start(conn_no, f.id, r);
    case proto::frame::stdin_data: {
      std::string bytes = r.str();
      command* c = find_command(conn_no, f.id);
      if (!r.done() || !c) return refuse(conn_no, f.id, "stdin: no such command");
      if (c->in_fd >= 0) c->pending_stdin += bytes;
      return;
    }
    case proto::frame::stdin_close: {
      if (command* c = find_command(conn_no, f.id)) c->stdin_closed = true;
      return;
    }
    case proto::frame::credit: {
      const uint64_t more = r.u64();
      if (command* c = find_command(conn_no, f.id)) c->credit += more;
      return;
    }
    case proto::frame::signal: {
      const uint32_t sig = r.u32();
      command* c = find_command(conn_no, f.id);
      if (!r.done() || !c) return refuse(conn_no, f.id, "signal: no such command");
      if (sig == SIGKILL) return kill_command(*c, false);
      if (c->pid > 0 && !c->ended_main && sig > 0 && sig < 65) kill(c->pid, static_cast<int>(sig));
      return;
    }
    case proto::frame::shutdown:
      A.stopping = true;
      return;
    case proto::frame::ping:
      send_frame(conn_no, proto::writer(proto::frame::pong, f.id).finish());
      return;
    default:
      log_line("unknown frame type " + std::to_string(static_cast<int>(f.type)) +
               ": connection closed");
      conn.closing = true;
      conn.out.clear();
  }
}

void read_connection(int conn_no, connection& conn) {
  char buf[64 * 1024];
  for (;;) {
    const ssize_t n = read(conn.fd, buf, sizeof buf);
    if (n > 0) {
      conn.in.append(buf, static_cast<std::size_t>(n));
      if (conn.in.size() > proto::max_frame + 64 * 1024) break;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
    conn.closing = true;  // EOF or error
    conn.out.clear();
    return;
  }
  std::size_t used = 0;
  bool bad = false;
  std::size_t offset = 0;
  while (!conn.closing) {
    auto f = proto::next_frame(std::string_view(conn.in).substr(offset), used, bad);
    if (bad) {
      log_line("a frame of a bad length: connection closed");
      conn.closing = true;
      conn.out.clear();
      break;
    }
    if (!f) break;
    offset += used;
    handle_frame(conn_no, conn, *f);
  }
  conn.in.erase(0, offset);
}

void read_output(command& c, int stream) {
  int& fd = stream == 0 ? c.out_fd : c.err_fd;
  char buf[64 * 1024];
  for (;;) {
    const bool capped = c.sent[stream] >= c.cap[stream];
    const bool nobody = c.conn < 0 || !A.conns.count(c.conn);
    std::size_t want = sizeof buf;
    if (!capped && !nobody) {
      if (c.credit == 0) return;
      want = std::min<uint64_t>(want, c.credit);
    }
    const ssize_t n = read(fd, buf, want);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      close_fd(fd);
      return;
    }
    if (n < 0) return;
    c.total[stream] += static_cast<uint64_t>(n);
    if (capped || nobody) continue;  // dropped: past the cap, or nobody reads
    const uint64_t room = c.cap[stream] - c.sent[stream];
    const auto take = static_cast<std::size_t>(std::min<uint64_t>(room, static_cast<uint64_t>(n)));
    c.sent[stream] += take;
    c.credit -= std::min<uint64_t>(c.credit, take);
    send_frame(c.conn, proto::writer(proto::frame::output, c.id)
                           .u8(static_cast<uint8_t>(stream + 1))
                           .str(std::string_view(buf, take))
                           .finish());
  }
}

void read_report(command& c) {
  char buf[256];
  for (;;) {
    const ssize_t n = read(c.report_fd, buf, sizeof buf);
    if (n > 0) {
      c.report_buf.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) close_fd(c.report_fd);
    break;
  }
  while (c.report_buf.size() >= sizeof(keeper_report)) {
    keeper_report r;
    std::memcpy(&r, c.report_buf.data(), sizeof r);
    c.report_buf.erase(0, sizeof r);
    if (r.kind == 1) {
      c.pid = r.a;
      // No `started` frame: nobody needs the pid, and a frame less is CPU saved per command.
    } else if (r.kind == 2) {
      c.spawn_failed = true;
      c.spawn_errno = r.a;
      c.spawn_step = r.b;
    } else if (r.kind == 3) {
      c.ended_main = true;
      c.wait_status = r.a;
      c.oom = r.b != 0;
    }
  }
}

void write_stdin(command& c) {
  while (!c.pending_stdin.empty()) {
    const ssize_t n = write(c.in_fd, c.pending_stdin.data(), c.pending_stdin.size());
    if (n > 0) {
      c.pending_stdin.erase(0, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    c.pending_stdin.clear();  // the command closed its stdin: the rest is not wanted
    c.stdin_closed = true;
  }
  if (c.stdin_closed) close_fd(c.in_fd);
}

// The exited frame, once the keeper is gone and both pipes are at EOF.
bool finish_if_done(command& c) {
  if (!c.keeper_gone || c.out_fd >= 0 || c.err_fd >= 0 || c.report_fd >= 0) return false;
  close_fd(c.in_fd);
  A.last_activity = mono_ms();
  if (c.main_command) {
    A.main_exit = c.ended_main ? c.wait_status : 0;
    return true;
  }
  proto::end how = proto::end::exited;
  int32_t code = 0, sig = 0;
  std::string detail;
  if (c.spawn_failed) {
    how = proto::end::spawn_failed;
    code = c.spawn_errno == ENOENT || c.spawn_errno == ENOTDIR ? 127 : 126;
    static const char* const steps[] = {"starting", "dropping capabilities", "becoming the user",
                                        "entering the work directory", "executing"};
    detail = std::string(steps[std::clamp(c.spawn_step, 0, 4)]) + " " + c.argv0 + ": " +
             strerror(c.spawn_errno);
    if (c.spawn_step == 3) code = 126;
  } else if (c.timed_out) {
    how = proto::end::timed_out;
    code = 124;
    sig = SIGKILL;
  } else if (c.killed) {
    how = proto::end::killed;
    code = 137;
    sig = SIGKILL;
  } else if (!c.ended_main) {
    how = proto::end::lost;
    code = 137;
    detail = "the command's keeper ended before it";
  } else if (WIFEXITED(c.wait_status)) {
    code = WEXITSTATUS(c.wait_status);
  } else if (WIFSIGNALED(c.wait_status)) {
    sig = WTERMSIG(c.wait_status);
    code = 128 + sig;
  }
  send_frame(c.conn, proto::writer(proto::frame::exited, c.id)
                         .u8(static_cast<uint8_t>(how))
                         .i32(code)
                         .i32(sig)
                         .u64(c.total[0])
                         .u64(c.total[1])
                         .u8(c.total[0] > c.sent[0] ? 1 : 0)
                         .u8(c.total[1] > c.sent[1] ? 1 : 0)
                         .u8(c.oom ? 1 : 0)
                         .str(detail)
                         .finish());
  return true;
}

void reap_children() {
  for (;;) {
    siginfo_t info{};
    if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG) != 0 || info.si_pid == 0) return;
    for (auto& [k, c] : A.commands)
      if (c.keeper == info.si_pid) c.keeper_gone = true;
  }
}

// As PID 1 of a sandbox, only corral, from outside the sandbox's pid namespace, may speak to
// the agent: the kernel reports such a peer's pid as 0. A process of the sandbox (its root,
// which owns the run directory when the policy allows a root user) is refused before it can
// read a welcome or start a command without the limits.
bool peer_inside_sandbox(int fd) {
  if (getpid() != 1) return false;  // run by hand or by a test: no sandbox to keep apart
  struct ucred cred {};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return true;
  return cred.pid != 0;
}

void accept_connections() {
  for (;;) {
    const int fd = accept4(A.listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    if (peer_inside_sandbox(fd)) {
      static uint64_t refused = 0;  // said once, then every thousandth: no log flood
      if (refused++ % 1000 == 0)
        log_line("refused a connection from a process inside the sandbox (" +
                 std::to_string(refused) + " so far)");
      close(fd);
      continue;
    }
    connection c;
    c.fd = fd;
    A.conns.emplace(A.next_conn++, std::move(c));
  }
}

void flush_connection(connection& conn) {
  while (!conn.out.empty()) {
    const ssize_t n = send(conn.fd, conn.out.data(), conn.out.size(), MSG_NOSIGNAL);
    if (n > 0) {
      conn.out.erase(0, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    conn.out.clear();
    conn.closing = true;
  }
}

[[noreturn]] void end_sandbox(int code, const std::string& why, proto::bye_reason reason) {
  log_line(why);
  // Said to every reader first, so that corral reports the end as what it is.
  for (auto& [n, conn] : A.conns) {
    if (conn.closing || !conn.greeted) continue;
    conn.out +=
        proto::writer(proto::frame::bye, 0).u8(static_cast<uint8_t>(reason)).str(why).finish();
    (void)!send(conn.fd, conn.out.data(), conn.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  // Our exit as PID 1 kills every process left in the sandbox.
  _exit(code);
}

int usage() {
  std::fprintf(stderr,
               "usage: corral-agent --socket PATH [--unclaimed-limit MS]\n(corral runs it as PID 1 "
               "of each sandbox)\n");
  return 2;
}

}  // namespace

// Whether this process's user namespace maps uid 0 anywhere but to the host's uid 0.
bool user_namespace_remapped() {
  FILE* f = std::fopen("/proc/self/uid_map", "r");
  if (!f) return false;
  unsigned long inside = 0, outside = 0, count = 0;
  const bool read = std::fscanf(f, "%lu %lu %lu", &inside, &outside, &count) == 3;
  std::fclose(f);
  return read && !(inside == 0 && outside == 0 && count == 4294967295UL);
}

int main(int argc, char** argv) {
  remapped_engine = user_namespace_remapped();
  std::string socket_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--socket" && i + 1 < argc)
      socket_path = argv[++i];
    else if (a == "--unclaimed-limit" && i + 1 < argc)
      A.unclaimed_limit = std::strtoll(argv[++i], nullptr, 10);
    else if (a == "--version") {
      std::printf("corral-agent protocol %u\n", proto::version);
      return 0;
    } else
      return usage();
  }
  if (socket_path.empty()) return usage();
  A.egress_socket = socket_path.substr(0, socket_path.rfind('/') + 1) + proto::egress_socket_name;
  // Nobody of the sandbox's uid may trace us or read our memory.
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  if (int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC); fd >= 0) {
    (void)!write(fd, "-999", 4);
    close(fd);
  }
  sigset_t handled;
  sigemptyset(&handled);
  for (int sig : {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGPIPE}) sigaddset(&handled, sig);
  sigprocmask(SIG_BLOCK, &handled, nullptr);
  A.signal_fd = signalfd(-1, &handled, SFD_NONBLOCK | SFD_CLOEXEC);

  unlink(socket_path.c_str());
  A.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path) return usage();
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size());
  const mode_t old_mask = umask(0077);
  if (A.listen_fd < 0 || bind(A.listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(A.listen_fd, 64) != 0) {
    log_line("cannot listen on " + socket_path + ": " + strerror(errno));
    return 1;
  }
  umask(old_mask);

  std::vector<pollfd> fds;
  for (;;) {
    const int64_t now = mono_ms();
    // Deadlines: commands', the sandbox's lifetime and its idle limit.
    int64_t wait = 1000;
    for (auto& [k, c] : A.commands) {
      if (c.deadline && !c.timed_out && !c.keeper_gone) {
        if (now >= c.deadline)
          kill_command(c, true);
        else
          wait = std::min(wait, c.deadline - now);
      }
    }
    if (A.deadline_wall > 0 && wall_ms() >= A.deadline_wall)
      end_sandbox(0, "the sandbox reached its lifetime limit", proto::bye_reason::lifetime);
    if (A.deadline_wall > 0)
      wait = std::min(wait, std::max<int64_t>(0, A.deadline_wall - wall_ms()));
    bool busy = false;
    for (auto& [k, c] : A.commands) busy |= !c.main_command;
    if (A.idle_limit > 0 && !busy && now - A.last_activity >= A.idle_limit)
      end_sandbox(0, "the sandbox was idle for its idle limit", proto::bye_reason::idle);
    if (!A.configured && A.unclaimed_limit > 0 && now - A.started >= A.unclaimed_limit)
      end_sandbox(0, "the pooled sandbox was not claimed within its limit",
                  proto::bye_reason::idle);
    if (A.stopping) end_sandbox(0, "told to shut down", proto::bye_reason::stopped);

    fds.clear();
    fds.push_back({A.listen_fd, POLLIN, 0});
    fds.push_back({A.signal_fd, POLLIN, 0});
    fds.push_back({A.egress_fd, POLLIN, 0});  // -1 until egress: poll skips it
    const std::size_t relays_at = fds.size();
    for (const auto& r : A.relays) {
      short in_events = 0, out_events = 0;
      if (!r.inside_eof && r.to_outside.size() < relay_buffer) in_events |= POLLIN;
      if (!r.to_inside.empty()) in_events |= POLLOUT;
      if (!r.outside_eof && r.to_inside.size() < relay_buffer) out_events |= POLLIN;
      if (!r.to_outside.empty()) out_events |= POLLOUT;
      // A side with nothing to wait for is left out (fd -1): poll reports POLLHUP whatever the
      // events asked, and a proxy that closed its end would otherwise spin this loop.
      fds.push_back({in_events ? r.inside : -1, in_events, 0});
      fds.push_back({out_events ? r.outside : -1, out_events, 0});
    }
    std::vector<std::pair<int, int>> conn_slots;  // (fds index, conn number)
    for (auto& [n, conn] : A.conns) {
      short events = conn.closing ? 0 : POLLIN;
      if (!conn.out.empty()) events |= POLLOUT;
      conn_slots.emplace_back(static_cast<int>(fds.size()), n);
      fds.push_back({conn.fd, events, 0});
    }
    struct slot {
      std::size_t index;
      uint64_t key;
      int which;  // 0 stdout, 1 stderr, 2 report, 3 stdin
    };
    std::vector<slot> slots;
    for (auto& [k, c] : A.commands) {
      const auto reader_conn = A.conns.find(c.conn);
      const bool backed_up =
          reader_conn != A.conns.end() && reader_conn->second.out.size() > (8u << 20);
      for (int s = 0; s < 2; ++s) {
        const int fd = s == 0 ? c.out_fd : c.err_fd;
        if (fd < 0) continue;
        const bool nobody = reader_conn == A.conns.end();
        const bool capped = c.sent[s] >= c.cap[s];
        if (!nobody && !capped && (c.credit == 0 || backed_up)) continue;  // back-pressure
        slots.push_back({fds.size(), k, s});
        fds.push_back({fd, POLLIN, 0});
      }
      if (c.report_fd >= 0) {
        slots.push_back({fds.size(), k, 2});
        fds.push_back({c.report_fd, POLLIN, 0});
      }
      if (c.in_fd >= 0 && (!c.pending_stdin.empty() || c.stdin_closed)) {
        if (c.pending_stdin.empty())
          close_fd(c.in_fd);
        else {
          slots.push_back({fds.size(), k, 3});
          fds.push_back({c.in_fd, POLLOUT, 0});
        }
      }
    }
    const int ready = poll(fds.data(), fds.size(), static_cast<int>(std::max<int64_t>(wait, 0)));
    if (ready < 0 && errno != EINTR)
      end_sandbox(1, std::string("poll: ") + strerror(errno), proto::bye_reason::stopped);

    if (fds[1].revents) {
      signalfd_siginfo si;
      while (read(A.signal_fd, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT || si.ssi_signo == SIGHUP)
          end_sandbox(0, "stopped by signal " + std::to_string(si.ssi_signo),
                      proto::bye_reason::stopped);
      }
    }
    reap_children();
    for (const auto& s : slots) {
      if (!fds[s.index].revents) continue;
      auto it = A.commands.find(s.key);
      if (it == A.commands.end()) continue;
      if (s.which < 2)
        read_output(it->second, s.which);
      else if (s.which == 2)
        read_report(it->second);
      else
        write_stdin(it->second);
    }
    for (auto it = A.commands.begin(); it != A.commands.end();) {
      if (finish_if_done(it->second)) {
        const bool main_ended = it->second.main_command;
        it = A.commands.erase(it);
        if (main_ended) {
          const int st = A.main_exit;
          end_sandbox(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st),
                      "the sandbox's command ended", proto::bye_reason::main_command_ended);
        }
      } else {
        ++it;
      }
    }
    if (fds[0].revents) accept_connections();
    for (std::size_t i = 0, n = A.relays.size(); i < n; ++i) {
      auto& r = A.relays[i];
      if (!fds[relays_at + 2 * i].revents && !fds[relays_at + 2 * i + 1].revents) continue;
      if (!step_relay(r)) {
        close_fd(r.inside);
        close_fd(r.outside);
      }
    }
    A.relays.erase(std::remove_if(A.relays.begin(), A.relays.end(),
                                  [](const relay& r) { return r.inside < 0; }),
                   A.relays.end());
    if (A.egress_fd >= 0 && fds[2].revents) accept_egress();
    for (const auto& [index, n] : conn_slots) {
      auto it = A.conns.find(n);
      if (it == A.conns.end()) continue;
      if (fds[index].revents & (POLLIN | POLLHUP | POLLERR)) read_connection(n, it->second);
      flush_connection(it->second);
    }
    for (auto it = A.conns.begin(); it != A.conns.end();) {
      if (it->second.closing && it->second.out.empty()) {
        close(it->second.fd);
        // Its commands lost their owner (a client killed, a node crashed): nobody can have
        // their results, so their trees are killed, as a terminal's hang-up would.
        for (auto& [k, c] : A.commands) {
          if (c.conn != it->first) continue;
          c.conn = -1;
          kill_command(c, false);
        }
        it = A.conns.erase(it);
      } else {
        ++it;
      }
    }
  }
}
