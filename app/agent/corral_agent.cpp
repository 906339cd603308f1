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
// A command's life is drawn in commands.cpp; the keeper is keeper.cpp, corral's connections
// connections.cpp, the egress relay egress_relay.cpp, what they share agent_state.hpp. This
// file holds the helpers they all use, the state, and main: the poll loop, which also keeps
// the deadlines (commands' timeouts, the sandbox's lifetime, idle and unclaimed limits).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "app/agent/agent_state.hpp"

namespace corral::agent_detail {

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

void close_fd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

agent A;

}  // namespace corral::agent_detail

using namespace corral::agent_detail;

namespace {

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
