// The container actor's link to its sandbox's agent (the diagram at the top of container.cpp).
//
// With cfg.agent_path, each sandbox runs corral-agent as PID 1 and every command goes through
// it over one link (actors/agent_link.hpp): a start frame, output frames answered with credit,
// an exited frame. The agent enforces the command's deadline and output caps itself; the
// monitor's timer here is only the backstop should the agent not answer.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include <caf/all.hpp>

#include "actors/agent_link.hpp"
#include "actors/container_state.hpp"
#include "actors/engine_bridge.hpp"
#include "actors/engine_errors.hpp"
#include "actors/spec_record.hpp"
#include "docker/client.hpp"
#include "messages/agent_protocol.hpp"
#include "messages/errors.hpp"

namespace corral::actors::container_detail {

namespace {

// The output window each command starts with, and how much of it is given back at once: most
// commands' whole output fits, so most commands need no credit frame at all.
constexpr uint64_t agent_window = 1 << 20;
constexpr uint64_t agent_credit_batch = agent_window / 4;

agent_hub& agents(self_ptr self) {
  return *self->state.args.agents;
}

std::string agent_socket(self_ptr self) {
  return self->state.args.plan.run_dir + "/" + agent_protocol::socket_name;
}

void send_to_agent(self_ptr self, std::string frame) {
  if (self->state.link != 0) agents(self).send(self->state.link, std::move(frame));
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

}  // namespace

// -- what the other files call: the link, commands through it ------------------------------

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

// -- the sandbox's user and run directory --------------------------------------------------

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

}  // namespace corral::actors::container_detail
