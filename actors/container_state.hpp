// The container actor's state and the functions its files call across (a private header: only
// actors/container*.cpp include it). Everything here runs in the actor, on its own thread.
//
//   container.cpp        the lifecycle: the diagram, the phases (enter, moot), publish, the
//                        removal, the behavior, spawn_container
//   container_agent.cpp  the link to the sandbox's agent: frames, configure, credit, the run
//                        directory
//   container_claim.cpp  the container created, claimed or adopted, started, its workspace
//                        granted and checked, set up; the warm pool's claim (drawn there)
//   container_exec.cpp   commands: queued, run (through the agent or a docker exec), ended
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <caf/all.hpp>

#include "actors/agent_link.hpp"
#include "actors/container.hpp"
#include "actors/internal_messages.hpp"
#include "actors/monitor.hpp"
#include "actors/plumbing.hpp"
#include "docker/client.hpp"
#include "messages/agent_protocol.hpp"

namespace corral::actors::container_detail {

using namespace messages;
using steady = std::chrono::steady_clock;

using container_impl_actor = container_actor::extend_with<monitored_actor>::extend<
    caf::reacts_to<resume_atom, continuation>, caf::reacts_to<finalize_atom, uint64_t>,
    caf::reacts_to<fallback_atom, uint64_t>, caf::reacts_to<claim_atom, pool_claim>>;

// The phases of the diagram at the top of container.cpp.
enum class phase { creating, adopting, starting, setting_up, pooled, ready, draining, removing };

// An exec still waiting for a slot (or for the sandbox to be ready).
struct pending_exec {
  exec_request request;
  exec_plan plan;
  caf::typed_response_promise<exec_result> rp;
};

struct running_exec {
  exec_request request;
  exec_plan plan;
  caf::typed_response_promise<exec_result> rp;
  std::string tag;  // CORRAL_EXEC value: finds every process of this exec inside the sandbox
  std::string exec_id;
  docker::unix_http_client::request_id stream = 0;
  uint32_t agent_id = 0;  // run by the agent: its command id
  steady::time_point started = steady::now();
  bool timed_out = false;
  bool killed = false;  // by a release with cancel, or the lifetime limit
  exec_result result;   // filled when the stream ends, delivered after the exit code is read
};

// How the agent says a command ended (messages/agent_protocol.hpp, exited frame).
struct agent_exit {
  agent_protocol::end how = agent_protocol::end::exited;
  int32_t code = 0;
  int32_t signal = 0;
  uint64_t totals[2] = {0, 0};
  bool truncated[2] = {false, false};
  bool oom = false;
  std::string detail;
};

// A command the agent runs for us: where its output and its end go. on_output returns true
// when the bytes went on to a subscriber, whose answer gives their credit back (give_credit):
// the agent then sends no more than its window ahead of the slowest reader, across the
// network too, and a reader that stops reading stops the command's writes.
struct agent_command {
  std::function<bool(output_stream, std::string&)> on_output;
  std::function<void(agent_exit&)> on_exit;
  uint64_t taken = 0;  // output bytes received and not yet given back as credit
};

struct container_state {
  static inline const char* name = "corral.container";
  container_state() = default;  // not an aggregate: CAF must not build it from the self pointer
  container_args args;
  sandbox_info info;
  monitor_actor monitor;
  std::vector<caf::typed_response_promise<sandbox_info>> ready_waiters;
  std::vector<caf::typed_response_promise<sandbox_info>> release_waiters;
  std::deque<pending_exec> queue;
  std::map<uint64_t, running_exec> running;
  uint64_t next_seq = 1;
  phase now = phase::creating;
  std::optional<steady::time_point> oom_seen_at;
  bool run_dir_made = false;   // by this actor: a create it tries again may find it
  bool egress_open = false;    // its socket at the egress proxy (closed with the run dir)
  std::string container_name;  // the key's claim (claim_name): lets a lost create be cleaned up
  int claim_attempts = 0;      // looks at a name another container holds (claim_taken)
  int clear_attempts = 0;      // removals of a dead holder the engine failed
  std::string claim_nonce;     // in the create's labels: a holder with it is this actor's own
  bool shared_claim = false;   // adopted from another live process: its commands are not orphans
  caf::error startup_failure;  // why the sandbox never became ready, for those who waited
  // A create's answer is awaited: a removal begun meanwhile (the lifetime, a mark) waits for
  // it, since the container it makes is this sandbox's to remove (removal_after_create).
  bool create_in_flight = false;
  std::optional<sandbox_status> removal_after_create;
  int remove_attempts = 0;
  int engine_waits = 0;  // removals retried while no engine answered (a restart)
  int busy_waits = 0;    // removals retried while the engine found the root filesystem busy
  // Tags of execs whose end we could not see (the engine went away mid-command): their
  // processes may still run, owned by nobody; killed once the engine answers again.
  std::vector<std::string> cut_tags;
  int cut_attempts = 0;
  // The agent (plan.agent): the link to it, and the commands it runs for us by id.
  agent_hub::link_id link = 0;
  // The link is made when a command needs it and closed when idle: a runtime holding ten
  // thousand sandboxes holds descriptors only for those at work.
  bool link_ready = false;                          // welcomed (and configured)
  std::vector<std::function<void()>> link_waiters;  // run once it is
  uint64_t link_uses = 0;                           // commands started: an idle check compares
  bool idle_check_pending = false;
  bool agent_gone = false;  // its link broke: the agent died, the sandbox is being lost
  std::map<uint32_t, agent_command> agent_commands;
  uint32_t next_agent_id = 1;
  std::optional<agent_protocol::bye_reason> agent_bye;  // why the agent said it ends the sandbox
  std::string agent_bye_detail;
  // A warm pool member not claimed yet (args.pool_hash): started, its agent unbound.
  bool pool_member = false;
  // A cold sandbox between its create and its claim: under an unclaimed name, its agent
  // unbound, renamed to the key's name once started (claim_by_rename), as a pool member is.
  bool cold_claim = false;
  bool workspace_granted = false;  // its workspace opened to a remapped sandbox user
  bool name_looked_at = false;     // a cold create looks at its key's name once before it makes one
  int bind_waits = 0;              // looks at an adopted sandbox whose claimer has not bound it yet
};

using self_ptr = container_impl_actor::stateful_pointer<container_state>;

inline docker::client& engine(self_ptr self) {
  return *self->state.args.docker;
}

// -- container.cpp: the lifecycle ----------------------------------------------------------

void publish(self_ptr self);
void begin_removal(self_ptr self, sandbox_status final_status, std::string detail);
// Whether a failed create may still have made its container (only its answer lost): not when
// the engine refused it (no such image, a bad request, the name taken).
inline bool create_may_have_made(const docker::error& err) {
  return err.code != docker::errc::not_found && err.code != docker::errc::invalid_request &&
         err.code != docker::errc::conflict;
}

// The removal begun while the create was in flight, once its answer (the container's id, or
// the engine's error) is in.
void removed_after_create(self_ptr self, const docker::result<std::string>& created);
void fail_startup(self_ptr self, const caf::error& err);
bool moot(self_ptr self);
bool enter(self_ptr self, phase next);
void become_ready(self_ptr self);

// -- container_agent.cpp: the agent --------------------------------------------------------

void with_agent(self_ptr self, std::function<void()> then,
                std::chrono::milliseconds patience = std::chrono::milliseconds(0));
void give_credit(self_ptr self, uint32_t id, uint64_t n);
uint32_t agent_start(self_ptr self, const std::vector<std::string>& argv,
                     const std::vector<std::string>& env, const std::string& workdir,
                     std::chrono::milliseconds timeout, uint64_t max_stdout, uint64_t max_stderr,
                     const std::string* stdin_data, agent_command cmd);
void close_agent_link(self_ptr self);
void agent_kill(self_ptr self, uint32_t id);
std::pair<uint32_t, uint32_t> numeric_user(const std::string& user);
caf::error make_run_dir(self_ptr self);
void remove_run_dir(self_ptr self);

// -- container_claim.cpp: create, claim, adopt ---------------------------------------------

void create_container(self_ptr self);
void adopt_container(self_ptr self);
void claim_pooled(self_ptr self, const pool_claim& claim);
void refuse_claim(self_ptr self, const caf::error& err);

// -- container_exec.cpp: commands ----------------------------------------------------------

// Ends exec `seq`: its result, or `failure`.
void end_exec(self_ptr self, uint64_t seq, caf::error failure);
// Ends exec `seq` once the engine says whether its container still runs: if not (killed from
// outside; its die event may come later than the exit), the sandbox is lost, and the exec's
// exit code becomes `lost_exit_code` when one is given.
void end_exec_unless_lost(self_ptr self, uint64_t seq, std::optional<int32_t> lost_exit_code);
void start_pending(self_ptr self);
void kill_exec_tree(self_ptr self, uint64_t seq);

}  // namespace corral::actors::container_detail
