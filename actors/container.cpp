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
// phase. The lifetime, the monitor's marks and a lost agent enter removing (during a create,
// removing waits for its answer and removes what it made). Back edges: a claim
// by rename that meets the key's name held goes back to creating (the holder is looked at), as
// does a pool member gone before its claim. `info.status` is what callers see: creating
// (creating, adopting), starting (starting, setting_up, and creating again after a claim's back
// edge), ready (pooled, ready, draining), stopping (removing a released sandbox), then its end.
//
// This file holds the phases (enter, moot), publish, the removal and the behavior. The steps
// are in files by concern: the create, the claim (the warm pool's, drawn there), the adoption,
// the start and the setup in container_claim.cpp; the link to the agent in
// container_agent.cpp; commands in container_exec.cpp. The state, and what the files call
// across, are in container_state.hpp.
#include "actors/container.hpp"

#include <chrono>
#include <string>
#include <utility>

#include <caf/all.hpp>

#include "actors/container_state.hpp"
#include "actors/engine_bridge.hpp"
#include "actors/monitor.hpp"
#include "actors/random_id.hpp"
#include "docker/client.hpp"
#include "messages/errors.hpp"

namespace corral::actors::container_detail {

void publish(self_ptr self) {
  auto& st = self->state;
  st.info.execs_in_flight = st.running.size() + st.queue.size();
  if (st.args.supervisor) {
    // send_as: the supervisor checks who reports, so a stale actor cannot overwrite a key.
    caf::send_as(caf::actor_cast<caf::actor>(self), st.args.supervisor, update_atom_v, st.info,
                 caf::actor_cast<caf::actor>(st.monitor));
  }
}

// -- the end -------------------------------------------------------------------------------

namespace {

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

}  // namespace

// Enters removing (once): removes the container, whatever state it is in, and ends in
// `final_status`.
void begin_removal(self_ptr self, sandbox_status final_status, std::string detail) {
  auto& st = self->state;
  if (st.now == phase::removing) return;
  st.now = phase::removing;
  if (!detail.empty()) st.info.detail = std::move(detail);
  if (st.monitor) self->send(st.monitor, stopping_atom_v);
  if (st.create_in_flight) {
    // The create's answer says whether there is a container to remove (removed_after_create).
    st.removal_after_create = final_status;
    if (final_status == sandbox_status::removed) st.info.status = sandbox_status::stopping;
    return publish(self);
  }
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

void removed_after_create(self_ptr self, const docker::result<std::string>& created) {
  auto& st = self->state;
  const auto final_status = st.removal_after_create.value_or(sandbox_status::removed);
  if (created) {
    st.info.container_id = *created;
  } else if (create_may_have_made(created.err())) {
    // The engine may have made it and lost only its answer: removed by name.
    st.info.container_id = st.container_name;
  }
  if (st.info.container_id.empty()) {
    st.info.status = final_status;
    return finish(self);
  }
  remove_container(self, final_status);
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

void become_ready(self_ptr self) {
  auto& st = self->state;
  if (!enter(self, st.pool_member ? phase::pooled : phase::ready)) return;
  st.info.status = sandbox_status::ready;
  st.info.last_used_ms = unix_now_ms();
  for (auto& rp : st.ready_waiters) rp.deliver(st.info);
  st.ready_waiters.clear();
  publish(self);
  start_pending(self);
}

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
  st.info.created_ms = unix_now_ms();
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
        st.info.last_used_ms = unix_now_ms();
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
        end_exec_unless_lost(self, seq, std::nullopt);
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

}  // namespace corral::actors::container_detail

namespace corral::actors {

messages::container_actor spawn_container(caf::actor_system& sys, container_args args) {
  return sys.spawn(container_detail::container_impl, std::move(args));
}

}  // namespace corral::actors
