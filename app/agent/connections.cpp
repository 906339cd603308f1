// The agent protocol's connections (messages/agent_protocol.hpp): corral's processes connect
// to the agent's socket, are checked to be outside the sandbox, greet it, and send frames that
// are decoded and carried out here; the agent's frames are queued and flushed to them. Apart
// from the commands (commands.cpp) and the poll loop (corral_agent.cpp), which call in here.
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string_view>
#include <utility>

#include "app/agent/agent_state.hpp"

namespace corral::agent_detail {

void send_frame(int conn, const std::string& frame) {
  auto it = A.conns.find(conn);
  if (it == A.conns.end() || it->second.closing) return;
  it->second.out += frame;
}

void refuse(int conn, uint32_t id, const std::string& reason) {
  send_frame(conn, proto::writer(proto::frame::refused, id).str(reason).finish());
}

namespace {

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

}  // namespace

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

namespace {

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

}  // namespace

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

}  // namespace corral::agent_detail
