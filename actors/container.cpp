// The container actor: one sandbox's whole life, one step at a time. Its phases (enum phase);
// each is entered through one function (enter, or begin_removal for removing), and every
// step's handler ends by entering the next:
//
//   spawn ──────────────────────────────────┐ an adoption (a runtime's restart)
//     │                                     ▼
//     ▼        the key's name is held    adopting
//   creating ── by a live sandbox ─────►  inspect; a previous run's
//     │  workspace grant, a look at        commands stopped
//     │  the name, create (a dead             │
//     │  holder cleared, a busy one           │
//     │  waited for)                          │
//     ▼                                       │
//   starting                                  │
//     │  start                                │
//     ▼                                       │
//   setting_up ─── a pool member ──► pooled   │
//     │  agent link, workspace check,   │     │
//     │  claim by rename, setup ◄─claim─┘     │
//     ▼                                       │
//   ready ◄───────────────────────────────────┘
//     │  exec: queued, run, end_exec
//     │  release
//     ▼
//   draining ── its last exec ends, or a release with cancel ──► removing ──► quit
//                                                                 stop, remove (retried)
//
// Any step that fails enters removing (fail_startup). A release during a step in flight enters
// draining at once; that step, when it ends, is moot and enters removing instead of its next
// phase. The lifetime, the monitor's marks and a lost agent enter removing. Back edges: a claim
// by rename that meets the key's name held goes back to creating (the holder is looked at), as
// does a pool member gone before its claim. `info.status` is what callers see: creating
// (creating, adopting), starting (starting, setting_up, and creating again after a claim's back
// edge), ready (pooled, ready, draining), stopping (removing a released sandbox), then its end.
#include "actors/container.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <optional>
#include <thread>
#include <utility>

#include <sys/stat.h>
#include <unistd.h>

#include <caf/all.hpp>

#include "actors/agent_link.hpp"
#include "actors/engine_bridge.hpp"
#include "actors/engine_errors.hpp"
#include "actors/monitor.hpp"
#include "actors/random_id.hpp"
#include "actors/spec_record.hpp"
#include "actors/workspace_access.hpp"
#include "docker/client.hpp"
#include "messages/agent_protocol.hpp"
#include "messages/errors.hpp"

