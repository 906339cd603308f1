// Internal to corral-agent: the state and the functions its files share (keeper.cpp,
// commands.cpp, connections.cpp, egress_relay.cpp, corral_agent.cpp). Not a public header:
// nothing outside app/agent/ includes it. The agent is one thread with one poll loop, so its
// state is one object, `A`, that every file reads and changes.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "messages/agent_protocol.hpp"

namespace corral::agent_detail {

namespace proto = corral::agent_protocol;

// -- helpers of every file (corral_agent.cpp) ---------------------------------------------

int64_t mono_ms();
int64_t wall_ms();
extern bool remapped_engine;
void log_line(const std::string& text);
void close_fd(int& fd);

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
constexpr std::size_t relay_buffer = std::size_t{64} * 1024;
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

extern agent A;

// -- the keeper (keeper.cpp) ----------------------------------------------------------------

uint64_t capability_mask(const std::vector<std::string>& names);
[[noreturn]] void run_keeper(const spawn_spec& s, int in_fd, int out_fd, int err_fd, int report_fd);

// -- commands, the agent's side (commands.cpp) --------------------------------------------

void kill_command(command& c, bool timed_out);
void handle_start(int conn, uint32_t id, proto::reader& r);
command* find_command(int conn, uint32_t id);
void start_main_command(const std::vector<std::string>& argv);
void read_output(command& c, int stream);
void read_report(command& c);
void write_stdin(command& c);
bool finish_if_done(command& c);
void reap_children();

// -- corral's connections (connections.cpp) -------------------------------------------------

void send_frame(int conn, const std::string& frame);
void refuse(int conn, uint32_t id, const std::string& reason);
void read_connection(int conn_no, connection& conn);
void accept_connections();
void flush_connection(connection& conn);

// -- the egress relay (egress_relay.cpp) ----------------------------------------------------

bool listen_for_egress(std::string& why);
void accept_egress();
bool step_relay(relay& r);

}  // namespace corral::agent_detail
