// A command as the agent sees it: started (a keeper forked for it), its output read within
// its caps and credit, its stdin written, its keeper's reports read, killed, and its end told
// as an `exited` frame. Apart from the keeper (keeper.cpp), which is the other side of the
// report pipe, and from the poll loop (corral_agent.cpp), which calls these when fds are ready.
//
// A command's life, as the agent sees it:
//
//   start frame ──> spawning ──(keeper: spawned pid)──> running ──(keeper: main exited)──>
//   draining (the keeper kills what is left of the tree) ──(keeper gone, pipes at EOF)──> ended
//                 └─(keeper: exec failed)─────────────────────────────────────────────────┘
//   deadline or signal frame: SIGTERM to the keeper, which kills the whole tree at once.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <utility>

#include "app/agent/agent_state.hpp"

extern char** environ;

namespace corral::agent_detail {

namespace {

void set_nonblocking(int fd) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
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
    // The egress port and its relays too: a relay the agent drops must close for the
    // command's peer at once, not when the last keeper forked during it exits.
    if (A.egress_fd >= 0) close(A.egress_fd);
    for (const auto& r : A.relays)
      for (int fd : {r.inside, r.outside})
        if (fd >= 0) close(fd);
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

}  // namespace

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

}  // namespace corral::agent_detail