namespace corral::actors {

namespace {

using namespace messages;
using steady = std::chrono::steady_clock;

using container_impl_actor = container_actor::extend_with<monitored_actor>::extend<
    caf::reacts_to<resume_atom, continuation>, caf::reacts_to<finalize_atom, uint64_t>,
    caf::reacts_to<fallback_atom, uint64_t>, caf::reacts_to<claim_atom, pool_claim>>;

// The phases of the diagram at the top.
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

// The output window each command starts with, and how much of it is given back at once: most
// commands' whole output fits, so most commands need no credit frame at all.
constexpr uint64_t agent_window = 1 << 20;
constexpr uint64_t agent_credit_batch = agent_window / 4;

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

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

docker::client& engine(self_ptr self) {
  return *self->state.args.docker;
}

void publish(self_ptr self) {
  auto& st = self->state;
  st.info.execs_in_flight = st.running.size() + st.queue.size();
  if (st.args.supervisor) {
    // send_as: the supervisor checks who reports, so a stale actor cannot overwrite a key.
    caf::send_as(caf::actor_cast<caf::actor>(self), st.args.supervisor, update_atom_v, st.info,
                 caf::actor_cast<caf::actor>(st.monitor));
  }
}

void start_pending(self_ptr self);
void begin_removal(self_ptr self, sandbox_status final_status, std::string detail);

// The engine's way of saying a command cannot run because the container is gone or stopped:
// 404, 409, or (Docker 20.10, exec start) 500 "Container ... is not running".
bool container_stopped(const docker::error& e) {
  return e.code == docker::errc::not_found || e.code == docker::errc::conflict ||
         e.message.find("is not running") != std::string::npos;
}

// -- the end -------------------------------------------------------------------------------

// Everything still waiting gets an answer before the actor goes: CAF 0.17 has no broken
// promises, so a silent quit would leave callers hanging until their timeout.
// Answers everyone but the release waiters (they wait for the removal).
void answer_callers(self_ptr self) {
  auto& st = self->state;
  const auto lost = make_error(corral_errc::sandbox_lost,
                               "sandbox " + st.info.key + " is " + to_string(st.info.status) +
                                   (st.info.detail.empty() ? "" : ": " + st.info.detail));
  for (auto& rp : st.ready_waiters) rp.deliver(st.startup_failure ? st.startup_failure : lost);
  st.ready_waiters.clear();
  for (auto& p : st.queue) p.rp.deliver(lost);
  st.queue.clear();
  for (auto& [seq, run] : st.running) {
    run.result.end = st.info.status == sandbox_status::oom_killed ? exec_end::oom_killed
                     : run.killed                                 ? exec_end::killed
                     : run.timed_out                              ? exec_end::timed_out
                                                                  : exec_end::sandbox_lost;
    run.result.exit_code = 137;
    run.rp.deliver(run.result);
  }
  st.running.clear();
}

void close_agent_link(self_ptr self);
void remove_run_dir(self_ptr self);

void finish(self_ptr self) {
  auto& st = self->state;
  close_agent_link(self);
  remove_run_dir(self);
  answer_callers(self);
  for (auto& rp : st.release_waiters) rp.deliver(st.info);
  st.release_waiters.clear();
  publish(self);
  self->quit();
}

void remove_container(self_ptr self, sandbox_status final_status);

// The removal failed in a way worth another try: the engine step again after `delay` (the
// phase stays removing: nothing else may begin another removal meanwhile).
void remove_again_after(self_ptr self, std::chrono::milliseconds delay,
                        sandbox_status final_status) {
  self->delayed_send(self, delay, resume_atom_v,
                     continuation{[self, final_status] { remove_container(self, final_status); }});
}

void on_container_removed(self_ptr self, sandbox_status final_status,
                          const docker::result<void>& r) {
  auto& st = self->state;
  // Gone already, or on its way out (409 "removal ... is already in progress"): someone
  // else removed it. Unless we were releasing it anyway, that makes it lost.
  const bool removed_elsewhere =
      !r && (r.err().code == docker::errc::not_found ||
             (r.err().code == docker::errc::conflict &&
              r.err().message.find("already in progress") != std::string::npos));
  if (removed_elsewhere && final_status != sandbox_status::removed &&
      st.info.container_id != st.container_name) {
    st.info.status = sandbox_status::lost;
    st.info.detail = "the container was removed outside corral";
  } else if (r || removed_elsewhere) {
    st.info.status = final_status;
  } else if (r.err().code == docker::errc::engine_unavailable && ++st.engine_waits <= 60) {
    // The engine is away (restarting): wait for it, up to a minute, rather than leave
    // the container to the runtime's next start (tests/engine_restart_trial.sh).
    // Callers are answered now: nothing of this sandbox will run any more.
    if (st.engine_waits == 1) answer_callers(self);
    return remove_again_after(self, std::chrono::seconds(1), final_status);
  } else if (r.err().message.find("device or resource busy") != std::string::npos &&
             ++st.busy_waits <= 3) {
    // The engine could not unmount the container's root filesystem yet: a process of
    // the container (killed by an engine restart, say) still holds it, and the engine
    // does not try again by itself. Retried three times, 2 s apart; callers are
    // answered now (seen by tests/engine_restart_trial.sh: a container left `removing`).
    if (st.busy_waits == 1) answer_callers(self);
    return remove_again_after(self, std::chrono::seconds(2), final_status);
  } else if (++st.remove_attempts < 4) {
    // The engine failed the remove: try again shortly rather than leak the container.
    return remove_again_after(self, std::chrono::milliseconds(200 * st.remove_attempts),
                              final_status);
  } else {
    // Said exactly: the runtime's next start lists and removes what is left.
    st.info.status = sandbox_status::failed;
    st.info.detail += (st.info.detail.empty() ? "" : "; ") +
                      std::string("could not remove container ") + st.info.container_id + ": " +
                      r.err().describe();
  }
  finish(self);
}

void remove_container(self_ptr self, sandbox_status final_status) {
  engine(self).container_remove(self->state.info.container_id, true,
                                back_to<void>(self, [self, final_status](const auto& r) {
                                  on_container_removed(self, final_status, r);
                                }));
}

// Enters removing (once): removes the container, whatever state it is in, and ends in
// `final_status`.
void begin_removal(self_ptr self, sandbox_status final_status, std::string detail) {
  auto& st = self->state;
  if (st.now == phase::removing) return;
  st.now = phase::removing;
  if (!detail.empty()) st.info.detail = std::move(detail);
  if (st.monitor) self->send(st.monitor, stopping_atom_v);
  if (st.info.container_id.empty()) {
    st.info.status = final_status;
    return finish(self);
  }
  if (final_status != sandbox_status::removed) return remove_container(self, final_status);
  // A release stops politely first, so the command gets its grace period.
  st.info.status = sandbox_status::stopping;
  publish(self);
  const auto grace = std::chrono::duration_cast<std::chrono::seconds>(st.args.cfg.stop_grace);
  engine(self).container_stop(st.info.container_id, grace,
                              back_to<docker::change_outcome>(self, [self, final_status](auto) {
                                remove_container(self, final_status);
                              }));
}

void fail_startup(self_ptr self, const caf::error& err) {
  if (!self->state.startup_failure) self->state.startup_failure = err;
  begin_removal(self, sandbox_status::failed, describe(err));
}

// A step's answer is moot once the sandbox was released (its removal begins now: the step in
// flight was what it waited for) or is being removed: the step goes no further.
bool moot(self_ptr self) {
  auto& st = self->state;
  if (st.now == phase::draining) begin_removal(self, sandbox_status::removed, {});
  return st.now == phase::removing;
}

// The one way into a phase of the start-up and into ready: false (and the caller goes no
// further) when the step that led here became moot.
bool enter(self_ptr self, phase next) {
  if (moot(self)) return false;
  self->state.now = next;
  return true;
}

// -- the agent -----------------------------------------------------------------------------
//
// With cfg.agent_path, each sandbox runs corral-agent as PID 1 and every command goes through
// it over one link (actors/agent_link.hpp): a start frame, output frames answered with credit,
// an exited frame. The agent enforces the command's deadline and output caps itself; the
// monitor's timer here is only the backstop should the agent not answer.

// Ends exec `seq`: its result, or `failure` (-- execs --).
void end_exec(self_ptr self, uint64_t seq, caf::error failure);

agent_hub& agents(self_ptr self) {
  return *self->state.args.agents;
}

std::string agent_socket(self_ptr self) {
  return self->state.args.plan.run_dir + "/" + agent_protocol::socket_name;
}

void send_to_agent(self_ptr self, std::string frame) {
  if (self->state.link != 0) agents(self).send(self->state.link, std::move(frame));
}

// The sandbox's user as the agent takes it: numbers (check_user made it "uid:gid").
std::pair<uint32_t, uint32_t> numeric_user(const std::string& user) {
  const auto colon = user.find(':');
  const auto uid = static_cast<uint32_t>(std::strtoul(user.c_str(), nullptr, 10));
  const auto gid = colon == std::string::npos
                       ? uid
                       : static_cast<uint32_t>(std::strtoul(user.c_str() + colon + 1, nullptr, 10));
  return {uid, gid};
}

// The run directory: the agent's socket lives here, reachable by the sandbox's root only.
caf::error make_run_dir(self_ptr self) {
  const auto& cfg = self->state.args.cfg;
  const auto& dir = self->state.args.plan.run_dir;
  std::error_code ec;
  std::filesystem::create_directories(cfg.agent_run_root, ec);
  // Exclusive: a directory this actor did not make is another sandbox's (its agent's socket).
  if (::mkdir(dir.c_str(), 0700) != 0 && (errno != EEXIST || !self->state.run_dir_made)) {
    auto err = make_error(corral_errc::engine_error, "cannot make the sandbox's run directory " +
                                                         dir + ": " + std::strerror(errno));
    self->state.args.plan.run_dir.clear();  // not ours: the removal leaves it alone
    return err;
  }
  self->state.run_dir_made = true;
  if (::chown(dir.c_str(), cfg.agent_root_uid, cfg.agent_root_gid) != 0 ||
      ::chmod(dir.c_str(), 0700) != 0)
    return make_error(corral_errc::engine_error, "cannot give the sandbox's run directory " + dir +
                                                     " to its root: " + std::strerror(errno));
  return {};
}

void remove_run_dir(self_ptr self) {
  const auto& plan = self->state.args.plan;
  if (self->state.egress_open) {
    self->state.egress_open = false;
    self->state.args.cfg.egress->close(plan.sandbox_id,
                                       self->state.args.cfg.agent_run_root + "/" + plan.sandbox_id);
  }
  if (!plan.agent || plan.run_dir.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(plan.run_dir, ec);
}

// Every command the agent ran for us ends now: the link is gone.
void agent_link_lost(self_ptr self, const std::string& why) {
  namespace proto = agent_protocol;
  auto& st = self->state;
  st.link = 0;
  st.link_ready = false;
  st.link_waiters.clear();
  st.agent_gone = true;
  // The agent ended the sandbox at its lifetime: its commands were killed, as our own limit
  // would have (lifetime_atom).
  if (st.agent_bye == proto::bye_reason::lifetime)
    for (auto& [seq, run] : st.running) run.killed = true;
  auto commands = std::move(st.agent_commands);
  st.agent_commands.clear();
  for (auto& [id, cmd] : commands) {
    agent_exit lost;
    lost.how = agent_protocol::end::lost;
    lost.code = 137;
    lost.detail = why;
    cmd.on_exit(lost);
  }
  if (st.now == phase::removing) return;
  if (st.info.status != sandbox_status::ready) {
    return fail_startup(self, make_error(corral_errc::sandbox_lost,
                                         "sandbox " + st.info.key + " lost its agent: " + why));
  }
  if (st.agent_bye == proto::bye_reason::lifetime)
    return begin_removal(self, sandbox_status::timed_out, "the sandbox reached its lifetime limit");
  if (st.agent_bye == proto::bye_reason::idle)
    return begin_removal(self, sandbox_status::removed, "idle limit reached (ended by its agent)");
  // Killed or stopped from outside: the engine's event (a monitor's mark) says which, if it
  // comes within a moment; otherwise the sandbox is lost.
  const std::string detail = st.agent_bye ? "the sandbox's agent ended it: " + st.agent_bye_detail
                                          : "the sandbox's agent went away: " + why;
  self->delayed_send(
      self, std::chrono::milliseconds(300), resume_atom_v, continuation{[self, detail] {
        begin_removal(self, sandbox_status::lost, detail);  // once: a mark's, or this
      }});
}

// The agent's idle limit is a backstop for when no corral process runs: later than the
// supervisor's pruning, which reports the sandbox as pruned while one does.
std::chrono::milliseconds agent_idle_limit(self_ptr self) {
  const auto& st = self->state;
  if (st.args.plan.idle_limit.count() <= 0) return std::chrono::milliseconds(0);
  return st.args.plan.idle_limit + 2 * st.args.cfg.prune_interval + std::chrono::seconds(5);
}

void agent_link_ready(self_ptr self);
void close_link_when_idle(self_ptr self);

// `n` bytes of a command's output are consumed: the agent may send that many more (credit
// frames go in batches, so most commands need none).
void give_credit(self_ptr self, uint32_t id, uint64_t n) {
  auto it = self->state.agent_commands.find(id);
  if (it == self->state.agent_commands.end()) return;  // ended meanwhile
  it->second.taken += n;
  if (it->second.taken >= agent_credit_batch) {
    send_to_agent(
        self,
        agent_protocol::writer(agent_protocol::frame::credit, id).u64(it->second.taken).finish());
    it->second.taken = 0;
  }
}
void refuse_claim(self_ptr self, const caf::error& err);
void become_ready(self_ptr self);
void with_agent(self_ptr self, std::function<void()> then,
                std::chrono::milliseconds patience = std::chrono::milliseconds(0));
void open_agent_link(self_ptr self, std::chrono::milliseconds patience);

// How often an adopter looks again at a sandbox renamed to its key but not bound yet (200 ms
// apart): its claimer binds it within milliseconds unless it died.
constexpr int max_bind_waits = 10;

// Binds the sandbox to our key and plan (the first configure wins: agent_protocol.hpp).
void send_configure(self_ptr self) {
  namespace proto = agent_protocol;
  auto& st = self->state;
  const auto& plan = st.args.plan;
  const auto& cfg = st.args.cfg;
  if (!plan.egress_hosts.empty() && !st.egress_open) {
    // The proxy's socket and the trust bundle are in place before the agent bridges to them.
    const auto problem =
        cfg.egress ? cfg.egress->open(cfg.policy.egress, plan.egress_hosts, plan.sandbox_id,
                                      plan.run_dir, cfg.agent_root_uid, cfg.agent_root_gid)
                   : std::string("this runtime has no egress proxy");
    if (!problem.empty())
      return fail_startup(self, make_error(corral_errc::egress_unavailable,
                                           "sandbox " + st.info.key + ": egress: " + problem));
    st.egress_open = true;
  }
  const auto [uid, gid] = numeric_user(plan.user);
  const int64_t deadline =
      plan.lifetime.count() > 0 ? st.info.created_ms + plan.lifetime.count() : 0;
  send_to_agent(self, proto::writer(proto::frame::configure, 0)
                          .str(plan.sandbox_id)
                          .str(st.info.key)
                          .i64(deadline)
                          .i64(agent_idle_limit(self).count())
                          .strs(plan.sandbox_env)
                          .strs(plan.main_command)
                          .u32(uid)
                          .u32(gid)
                          .strs(plan.command_caps)
                          .str(plan.spec_record)
                          .strs(plan.egress_hosts)
                          .finish());
}

// A sandbox bound with egress before this runtime knew it (a node's, adopted after its
// restart): its proxy socket is opened again here, for the hosts it was granted (the record
// beside the run directories; its agent's word, which a root sandbox user could forge, is
// only the hint that it had any) that the policy allows now: a host the policy dropped stays
// closed. Only a runtime that holds its name alone does this: in an embedded one, another live
// process of the name may be serving that socket (`corral run`'s own proxy), and replacing it
// would cut that process's commands off. Without a runtime serving it, a command's egress
// connections close at once.
void reopen_egress(self_ptr self, const std::vector<std::string>& said) {
  auto& st = self->state;
  const auto& cfg = st.args.cfg;
  if (said.empty() || st.egress_open || !cfg.egress || !cfg.exclusive_name ||
      st.args.plan.sandbox_id.empty())
    return;
  auto hosts = egress_service::granted_hosts(cfg.agent_run_root + "/" + st.args.plan.sandbox_id,
                                             st.args.plan.sandbox_id);
  std::vector<std::string> allowed;
  for (auto& h : hosts) {
    const auto& eg = cfg.policy.egress;
    if (!check_egress_pattern(h).empty()) continue;
    const auto covers = [&h](const std::string& p) { return egress_pattern_covers(p, h); };
    if (std::any_of(eg.allow.begin(), eg.allow.end(), covers) &&
        std::none_of(eg.deny.begin(), eg.deny.end(), covers))
      allowed.push_back(std::move(h));
  }
  if (allowed.empty()) return;
  const auto run_dir = cfg.agent_run_root + "/" + st.args.plan.sandbox_id;
  const auto problem = cfg.egress->open(cfg.policy.egress, allowed, st.args.plan.sandbox_id,
                                        run_dir, cfg.agent_root_uid, cfg.agent_root_gid);
  if (!problem.empty()) {
    if (cfg.warn) cfg.warn("sandbox " + st.info.key + ": egress not reopened: " + problem);
    return;
  }
  st.egress_open = true;
  st.args.plan.egress_hosts = std::move(allowed);
}

// The agent is bound already: to our key (a sandbox another process made or claimed, or our
// own from before a restart), or to another (the name was not this key's: never ours).
void bound_agent(self_ptr self, const std::string& key, int64_t deadline, const std::string& spec,
                 const std::vector<std::string>& egress_hosts) {
  auto& st = self->state;
  if (st.pool_member || st.cold_claim) {
    // A pool member (or a new sandbox before its claim) bound to a key is not ours: whoever
    // bound it holds it.
    st.pool_member = false;
    st.cold_claim = false;
    agents(self).close(st.link);
    st.link = 0;
    return refuse_claim(self, make_error(corral_errc::conflict,
                                         "a warm pool member was bound to a key outside the pool"));
  }
  if (st.args.adopt_unkeyed) {
    if (auto err = check_key(key)) return fail_startup(self, err);
    // The engine's record of the claim is the container's name, which nothing inside the
    // sandbox can change; a welcome (which a root sandbox user could forge by replacing the
    // socket) naming another key is not believed.
    if (st.container_name != claim_name(st.args.cfg.name, key)) {
      agents(self).close(st.link);
      st.link = 0;
      return refuse_claim(
          self, make_error(corral_errc::conflict, "container " + st.container_name +
                                                      " says it is bound to a key whose claim name "
                                                      "it does not have: left alone"));
    }
    st.args.key = key;
    st.info.key = key;
    // The supervisor holds it under this key next: with the spec its creator asked for.
    if (st.args.supervisor)
      caf::send_as(caf::actor_cast<caf::actor>(self), st.args.supervisor, update_atom_v, spec);
  } else if (key != st.info.key) {
    agents(self).close(st.link);
    st.link = 0;
    return refuse_claim(
        self, make_error(corral_errc::conflict, "sandbox " + st.info.key + ": container name " +
                                                    st.container_name +
                                                    " is held by a sandbox of another key"));
  }
  if (!spec.empty() && !st.args.plan.spec_record.empty() && st.shared_claim) {
    const auto differ =
        differing_fields(decode_spec_record(spec), decode_spec_record(st.args.plan.spec_record));
    if (!differ.empty()) {
      std::string fields;
      for (const auto& f : differ) fields += (fields.empty() ? "" : ", ") + f;
      agents(self).close(st.link);
      st.link = 0;
      return refuse_claim(
          self, make_error(corral_errc::conflict,
                           "sandbox " + st.info.key +
                               " exists with another spec; these fields differ: " + fields));
    }
  }
  if (!spec.empty()) st.args.plan.spec_record = spec;
  // Its lifetime runs from its claim, not from the pool member's create.
  if (deadline > 0 && st.args.plan.lifetime.count() > 0)
    st.info.created_ms = deadline - st.args.plan.lifetime.count();
  reopen_egress(self, egress_hosts);
  agent_link_ready(self);
}

// An adopted sandbox renamed to a key's name whose claimer died before it bound it (a pool
// member, or a cold create): back to the pool under a pool name if this runtime keeps its
// pool; otherwise removed by a runtime that holds its name alone, or left to its agent.
void return_to_pool(self_ptr self) {
  auto& st = self->state;
  st.args.adopt_unkeyed = false;
  if (st.args.pool_hash.empty()) {
    // This process holds the runtime's name alone (a node): the claimer died with the
    // process before, and nobody was answered with the sandbox. It goes.
    if (st.args.cfg.exclusive_name)
      return begin_removal(self, sandbox_status::removed,
                           "claimed by a process that died before it bound it");
    // Not ours to take: the process that keeps its pool takes it back, the next to ask for
    // its key binds it, or its agent ends it after its unclaimed limit.
    return refuse_claim(self, make_error(corral_errc::sandbox_lost,
                                         "a claimed pool member was never bound, and this "
                                         "runtime keeps no pool of its kind: left alone"));
  }
  const auto name = pool_member_name(st.args.plan.sandbox_id);
  if (st.container_name == name) {
    st.pool_member = true;
    return agent_link_ready(self);
  }
  engine(self).container_rename(
      st.info.container_id, name, back_to<void>(self, [self, name](const docker::result<void>& r) {
        if (!r) return fail_startup(self, from_engine(r.err(), "returning a sandbox to the pool"));
        self->state.container_name = name;
        self->state.pool_member = true;
        agent_link_ready(self);
      }));
}

void on_agent_frame(self_ptr self, uint8_t type, uint32_t id, std::string& payload) {
  namespace proto = agent_protocol;
  auto& st = self->state;
  proto::reader r(payload);
  switch (static_cast<proto::frame>(type)) {
    case proto::frame::welcome: {
      const uint32_t version = r.u32();
      const std::string sandbox_id = r.str();
      if (!r.ok() || version != proto::version) {
        agents(self).close(st.link);
        return agent_link_lost(self, "the agent speaks protocol " + std::to_string(version) +
                                         ", corral " + std::to_string(proto::version));
      }
      const std::string key = r.str();
      const int64_t bound_deadline = r.i64();
      (void)r.i64();  // idle limit
      const std::string bound_spec = r.str();
      for (uint32_t n = r.u32(), i = 0; i < n && r.ok(); ++i) r.u32(), r.i64(), r.str();
      auto bound_egress = r.strs();
      if (!r.ok()) {
        agents(self).close(st.link);
        return agent_link_lost(self, "the agent's welcome is malformed");
      }
      if (!key.empty()) return bound_agent(self, key, bound_deadline, bound_spec, bound_egress);
      // Bound at its claim, not before.
      if (st.pool_member || st.cold_claim) return agent_link_ready(self);
      if (st.args.adopt_unkeyed) return return_to_pool(self);
      if (st.shared_claim && ++st.bind_waits <= max_bind_waits) {
        // Another process renamed it to this key a moment ago and binds it next (with its
        // plan, which this one's spec must match): look again rather than bind it first. A
        // claimer that has not bound it within two seconds died, and left it to us.
        agents(self).close(st.link);
        st.link = 0;
        self->delayed_send(self, std::chrono::milliseconds(200), resume_atom_v,
                           continuation{[self] { open_agent_link(self, {}); }});
        return;
      }
      send_configure(self);
      return;
    }
    case proto::frame::pong:
      if (id == 0 && !st.link_ready) agent_link_ready(self);
      return;
    case proto::frame::output: {
      const auto stream = r.u8() == 2 ? output_stream::stderr_stream : output_stream::stdout_stream;
      std::string bytes = r.str();
      auto it = st.agent_commands.find(id);
      if (it == st.agent_commands.end() || !r.ok()) return;
      // Kept output is bounded by the caps: bytes only kept are consumed here and their
      // credit goes back at once (in batches); bytes passed on to a subscriber, once it has
      // them.
      const uint64_t n = bytes.size();
      if (!it->second.on_output(stream, bytes)) give_credit(self, id, n);
      return;
    }
    case proto::frame::exited: {
      agent_exit e;
      e.how = static_cast<proto::end>(r.u8());
      e.code = r.i32();
      e.signal = r.i32();
      e.totals[0] = r.u64();
      e.totals[1] = r.u64();
      e.truncated[0] = r.u8() != 0;
      e.truncated[1] = r.u8() != 0;
      e.oom = r.u8() != 0;
      e.detail = r.str();
      auto it = st.agent_commands.find(id);
      if (it == st.agent_commands.end()) return;
      auto cmd = std::move(it->second);
      st.agent_commands.erase(it);
      cmd.on_exit(e);
      close_link_when_idle(self);
      return;
    }
    case proto::frame::bye:
      st.agent_bye = static_cast<proto::bye_reason>(r.u8());
      st.agent_bye_detail = r.str();
      return;
    case proto::frame::refused: {
      std::string reason = r.str();
      if (id == 0 && !st.link_ready) {
        agents(self).close(st.link);
        st.link = 0;
        if (reason.find("bound to another key") != std::string::npos) {
          // Another process bound it first, to another key: it is theirs, not ours to remove.
          return refuse_claim(
              self, make_error(corral_errc::conflict, "sandbox " + st.info.key + ": container " +
                                                          st.container_name +
                                                          " was bound to another key first"));
        }
        return agent_link_lost(self, "the agent refused us: " + reason);
      }
      auto it = st.agent_commands.find(id);
      if (it == st.agent_commands.end()) return;
      auto cmd = std::move(it->second);
      st.agent_commands.erase(it);
      agent_exit e;
      e.how = proto::end::spawn_failed;
      e.code = 126;
      e.detail = std::move(reason);
      cmd.on_exit(e);
      return;
    }
    default:
      return;  // started, and frames of later versions we do not need
  }
}

// Runs `then` once the link to the sandbox's agent is up (welcomed, and configured if the
// sandbox is new), making it if there is none. `patience`: how long the agent's socket may
// take to appear (a container just started); later, a refused connection means it is dead.
void with_agent(self_ptr self, std::function<void()> then, std::chrono::milliseconds patience) {
  auto& st = self->state;
  if (st.link != 0 && st.link_ready) return then();
  st.link_waiters.push_back(std::move(then));
  if (st.link != 0) return;  // on its way
  open_agent_link(self, patience);
}

void open_agent_link(self_ptr self, std::chrono::milliseconds patience) {
  auto& st = self->state;
  caf::weak_actor_ptr weak = self->ctrl();
  agent_link_handlers h;
  h.on_frames = [weak, self](std::vector<agent_frame> frames) {
    if (auto strong = weak.lock())
      caf::anon_send(caf::actor_cast<caf::actor>(strong), resume_atom_v,
                     continuation{[self, frames = std::move(frames)]() mutable {
                       for (auto& f : frames) {
                         // A frame may end the link (a refused hello): the rest is moot.
                         if (self->state.link == 0) return;
                         on_agent_frame(self, f.type, f.id, f.payload);
                       }
                     }});
  };
  const auto link_id = std::make_shared<agent_hub::link_id>(0);
  h.on_closed = [weak, self, link_id](std::string why) {
    if (auto strong = weak.lock())
      caf::anon_send(caf::actor_cast<caf::actor>(strong), resume_atom_v,
                     continuation{[self, link_id, why = std::move(why)] {
                       // Only the current link's end counts (not one closed when idle).
                       if (self->state.link == *link_id) agent_link_lost(self, why);
                     }});
  };
  st.link = agents(self).open(agent_socket(self), patience, std::move(h));
  *link_id = st.link;
}

void agent_link_ready(self_ptr self) {
  auto& st = self->state;
  st.link_ready = true;
  auto waiters = std::move(st.link_waiters);
  st.link_waiters.clear();
  for (auto& w : waiters) w();
  close_link_when_idle(self);
}

// Closes the link once no command has used it for a second (checked every second).
void close_link_when_idle(self_ptr self) {
  auto& st = self->state;
  if (st.idle_check_pending || st.link == 0 || !st.agent_commands.empty()) return;
  st.idle_check_pending = true;
  const auto uses = st.link_uses;
  self->delayed_send(self, std::chrono::seconds(1), resume_atom_v, continuation{[self, uses] {
                       auto& st = self->state;
                       st.idle_check_pending = false;
                       if (st.link == 0 || !st.agent_commands.empty() || !st.link_ready) return;
                       if (st.link_uses != uses) return close_link_when_idle(self);
                       agents(self).close(st.link);
                       st.link = 0;
                       st.link_ready = false;
                     }});
}

// Starts one command in the agent; its output and end go to `cmd`.
uint32_t agent_start(self_ptr self, const std::vector<std::string>& argv,
                     const std::vector<std::string>& env, const std::string& workdir,
                     std::chrono::milliseconds timeout, uint64_t max_stdout, uint64_t max_stderr,
                     const std::string* stdin_data, agent_command cmd) {
  namespace proto = agent_protocol;
  auto& st = self->state;
  const uint32_t id = st.next_agent_id++;
  const auto [uid, gid] = numeric_user(st.args.plan.user);
  st.agent_commands.emplace(id, std::move(cmd));
  ++st.link_uses;
  std::vector<std::string> frames;
  frames.push_back(proto::writer(proto::frame::start, id)
                       .strs(argv)
                       .strs(env)
                       .str(workdir)
                       .u32(uid)
                       .u32(gid)
                       .i64(timeout.count())
                       .u64(max_stdout)
                       .u64(max_stderr)
                       .u8(stdin_data ? 1 : 0)
                       .u64(agent_window)
                       .finish());
  if (stdin_data) {
    constexpr std::size_t piece = 1 << 20;
    for (std::size_t at = 0; at < stdin_data->size(); at += piece)
      frames.push_back(proto::writer(proto::frame::stdin_data, id)
                           .str(std::string_view(*stdin_data).substr(at, piece))
                           .finish());
    frames.push_back(proto::writer(proto::frame::stdin_close, id).finish());
  }
  // Should the link fail, the command's end (lost) comes from agent_link_lost.
  with_agent(self, [self, frames = std::move(frames)]() mutable {
    for (auto& f : frames) send_to_agent(self, std::move(f));
  });
  return id;
}

void close_agent_link(self_ptr self) {
  auto& st = self->state;
  if (st.link != 0) agents(self).close(st.link);
  st.link = 0;
  st.link_ready = false;
  st.link_waiters.clear();
  // Their ends will not come: answered as the sandbox's end (answer_callers).
  st.agent_commands.clear();
}

void agent_kill(self_ptr self, uint32_t id) {
  send_to_agent(self, agent_protocol::writer(agent_protocol::frame::signal, id).u32(9).finish());
}

// -- lifecycle: create, start, setup, ready ------------------------------------------------

void become_ready(self_ptr self) {
  auto& st = self->state;
  if (!enter(self, st.pool_member ? phase::pooled : phase::ready)) return;
  st.info.status = sandbox_status::ready;
  st.info.last_used_ms = now_ms();
  for (auto& rp : st.ready_waiters) rp.deliver(st.info);
  st.ready_waiters.clear();
  publish(self);
  start_pending(self);
}

// The setup command without the agent (a docker exec), one handler per step: created,
// ran (its output), its exit code read.
void on_setup_exit_code(self_ptr self, const std::string& stderr_text,
                        docker::result<docker::exec_inspect_response> ins) {
  if (!ins)
    return fail_startup(self, from_engine(ins.err(), "reading the setup command's exit code"));
  const auto code = ins->exit_code.value_or(-1);
  if (code != 0) {
    return fail_startup(
        self, make_error(corral_errc::invalid_request,
                         "setup command exited " + std::to_string(code) +
                             (stderr_text.empty() ? "" : ": " + stderr_text.substr(0, 500))));
  }
  become_ready(self);
}

void on_setup_ran(self_ptr self, const std::string& exec_id,
                  docker::result<docker::exec_output> out) {
  if (!out) return fail_startup(self, from_engine(out.err(), "running the setup command"));
  engine(self).exec_inspect(exec_id,
                            back_to<docker::exec_inspect_response>(
                                self, [self, stderr_text = out->stderr_data.data](auto ins) {
                                  on_setup_exit_code(self, stderr_text, std::move(ins));
                                }));
}

void on_setup_created(self_ptr self, docker::result<docker::exec_create_response> created) {
  if (!created) return fail_startup(self, from_engine(created.err(), "creating the setup command"));
  docker::exec_start_options options;
  options.timeout = self->state.args.plan.exec_timeout;
  options.max_stdout = std::size_t{64} * 1024;
  options.max_stderr = std::size_t{64} * 1024;
  engine(self).exec_start(created->id, options,
                          back_to<docker::exec_output>(self, [self, id = created->id](auto out) {
                            on_setup_ran(self, id, std::move(out));
                          }));
}

void run_setup(self_ptr self) {
  auto& st = self->state;
  if (moot(self)) return;  // released while the agent link or the workspace check was made
  if (st.args.plan.setup_command.empty()) return become_ready(self);
  if (st.args.plan.agent) {
    auto errors = std::make_shared<std::string>();
    agent_command cmd;
    cmd.on_output = [errors](output_stream stream, std::string& bytes) {
      if (stream == output_stream::stderr_stream && errors->size() < std::size_t{64} * 1024)
        *errors += bytes;
      return false;
    };
    cmd.on_exit = [self, errors](agent_exit& e) {
      if (e.how == agent_protocol::end::lost) return;  // the link's end says it
      if (e.code != 0 || e.how != agent_protocol::end::exited) {
        const std::string why = !e.detail.empty() ? e.detail : errors->substr(0, 500);
        return fail_startup(self, make_error(corral_errc::invalid_request,
                                             "setup command exited " + std::to_string(e.code) +
                                                 (why.empty() ? "" : ": " + why)));
      }
      become_ready(self);
    };
    agent_start(self, st.args.plan.setup_command, {}, {}, st.args.plan.exec_timeout,
                uint64_t{64} * 1024, uint64_t{64} * 1024, nullptr, std::move(cmd));
    return;
  }
  docker::exec_create_request req;
  req.cmd = st.args.plan.setup_command;
  req.user = st.args.plan.user;
  engine(self).exec_create(st.info.container_id, req,
                           back_to<docker::exec_create_response>(self, [self](auto created) {
                             on_setup_created(self, std::move(created));
                           }));
}

// The engine resolved the workspace path again at start: make sure it mounted the directory
// the policy checked (a path swapped for a link or another directory in between would not be),
// before the sandbox is claimed and bound (so before its `command`, the setup command or any
// exec runs). Anything else removes the sandbox. Then `next`.
void verify_workspace(self_ptr self, std::function<void()> next) {
  auto& st = self->state;
  if (st.args.plan.workspace.container_path.empty()) return next();
  engine(self).container_inspect(
      st.info.container_id,
      back_to<docker::container_inspect_response>(
          self,
          [self, next = std::move(next)](docker::result<docker::container_inspect_response> r) {
            if (!r)
              return fail_startup(self, from_engine(r.err(), "inspecting the started sandbox"));
            if (moot(self)) return;
            // A quick stat of /proc/<pid>/root/...: fine in a handler.
            if (auto err = verify_workspace_mount(self->state.args.plan.workspace, r->state.pid))
              return fail_startup(self, err);
            next();
          }));
}

void claim_by_rename(self_ptr self);

void start_container(self_ptr self) {
  auto& st = self->state;
  if (!enter(self, phase::starting)) return;
  st.info.status = sandbox_status::starting;
  publish(self);
  engine(self).container_start(
      st.info.container_id,
      back_to<docker::change_outcome>(
          self, [self](const docker::result<docker::change_outcome>& r) {
            if (!r) return fail_startup(self, from_engine(r.err(), "starting the sandbox"));
            if (!enter(self, phase::setting_up)) return;
            if (self->state.pool_member)
              return with_agent(
                  self, [self] { become_ready(self); }, std::chrono::seconds(10));
            if (self->state.cold_claim)
              return with_agent(
                  self, [self] { verify_workspace(self, [self] { claim_by_rename(self); }); },
                  std::chrono::seconds(10));
            if (self->state.args.plan.agent)
              return with_agent(
                  self, [self] { verify_workspace(self, [self] { run_setup(self); }); },
                  std::chrono::seconds(10));
            verify_workspace(self, [self] { run_setup(self); });
          }));
}

void create_container(self_ptr self);
void refuse_claim(self_ptr self, const caf::error& err);

// The most files and directories of a workspace given an ACL entry for a remapped sandbox user.
constexpr uint64_t max_workspace_entries = 100'000;
// The uids of a sandbox an engine remaps (dockremap's range: 65,536 from its first).
constexpr uint32_t remapped_range = 65'536;

// How long a cold sandbox's agent waits for its claim before it ends the sandbox: its maker
// renames and binds it within milliseconds of its start, unless it died.
constexpr std::chrono::milliseconds cold_unclaimed_limit{120'000};

// The name's holder could not be inspected: gone since (create again), or an engine failure.
// Not inlined: GCC 12 at -O2 then sees the variant as maybe uninitialised (a false positive).
[[gnu::noinline]] void claim_unseen(self_ptr self, const docker::error& err) {
  if (err.code == docker::errc::not_found) return create_container(self);
  refuse_claim(self, from_engine(err, "looking at the key's sandbox"));
}

// How long a name held by a container that is being created, started or removed elsewhere
// is waited for: polls of 200 ms, 30 s in all; then its creator is taken to have died.
constexpr int max_claim_attempts = 150;
constexpr auto claim_poll = std::chrono::milliseconds(200);

void claim_again_later(self_ptr self, std::function<void()> step) {
  self->delayed_send(self, claim_poll, resume_atom_v, continuation{std::move(step)});
}

// Fails without touching the container that holds the name: it is someone else's.
void refuse_claim(self_ptr self, const caf::error& err) {
  self->state.info.container_id.clear();
  // Nor its run directory (ours, if made, goes with the minute's sweep).
  if (!self->state.args.adopt_container_id.empty()) self->state.args.plan.run_dir.clear();
  fail_startup(self, err);
}

void claim_taken(self_ptr self);
void adopt_container(self_ptr self);

// The name is held by a container that is no longer of use (exited, dead, or left in
// `created` by a creator that died): it goes, and the create is tried again.
void clear_claim(self_ptr self, const std::string& holder) {
  engine(self).container_remove(
      holder, true, back_to<void>(self, [self](const docker::result<void>& r) {
        // Removed, or its removal under way elsewhere (409), or the
        // engine failed it (a busy root filesystem, say): the next look
        // at the name decides again, within the claim's bounded attempts.
        if (!r && r.err().code != docker::errc::not_found) {
          if (++self->state.clear_attempts > 6) {
            return refuse_claim(self, from_engine(r.err(), "removing a dead sandbox of this key"));
          }
          return claim_again_later(self, [self] { claim_taken(self); });
        }
        claim_again_later(self, [self] { create_container(self); });
      }));
}

// The create met a container of the key's name: adopt it if it is a live sandbox of this key
// (another process won the race), wait while it is being created, started or removed, and
// clear it if it is dead.
void claim_taken(self_ptr self) {
  auto& st = self->state;
  if (!enter(self, phase::creating)) return;
  if (++st.claim_attempts > max_claim_attempts) {
    return refuse_claim(
        self, make_error(corral_errc::timeout, "sandbox " + st.info.key + ": its container name " +
                                                   st.container_name + " stayed taken for 30 s"));
  }
  engine(self).container_inspect(
      st.container_name,
      back_to<docker::container_inspect_response>(
          self, [self](docker::result<docker::container_inspect_response> r) {
            auto& st = self->state;
            if (!r) return claim_unseen(self, r.err());
            auto label = [&](const char* name) {
              auto it = r->labels.find(name);
              return it == r->labels.end() ? std::string() : it->second;
            };
            // A sandbox claimed by rename (a pool member, or a cold one made with the agent)
            // carries no key label: its agent's welcome says whose it is (bound_agent), or it
            // is bound by us if its claimer died before it could.
            const bool agent_bound = label(label_key).empty() && !label(label_sandbox_id).empty();
            if (label(label_runtime) != st.args.cfg.name ||
                (!agent_bound && label(label_key) != st.info.key)) {
              return refuse_claim(
                  self, make_error(corral_errc::conflict,
                                   "sandbox " + st.info.key + ": container name " +
                                       st.container_name + " is held by container " +
                                       r->id.substr(0, 12) + ", which is not this key's"));
            }
            const auto& state = r->state;
            // This actor's own create went through and only its answer was lost (or the
            // client sent it again on a fresh connection): the holder is ours to start.
            if (!st.claim_nonce.empty() && label(label_claim) == st.claim_nonce) {
              if (state.status == "exited" || state.status == "dead")
                return clear_claim(self, r->id);
              st.info.container_id = r->id;
              return start_container(self);
            }
            if (state.running && !state.paused && !state.restarting) {
              // Never another caller's spec: the same rule as for a key this process holds.
              const auto differ = differing_fields(decode_spec_record(label(label_spec)),
                                                   decode_spec_record(st.args.plan.spec_record));
              if (!differ.empty() && !label(label_spec).empty()) {
                std::string fields;
                for (const auto& f : differ) fields += (fields.empty() ? "" : ", ") + f;
                return refuse_claim(self, make_error(corral_errc::conflict,
                                                     "sandbox " + st.info.key +
                                                         " exists with another spec; these fields "
                                                         "differ: " +
                                                         fields));
              }
              st.shared_claim = true;
              st.args.adopt_container_id = r->id;
              return adopt_container(self);
            }
            if (state.status == "exited" || state.status == "dead" ||
                (state.status == "created" && st.claim_attempts >= max_claim_attempts / 2)) {
              return clear_claim(self, r->id);
            }
            // created, restarting, removing: someone is at work on it.
            claim_again_later(self, [self] { claim_taken(self); });
          }));
}

// On an engine that remaps user namespaces the sandbox's user is a host uid no host user has,
// which the workspace's modes do not name: an ACL entry for it is set on the workspace tree
// first (actors/workspace_access.hpp), on a thread of its own (a walk of a whole tree).
bool needs_workspace_grant(self_ptr self) {
  const auto& st = self->state;
  return !st.workspace_granted && !st.args.plan.workspace.container_path.empty() &&
         st.args.plan.agent && st.args.cfg.agent_root_uid != 0;
}

void grant_workspace(self_ptr self) {
  auto& st = self->state;
  const auto& ws = st.args.plan.workspace;
  // The agent (the sandbox's root) enters it as the container's working directory; the
  // sandbox's user reads it, and writes it if it is rw.
  const uint32_t uid = numeric_user(st.args.plan.user).first;
  if (uid >= remapped_range) {
    st.workspace_granted = true;
    return fail_startup(
        self, make_error(corral_errc::policy_violation,
                         "user " + st.args.plan.user +
                             ": the engine remaps only uids 0-65535 of a sandbox; a workspace "
                             "cannot be opened to uid " +
                             std::to_string(uid)));
  }
  std::vector<workspace_user> users{{st.args.cfg.agent_root_uid, false},
                                    {st.args.cfg.agent_root_uid + uid, ws.writable}};
  caf::weak_actor_ptr weak = self->ctrl();
  std::thread([weak, self, root = ws.host_path, device = ws.device, inode = ws.inode,
               users = std::move(users)] {
    workspace_grant done;
    auto failed = grant_workspace_access(root, device, inode, users, max_workspace_entries, done);
    auto strong = weak.lock();
    if (!strong) return;
    caf::anon_send(
        caf::actor_cast<caf::actor>(strong), resume_atom_v,
        continuation{[self, failed = std::move(failed), done, root] {
          auto& st = self->state;
          st.workspace_granted = true;
          if (failed)
            return fail_startup(self, make_error(corral_errc::policy_violation,
                                                 "workspace " + root +
                                                     ": the sandbox's user (a remapped host uid) "
                                                     "could not be given access: " +
                                                     *failed));
          if (done.truncated)
            st.info.warnings.push_back("workspace: only the first " + std::to_string(done.entries) +
                                       " files and directories were opened to the sandbox's user");
          create_container(self);
        }});
  }).detach();
}

void create_container(self_ptr self) {
  auto& st = self->state;
  if (!enter(self, phase::creating)) return;
  if (needs_workspace_grant(self)) return grant_workspace(self);
  auto request = st.args.plan.create;
  request.name = claim_name(st.args.cfg.name, st.args.key);
  // With the agent, every sandbox is claimed the same way: made unclaimed (a pool member, or
  // a cold create), then renamed to the key's name and bound through its agent.
  st.cold_claim = st.args.plan.agent && !st.pool_member;
  if (st.cold_claim && !st.name_looked_at) {
    // A key that has its sandbox already (another process's) is adopted without a wasted
    // create: one look at the name first (claim_taken; if nobody holds it, back here).
    st.name_looked_at = true;
    st.cold_claim = false;
    st.container_name = request.name;
    return claim_taken(self);
  }
  if (st.pool_member || st.cold_claim) {
    // Nobody's yet: a name of its own, and none of the labels a claim binds (its agent holds
    // those).
    request.name = st.pool_member ? pool_member_name(st.args.plan.sandbox_id)
                                  : unclaimed_name(st.args.plan.sandbox_id);
    for (auto it = request.labels.begin(); it != request.labels.end();)
      it = is_claim_label(it->first) && it->first != label_sandbox_id &&
                   it->first != label_created_at
               ? request.labels.erase(it)
               : std::next(it);
    if (st.pool_member) request.labels[label_pool] = st.args.pool_hash;
    // Its agent ends it if nobody binds it in time (its maker died before the claim).
    const auto unclaimed_limit = st.pool_member ? st.args.unclaimed_limit : cold_unclaimed_limit;
    if (unclaimed_limit.count() > 0) {
      request.cmd.push_back("--unclaimed-limit");
      request.cmd.push_back(std::to_string(unclaimed_limit.count()));
    }
  }
  if (st.claim_nonce.empty()) {
    st.claim_nonce = random_hex64();
  }
  request.labels[label_claim] = st.claim_nonce;
  // Its age counts from its create (another process spares a young one), not from its plan.
  request.labels[label_created_at] = std::to_string(now_ms());
  st.container_name = request.name;
  if (st.args.plan.agent) {
    if (auto err = make_run_dir(self)) return fail_startup(self, err);
  }
  if (st.args.cfg.before_create_for_tests) st.args.cfg.before_create_for_tests(st.args.plan);
  engine(self).container_create(
      request, back_to<docker::container_create_response>(
                   self, [self](docker::result<docker::container_create_response> r) {
                     if (!r && r.err().code == docker::errc::conflict) return claim_taken(self);
                     if (!r) {
                       // The engine may have created it and lost only its answer: remove by name.
                       if (r.err().code != docker::errc::not_found &&
                           r.err().code != docker::errc::invalid_request) {
                         self->state.info.container_id = self->state.container_name;
                       }
                       const auto doing = r.err().code == docker::errc::not_found
                                              ? "creating the sandbox (is the image " +
                                                    self->state.args.plan.create.image + " there?)"
                                              : std::string("creating the sandbox");
                       return fail_startup(self, from_engine(r.err(), doing));
                     }
                     self->state.info.container_id = r->id;
                     start_container(self);
                   }));
}

// An adopted sandbox may still run commands of the run that left it (a node killed while
// they ran): nobody owns them any more. Every process carrying a CORRAL_EXEC tag is stopped
// before the sandbox takes commands (found by tests/crash_trial.sh).
void stop_orphans(self_ptr self) {
  auto& st = self->state;
  docker::exec_create_request killer;
  killer.user = st.args.plan.user;
  killer.attach_stdout = false;
  killer.attach_stderr = false;
  killer.cmd = {"/bin/sh", "-c",
                "for round in 1 2 3; do p=; for d in /proc/[0-9]*; do "
                "if tr '\\0' '\\n' < \"$d/environ\" 2>/dev/null | grep -q '^CORRAL_EXEC='; then "
                "p=\"$p ${d#/proc/}\"; fi; done; [ -z \"$p\" ] && break; "
                "kill -STOP $p 2>/dev/null; kill -KILL $p 2>/dev/null; done",
                "corral-adopt"};
  engine(self).exec_create(
      st.info.container_id, killer,
      back_to<docker::exec_create_response>(
          self, [self](docker::result<docker::exec_create_response> created) {
            if (!created) {
              return fail_startup(
                  self, from_engine(created.err(), "stopping the commands a previous run left"));
            }
            engine(self).exec_start(
                created->id, {}, back_to<docker::exec_output>(self, [self](auto done) {
                  if (!done) {
                    return fail_startup(
                        self, from_engine(done.err(), "stopping the commands a previous run left"));
                  }
                  become_ready(self);
                }));
          }));
}

void adopt_container(self_ptr self) {
  auto& st = self->state;
  if (!enter(self, phase::adopting)) return;
  st.info.container_id = st.args.adopt_container_id;
  engine(self).container_inspect(
      st.info.container_id,
      back_to<docker::container_inspect_response>(
          self, [self](docker::result<docker::container_inspect_response> r) {
            if (!r) return fail_startup(self, from_engine(r.err(), "adopting the sandbox"));
            if (!r->state.running || r->state.paused) {
              return fail_startup(
                  self,
                  make_error(corral_errc::sandbox_lost,
                             "found container " + r->id.substr(0, 12) + " " + r->state.status +
                                 ", not running: removed instead of adopted"));
            }
            auto& st = self->state;
            if (auto it = r->labels.find(label_created_at); it != r->labels.end()) {
              st.info.created_ms = std::strtoll(it->second.c_str(), nullptr, 10);
            }
            if (!r->name.empty()) st.container_name = r->name.substr(r->name[0] == '/' ? 1 : 0);
            if (auto id = r->labels.find(label_sandbox_id); id != r->labels.end()) {
              // Made with the agent: link to it. A previous process's commands ended when
              // its connections closed (the agent kills them), so none is left to stop here.
              if (!st.args.agents) {
                return fail_startup(
                    self,
                    make_error(corral_errc::sandbox_lost,
                               "sandbox " + st.info.key +
                                   " runs corral's agent, and this runtime has none "
                                   "(runtime_config.agent_path): removed instead of adopted"));
              }
              auto& plan = st.args.plan;
              plan.agent = true;
              plan.sandbox_id = id->second;
              plan.run_dir = st.args.cfg.agent_run_root + "/" + plan.sandbox_id;
              st.info.image = r->config_image;
              st.info.memory_bytes = r->host.memory;
              st.info.nano_cpus = r->host.nano_cpus;
              st.info.pids_limit = r->host.pids_limit;
              return with_agent(
                  self, [self] { become_ready(self); }, std::chrono::seconds(10));
            }
            st.args.plan.user = r->user.empty() ? st.args.plan.user : r->user;
            st.info.image = r->config_image;
            st.info.memory_bytes = r->host.memory;
            st.info.nano_cpus = r->host.nano_cpus;
            st.info.pids_limit = r->host.pids_limit;
            // Another live process's sandbox: its commands are running, not orphaned.
            if (st.shared_claim) return become_ready(self);
            stop_orphans(self);
          }));
}

// -- the warm pool -------------------------------------------------------------------------
//
// Every sandbox made with the agent is claimed one way: it is made unclaimed, like any
// sandbox of its spec minus the claim (a name of its own, no key labels, its agent started and
// unbound), then renamed to its key's claim name and bound. A pool member waits in between
// (pool_member_name, until an acquire claims it); a cold create claims itself as soon as its
// agent is up (unclaimed_name, after one look at the key's name: a key another process holds
// is adopted without a create). The claim:
//
//   unclaimed --claim--> rename to the key's claim name --> configure (bind) --> setup --> ready
//                             | 409: the key has a container        | refused: another key
//                             v                                     v    bound it first
//                        this one is removed; the holder        refuse_claim (theirs)
//                        is adopted as any (claim_taken)
//                             | 404: the pool member is gone
//                             v
//                        a cold create under the key (unclaimed, then this claim)
//
// The rename is the claim record: the engine's name uniqueness decides between processes and
// survives restarts; the first configure decides between two binders of one name (an adopter
// that meets a renamed, unbound sandbox waits two seconds for its claimer to bind it). A
// claimer that dies after the rename leaves a sandbox under the key's name, unbound: the next
// process that asks for the key binds it (with_agent), a restarted runtime takes it back to
// its pool, or removes it if it holds its name alone (a node), or leaves it to its agent's
// unclaimed limit.

void claim_pooled(self_ptr self, const pool_claim& claim) {
  auto& st = self->state;
  if (st.now != phase::pooled) {
    // Not claimable any more (it died meanwhile): the acquire that follows is told so
    // (startup_failure, "try again"), and the supervisor tries a fresh sandbox.
    st.info.key = claim.key;
    if (!is_terminal(st.info.status)) st.info.status = sandbox_status::starting;
    st.startup_failure =
        make_error(corral_errc::sandbox_lost, "sandbox " + claim.key +
                                                  ": the warm sandbox it was given "
                                                  "ended before its claim; try again");
    begin_removal(self, sandbox_status::lost, "the pool member was not ready");
    return;
  }
  st.now = phase::setting_up;
  st.pool_member = false;
  const auto sandbox_id = st.args.plan.sandbox_id;
  st.args.key = claim.key;
  st.args.plan = *claim.plan;
  use_agent(st.args.plan, st.args.cfg, sandbox_id);
  st.info.key = claim.key;
  st.info.created_ms = now_ms();
  st.info.last_used_ms = st.info.created_ms;
  st.info.warnings = st.args.plan.warnings;
  st.info.status = sandbox_status::starting;
  if (st.args.plan.lifetime.count() > 0)
    self->delayed_send(self, st.args.plan.lifetime, lifetime_atom_v);
  publish(self);
  claim_by_rename(self);
}

// The claim of a sandbox made unclaimed (a pool member, or a cold create after its start):
// the rename is the claim record, then its agent is bound (with_agent's configure).
void claim_by_rename(self_ptr self) {
  auto& st = self->state;
  close_agent_link(self);  // the next link's welcome finds it unbound and binds it
  const auto name = claim_name(st.args.cfg.name, st.args.key);
  engine(self).container_rename(
      st.info.container_id, name, back_to<void>(self, [self, name](const docker::result<void>& r) {
        auto& st = self->state;
        if (moot(self)) return;
        if (!r && r.err().code == docker::errc::conflict) {
          // The key has a container already (another process's): this one goes, then the
          // holder is looked at as any create that met it would. The removal is awaited: a
          // process that adopts the holder and exits at once leaves nothing behind.
          const auto loser = st.info.container_id;
          st.info.container_id.clear();
          st.cold_claim = false;
          // Said before the removal: its kill and destroy events are not this key's.
          publish(self);
          st.container_name = name;
          engine(self).container_remove(loser, true,
                                        back_to<void>(self, [self](const docker::result<void>&) {
                                          // Failed or not, it is not this key's: a later runtime's
                                          // adoption removes a container left under an unclaimed
                                          // name.
                                          remove_run_dir(self);
                                          claim_taken(self);
                                        }));
          return;
        }
        if (!r && r.err().code == docker::errc::not_found && !st.cold_claim) {
          // The pool member is gone: a cold create under the key.
          st.info.container_id.clear();
          return create_container(self);
        }
        if (!r)
          return fail_startup(self,
                              from_engine(r.err(), st.cold_claim ? "claiming the new sandbox's name"
                                                                 : "claiming a warm sandbox"));
        st.cold_claim = false;
        st.container_name = name;
        if (st.args.cfg.after_claim_rename_for_tests) st.args.cfg.after_claim_rename_for_tests();
        // A cold sandbox's workspace was verified before its claim; a pool member has none.
        with_agent(
            self, [self] { run_setup(self); }, std::chrono::seconds(10));
      }));
}

// -- execs ---------------------------------------------------------------------------------

exec_result base_result(running_exec& run, docker::exec_output& out) {
  exec_result r;
  r.stdout_bytes = out.stdout_data.total;
  r.stderr_bytes = out.stderr_data.total;
  r.stdout_truncated = out.stdout_data.truncated;
  r.stderr_truncated = out.stderr_data.truncated;
  r.stdout_data = std::move(out.stdout_data.data);
  r.stderr_data = std::move(out.stderr_data.data);
  r.warnings = run.plan.warnings;
  return r;
}

// Kills the processes of execs cut off by an engine restart (live-restore keeps the sandbox
// and them running); retried each second until the engine answers, for a minute at most, then
// the sandbox goes rather than keep commands nobody owns (tests/engine_restart_trial.sh).
void kill_cut_execs(self_ptr self) {
  auto& st = self->state;
  if (st.cut_tags.empty() || st.now == phase::removing || st.engine_waits > 0) return;
  auto retry = [self] {
    auto& st = self->state;
    if (++st.cut_attempts > 60) {
      st.cut_tags.clear();
      return begin_removal(self, sandbox_status::killed,
                           "commands cut off by an engine restart could not be stopped");
    }
    self->delayed_send(self, std::chrono::seconds(1), resume_atom_v,
                       continuation{[self] { kill_cut_execs(self); }});
  };
  docker::exec_create_request killer;
  killer.user = st.args.plan.user;
  killer.attach_stdout = false;
  killer.attach_stderr = false;
  killer.cmd = {"/bin/sh", "-c",
                "for round in 1 2 3; do p=; for d in /proc/[0-9]*; do for t in \"$@\"; do "
                "if tr '\\0' '\\n' < \"$d/environ\" 2>/dev/null | grep -qx \"CORRAL_EXEC=$t\"; "
                "then p=\"$p ${d#/proc/}\"; fi; done; done; [ -z \"$p\" ] && break; "
                "kill -STOP $p 2>/dev/null; kill -KILL $p 2>/dev/null; done",
                "corral-kill"};
  auto tags = st.cut_tags;
  killer.cmd.insert(killer.cmd.end(), tags.begin(), tags.end());
  engine(self).exec_create(
      st.info.container_id, killer,
      back_to<docker::exec_create_response>(
          self, [self, retry, tags](docker::result<docker::exec_create_response> created) {
            if (!created) return retry();
            engine(self).exec_start(
                created->id, {}, back_to<docker::exec_output>(self, [self, retry, tags](auto done) {
                  if (!done) return retry();
                  auto& cut = self->state.cut_tags;
                  for (const auto& t : tags)
                    cut.erase(std::remove(cut.begin(), cut.end(), t), cut.end());
                  self->state.cut_attempts = 0;
                }));
          }));
}

// An exec whose end we did not see: its processes go once the engine answers.
void forget_cut_exec(self_ptr self, const std::string& tag) {
  auto& st = self->state;
  st.cut_tags.push_back(tag);
  if (st.cut_tags.size() == 1) kill_cut_execs(self);
}

// Every exec ends here, whatever ended it: its caller gets the result, or `failure`; the
// monitor forgets it; then a release waiting for the sandbox's commands goes on, or the next
// queued command starts. (Once written per cause, the copies drifted: one forgot the release.)
void end_exec(self_ptr self, uint64_t seq, caf::error failure) {
  auto& st = self->state;
  auto it = st.running.find(seq);
  if (it == st.running.end()) return;
  auto& run = it->second;
  if (failure) {
    run.rp.deliver(std::move(failure));
  } else {
    run.result.duration = std::chrono::duration_cast<caf::timespan>(steady::now() - run.started);
    run.rp.deliver(run.result);
    st.info.execs_run++;
  }
  if (st.monitor && run.agent_id == 0) self->send(st.monitor, unwatch_atom_v, seq);
  st.running.erase(it);
  st.info.last_used_ms = now_ms();
  publish(self);
  if (st.now == phase::draining && st.running.empty())
    return begin_removal(self, sandbox_status::removed, {});
  start_pending(self);
}

void on_exit_code(self_ptr self, uint64_t seq, docker::result<docker::exec_inspect_response> ins) {
  auto& st = self->state;
  auto it = st.running.find(seq);
  if (it == st.running.end()) return;
  auto& run = it->second;
  if (run.timed_out) {
    run.result.end = exec_end::timed_out;
    run.result.exit_code = 124;
    return end_exec(self, seq, {});
  }
  if (run.killed) {
    run.result.end = exec_end::killed;
    run.result.exit_code = 137;
    return end_exec(self, seq, {});
  }
  if (!ins || !ins->exit_code) {
    // Without an exit code there is no result to give: say why instead of inventing one.
    caf::error err = !ins ? from_engine(ins.err(), "reading the command's exit code")
                          : make_error(corral_errc::engine_error,
                                       "the engine reports no exit code for the command");
    if (!ins && ins.err().code == docker::errc::not_found) {
      err = make_error(corral_errc::sandbox_lost,
                       "sandbox " + st.info.key + " lost the command: " + ins.err().describe());
    }
    if (!ins) forget_cut_exec(self, run.tag);
    return end_exec(self, seq, std::move(err));
  }
  run.result.exit_code = static_cast<int32_t>(*ins->exit_code);
  run.result.end = exec_end::exited;
  // The engine says 126 for a command it could not start; like `docker run`, a missing
  // command is 127.
  auto says = [&run](const char* text) {
    return run.result.stdout_data.find(text) != std::string::npos ||
           run.result.stderr_data.find(text) != std::string::npos;
  };
  // Only a command that is not there is 127: runc names it (`exec: "x": ...`). The same words
  // about a namespace path (`lstat /proc/N/ns/ipc: no such file or directory`) mean the
  // container's init is gone: that is the dying-container case below.
  if (run.result.exit_code == 126 && (says("executable file not found") ||
                                      (says("no such file or directory") && says("exec: \"")))) {
    run.result.exit_code = 127;
  } else if (run.result.exit_code == 126) {
    // The engine could not start it. A dying container (killed from outside) makes the engine
    // say so in many ways ("task ... not found", runc's "write init-p: broken pipe", "is not
    // running"): ask the engine whether the container still runs; if not, the command never
    // ran and the sandbox is lost.
    return engine(self).container_inspect(
        st.info.container_id,
        back_to<docker::container_inspect_response>(
            self, [self, seq](docker::result<docker::container_inspect_response> r) {
              auto& st = self->state;
              auto it = st.running.find(seq);
              if (it == st.running.end()) return;
              if (!r || !r->state.running) {
                it->second.result.end = exec_end::sandbox_lost;
                it->second.result.exit_code = 137;
              }
              end_exec(self, seq, {});
            }));
  }
  if (run.result.exit_code == 137) {
    // Killed by a signal we did not send: the engine's oom event may trail the exit a little.
    return self->delayed_send(self, std::chrono::milliseconds(300), finalize_atom_v, seq);
  }
  end_exec(self, seq, {});
}

void on_stream_end(self_ptr self, uint64_t seq, docker::result<docker::exec_output>& out) {
  auto& st = self->state;
  auto it = st.running.find(seq);
  if (it == st.running.end()) return;
  auto& run = it->second;
  if (auto* output = out.get()) {
    run.result = base_result(run, *output);
  } else if (!run.timed_out && !run.killed) {
    // The stream broke while the exec was ours to finish (engine error, reset, cut stream):
    // the caller gets that error, never a made-up exit code. The engine's 404/409 here ("task
    // ... not found", "container ... is not running") means the container died under the
    // command: the sandbox is lost, as an exec create on it would say.
    forget_cut_exec(self, run.tag);
    return end_exec(
        self, seq,
        container_stopped(out.err())
            ? make_error(corral_errc::sandbox_lost,
                         "sandbox " + st.info.key + " lost the command: " + out.err().describe())
            : from_engine(out.err(), "running the command"));
  } else {
    run.result.warnings = run.plan.warnings;
  }
  engine(self).exec_inspect(
      run.exec_id, back_to<docker::exec_inspect_response>(
                       self, [self, seq](auto ins) { on_exit_code(self, seq, std::move(ins)); }));
}

// An exec through the agent: output kept up to the caps (the agent sends no more) and passed
// on live to a subscriber; the end as the agent saw it.
void start_agent_exec(self_ptr self, uint64_t seq) {
  auto& st = self->state;
  auto& run = st.running.at(seq);
  agent_command cmd;
  cmd.on_output = [self, seq](output_stream stream, std::string& bytes) {
    auto it = self->state.running.find(seq);
    if (it == self->state.running.end()) return false;
    auto& run = it->second;
    const bool err = stream == output_stream::stderr_stream;
    std::string& kept = err ? run.result.stderr_data : run.result.stdout_data;
    const uint64_t cap = err ? run.plan.max_stderr : run.plan.max_stdout;
    if (kept.size() < cap)
      kept.append(bytes, 0, std::min<uint64_t>(bytes.size(), cap - kept.size()));
    if (!run.request.subscriber) return false;
    output_chunk chunk;
    chunk.exec_seq = seq;
    chunk.stream = stream;
    chunk.bytes = std::move(bytes);
    const uint64_t n = chunk.bytes.size();
    const uint32_t id = run.agent_id;
    // Its answer (any, or its end) says the subscriber has the bytes: their credit goes back.
    // Bounded: a subscriber on a node link that dropped never answers (CAF 0.17 sends no
    // error for a request already on the wire); the command's own timeout ends it anyway.
    const auto patience = run.plan.timeout.count() > 0
                              ? std::chrono::duration_cast<caf::timespan>(run.plan.timeout) +
                                    caf::timespan{std::chrono::seconds(10)}
                              : caf::timespan{std::chrono::hours(24)};
    self->request(run.request.subscriber, patience, output_atom_v, std::move(chunk))
        .then([self, id, n]() { give_credit(self, id, n); },
              [self, seq, id, n](caf::error&) {
                // Gone (or too old to answer): the command goes on without it.
                if (auto r = self->state.running.find(seq); r != self->state.running.end())
                  r->second.request.subscriber = nullptr;
                give_credit(self, id, n);
              });
    return true;
  };
  cmd.on_exit = [self, seq](agent_exit& e) {
    namespace proto = agent_protocol;
    auto& st = self->state;
    auto it = st.running.find(seq);
    if (it == st.running.end()) return;
    auto& run = it->second;
    auto& r = run.result;
    r.stdout_bytes = e.totals[0];
    r.stderr_bytes = e.totals[1];
    r.stdout_truncated = e.truncated[0] || r.stdout_data.size() < e.totals[0];
    r.stderr_truncated = e.truncated[1] || r.stderr_data.size() < e.totals[1];
    r.warnings = run.plan.warnings;
    r.exit_code = e.code;
    switch (e.how) {
      case proto::end::timed_out:
        r.end = exec_end::timed_out;
        break;
      case proto::end::killed:
        r.end = run.timed_out ? exec_end::timed_out : exec_end::killed;
        r.exit_code = run.timed_out ? 124 : 137;
        break;
      case proto::end::lost:
        // The agent went away: by our own removal (a release with cancel, the lifetime) or not.
        r.end = run.killed      ? exec_end::killed
                : run.timed_out ? exec_end::timed_out
                                : exec_end::sandbox_lost;
        r.exit_code = run.timed_out ? 124 : 137;
        break;
      case proto::end::spawn_failed:
        r.end = exec_end::exited;
        if (!e.detail.empty()) r.stderr_data += "corral: " + e.detail + "\n";
        break;
      case proto::end::exited:
        r.end = e.oom ? exec_end::oom_killed : exec_end::exited;
        if (!e.oom && e.code == 137) {
          // Killed by a signal we did not send: the engine's oom event, or the sandbox's end.
          return self->delayed_send(self, std::chrono::milliseconds(300), finalize_atom_v, seq);
        }
        break;
    }
    end_exec(self, seq, {});
  };
  run.agent_id =
      agent_start(self, run.request.argv, run.plan.create.env, run.plan.create.working_dir,
                  run.plan.timeout, run.plan.max_stdout, run.plan.max_stderr,
                  run.request.has_stdin ? &run.request.stdin_data : nullptr, std::move(cmd));
  // The agent ends it at its deadline, with or without us: no timer of the monitor's here
  // (two messages less per command). Should the agent itself fail, its link ends and the
  // command with it; the sandbox's lifetime stays the monitor's.
}

void start_exec(self_ptr self, pending_exec pending) {
  auto& st = self->state;
  const uint64_t seq = st.next_seq++;
  running_exec run;
  run.request = std::move(pending.request);
  run.plan = std::move(pending.plan);
  run.rp = std::move(pending.rp);
  run.tag = random_hex64();
  if (st.args.plan.agent) {
    // No update here: the supervisor counted the command when it asked (execs_in_flight), and
    // the update at its end corrects the count. One message less per command.
    st.running.emplace(seq, std::move(run));
    return start_agent_exec(self, seq);
  }
  auto create = run.plan.create;
  create.env.push_back("CORRAL_EXEC=" + run.tag);
  st.running.emplace(seq, std::move(run));
  publish(self);
  engine(self).exec_create(
      st.info.container_id, create,
      back_to<docker::exec_create_response>(
          self, [self, seq](docker::result<docker::exec_create_response> created) {
            auto& st = self->state;
            auto it = st.running.find(seq);
            if (it == st.running.end()) return;
            auto& run = it->second;
            if (!created) {
              return end_exec(self, seq,
                              container_stopped(created.err())
                                  ? make_error(corral_errc::sandbox_lost,
                                               "sandbox " + st.info.key + " cannot run commands: " +
                                                   created.err().describe())
                                  : from_engine(created.err(), "creating the exec"));
            }
            run.exec_id = created->id;
            docker::exec_start_options options;
            options.max_stdout = run.plan.max_stdout;
            options.max_stderr = run.plan.max_stderr;
            if (run.request.has_stdin) options.stdin_data = run.request.stdin_data;
            // Our deadline is the monitor's; the adapter's only guards against a stuck engine.
            options.timeout = run.plan.timeout + std::chrono::seconds(30);
            if (run.request.subscriber) {
              // Runs on the adapter's thread: sending is all it may do.
              options.on_output = [subscriber = run.request.subscriber, seq](
                                      docker::stream_kind kind, std::string_view bytes) {
                output_chunk chunk;
                chunk.exec_seq = seq;
                chunk.stream = kind == docker::stream_kind::stderr_stream
                                   ? output_stream::stderr_stream
                                   : output_stream::stdout_stream;
                chunk.bytes.assign(bytes);
                caf::anon_send(subscriber, output_atom_v, std::move(chunk));
              };
            }
            run.stream = engine(self).exec_start(
                run.exec_id, std::move(options),
                back_to<docker::exec_output>(
                    self, [self, seq](auto out) { on_stream_end(self, seq, out); }));
            self->send(st.monitor, watch_atom_v, seq, caf::timespan{run.plan.timeout});
          }));
}

void start_pending(self_ptr self) {
  auto& st = self->state;
  while (st.now == phase::ready && !st.queue.empty() &&
         st.running.size() < st.args.cfg.max_execs_per_sandbox) {
    auto next = std::move(st.queue.front());
    st.queue.pop_front();
    start_exec(self, std::move(next));
  }
}

// Kills every process of one exec inside the sandbox: each carries CORRAL_EXEC=<tag> in its
// environment, inherited by its children. A second exec finds and kills them all; the exec
// stream then ends by itself. If that is not possible, the fallback timer kills the sandbox.
void kill_exec_tree(self_ptr self, uint64_t seq) {
  auto& st = self->state;
  auto it = st.running.find(seq);
  if (it == st.running.end()) return;
  docker::exec_create_request killer;
  killer.user = st.args.plan.user;
  killer.attach_stdout = false;
  killer.attach_stderr = false;
  // Stop them all first, then kill: a parent that outlives its child even briefly would go on
  // running the rest of its script. Rounds catch children forked while the list was made.
  static constexpr const char* kill_script =
      "t=\"CORRAL_EXEC=$1\"; for round in 1 2 3; do p=; for d in /proc/[0-9]*; do "
      "if tr '\\0' '\\n' < \"$d/environ\" 2>/dev/null | grep -qx \"$t\"; then "
      "p=\"$p ${d#/proc/}\"; fi; done; [ -z \"$p\" ] && break; "
      "kill -STOP $p 2>/dev/null; kill -KILL $p 2>/dev/null; done";
  killer.cmd = {"/bin/sh", "-c", kill_script, "corral-kill", it->second.tag};
  self->delayed_send(self, std::chrono::seconds(5), fallback_atom_v, seq);
  engine(self).exec_create(st.info.container_id, killer,
                           back_to<docker::exec_create_response>(
                               self, [self](docker::result<docker::exec_create_response> created) {
                                 if (!created) return;  // the fallback timer takes over
                                 engine(self).exec_start(
                                     created->id, {},
                                     back_to<docker::exec_output>(self, [](auto) {}));
                               }));
}

}  // namespace

// -- the actor -----------------------------------------------------------------------------

namespace {

// Why a sandbox that is ending takes no acquire and no command; none while it does not end.
caf::error ending_error(self_ptr self) {
  const auto& st = self->state;
  const auto lost = [&](const std::string& what) {
    return make_error(corral_errc::sandbox_lost, "sandbox " + st.info.key + " " + what);
  };
  if (is_terminal(st.info.status)) return lost("is " + std::string(to_string(st.info.status)));
  if (st.now == phase::draining) return lost("is being released");
  if (st.now == phase::removing) return lost("is being removed");
  return {};
}

container_impl_actor::behavior_type container_impl(self_ptr self, container_args args) {
  auto& st = self->state;
  st.args = std::move(args);
  st.info.key = st.args.key;
  st.info.image = st.args.plan.create.image;
  st.info.created_ms = now_ms();
  st.info.last_used_ms = st.info.created_ms;
  st.info.memory_bytes = st.args.plan.create.host.memory;
  st.info.nano_cpus = st.args.plan.create.host.nano_cpus;
  st.info.pids_limit = st.args.plan.create.host.pids_limit;
  st.info.warnings = st.args.plan.warnings;
  st.info.status = sandbox_status::creating;
  st.pool_member = !st.args.pool_hash.empty() && st.args.key.empty() && !st.args.adopt_unkeyed;
  if (st.args.agents && st.args.adopt_container_id.empty()) {
    use_agent(st.args.plan, st.args.cfg, random_hex64());
  }
  // A pool member's lifetime starts at its claim (claim_pooled); an unkeyed adoption's is
  // its agent's (bound_agent), whose end the link's bye reports.
  const bool keyed = !st.pool_member && !st.args.adopt_unkeyed;
  st.monitor = spawn_monitor(self->system(), caf::actor_cast<monitored_actor>(self),
                             keyed ? st.args.plan.lifetime : std::chrono::milliseconds(0));
  publish(self);
  if (st.args.adopt_container_id.empty())
    create_container(self);
  else
    adopt_container(self);

  return {
      [self](acquire_atom) -> caf::result<sandbox_info> {
        auto& st = self->state;
        if (st.engine_waits > 0) {
          if (st.startup_failure) return st.startup_failure;
          return make_error(corral_errc::sandbox_lost,
                            "sandbox " + st.info.key + " is being removed");
        }
        // A start-up that failed says why to every acquire, also while its removal runs.
        if (st.now == phase::removing && st.startup_failure) return st.startup_failure;
        if (auto ending = ending_error(self)) return ending;
        if (st.info.status == sandbox_status::ready) return st.info;
        auto rp = self->make_response_promise<sandbox_info>();
        st.ready_waiters.push_back(rp);
        return rp;
      },
      [self](lookup_atom) -> caf::result<sandbox_info> {
        auto& st = self->state;
        if (st.now == phase::adopting) {
          // Adoption takes one inspect: answer with the adopted state, not "creating".
          auto rp = self->make_response_promise<sandbox_info>();
          st.ready_waiters.push_back(rp);
          return rp;
        }
        st.info.execs_in_flight = st.running.size() + st.queue.size();
        return st.info;
      },
      [self](exec_atom, exec_request& request) -> caf::result<exec_result> {
        auto& st = self->state;
        if (st.engine_waits > 0) {
          return make_error(
              corral_errc::sandbox_lost,
              "sandbox " + st.info.key + " is being removed (" +
                  (st.info.detail.empty() ? std::string("the engine is away") : st.info.detail) +
                  ")");
        }
        if (auto ending = ending_error(self)) return ending;
        if (st.args.plan.agent && st.agent_gone) {
          return make_error(corral_errc::sandbox_lost,
                            "sandbox " + st.info.key + " lost its agent" +
                                (st.agent_bye ? ": " + st.agent_bye_detail : std::string()));
        }
        auto plan = plan_exec(st.args.cfg, st.args.plan, request);
        if (!plan) return std::move(plan.error());
        auto rp = self->make_response_promise<exec_result>();
        st.info.last_used_ms = now_ms();
        st.queue.push_back(pending_exec{std::move(request), std::move(*plan), rp});
        start_pending(self);
        // Started at once, it is reported when it ends (the supervisor counts it meanwhile).
        if (!st.queue.empty() || !st.args.plan.agent) publish(self);
        return rp;
      },
      [self](release_atom, release_mode mode) -> caf::result<sandbox_info> {
        auto& st = self->state;
        auto rp = self->make_response_promise<sandbox_info>();
        st.release_waiters.push_back(rp);
        if (st.now == phase::removing) return rp;  // answered when the container is gone
        if (st.now == phase::draining) {
          // A second release may hurry the first: cancel what still runs.
          if (mode == release_mode::cancel_execs && !st.running.empty()) {
            for (auto& [seq, run] : st.running) run.killed = true;
            begin_removal(self, sandbox_status::removed, {});
          }
          return rp;
        }
        const phase was = std::exchange(st.now, phase::draining);
        const auto released =
            make_error(corral_errc::sandbox_lost, "sandbox " + st.info.key + " was released");
        for (auto& p : st.queue) p.rp.deliver(released);
        st.queue.clear();
        for (auto& w : st.ready_waiters) w.deliver(released);
        st.ready_waiters.clear();
        if (was != phase::ready && was != phase::pooled) {
          return rp;  // a step of the start-up is in flight: when it ends, it removes (moot)
        }
        if (mode == release_mode::cancel_execs) {
          for (auto& [seq, run] : st.running) run.killed = true;
        }
        if (mode == release_mode::cancel_execs || st.running.empty()) {
          begin_removal(self, sandbox_status::removed, {});
        }
        return rp;
      },
      [](resume_atom, continuation& step) { step.run(); },
      [self](claim_atom, pool_claim& claim) { claim_pooled(self, claim); },
      [self](exec_timeout_atom, uint64_t seq) {
        auto it = self->state.running.find(seq);
        if (it == self->state.running.end()) return;
        it->second.timed_out = true;
        if (self->state.args.plan.agent) {
          // The agent missed the deadline: kill it by hand, and the sandbox if that fails too.
          agent_kill(self, it->second.agent_id);
          self->delayed_send(self, std::chrono::seconds(5), fallback_atom_v, seq);
          return;
        }
        kill_exec_tree(self, seq);
      },
      [self](fallback_atom, uint64_t seq) {
        // The exec outlived its kill: end our side, then the last resort.
        auto& st = self->state;
        auto it = st.running.find(seq);
        if (it == st.running.end()) return;
        engine(self).cancel(it->second.stream);
        begin_removal(self, sandbox_status::killed,
                      "an exec could not be stopped inside the sandbox; the sandbox was killed");
      },
      [self](finalize_atom, uint64_t seq) {
        auto& st = self->state;
        auto it = st.running.find(seq);
        if (it == st.running.end()) return;
        if (st.oom_seen_at && *st.oom_seen_at >= it->second.started) {
          it->second.result.end = exec_end::oom_killed;
          return end_exec(self, seq, {});
        }
        // Killed by a signal corral did not send: if the container itself is gone (killed
        // from outside; its die event may come later than the exit), the sandbox is lost.
        engine(self).container_inspect(
            st.info.container_id,
            back_to<docker::container_inspect_response>(
                self, [self, seq](docker::result<docker::container_inspect_response> r) {
                  auto& st = self->state;
                  auto it = st.running.find(seq);
                  if (it == st.running.end()) return;
                  if (!r || !r->state.running) it->second.result.end = exec_end::sandbox_lost;
                  end_exec(self, seq, {});
                }));
      },
      [self](lifetime_atom) {
        auto& st = self->state;
        if (st.now == phase::removing) return;
        for (auto& [seq, run] : st.running) run.killed = true;
        begin_removal(self, sandbox_status::timed_out, "the sandbox reached its lifetime limit");
      },
      [self](oom_atom) { self->state.oom_seen_at = steady::now(); },
      [self](mark_atom, sandbox_status status, std::string& detail) {
        auto& st = self->state;
        if (st.now == phase::removing) return;
        st.info.status = status;
        st.info.detail = detail;
        publish(self);
        begin_removal(self, status, detail);
      },
  };
}

}  // namespace

messages::container_actor spawn_container(caf::actor_system& sys, container_args args) {
  return sys.spawn(container_impl, std::move(args));
}

}  // namespace corral::actors
