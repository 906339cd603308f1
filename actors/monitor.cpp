#include "actors/monitor.hpp"

#include <set>

#include <caf/all.hpp>

namespace corral::actors {

namespace {

using monitor_impl_actor =
    monitor_actor::extend<caf::reacts_to<deadline_atom, uint64_t>, caf::reacts_to<lifetime_atom>>;

struct monitor_state {
  static inline const char* name = "corral.monitor";
  monitor_state() = default;  // not an aggregate: CAF must not build it from the self pointer
  monitored_actor container;
  std::set<uint64_t> watched;  // execs whose deadline has not passed or been cancelled
  bool stopping = false;
  bool oom_seen = false;
  bool kill_seen = false;
  bool marked = false;  // a terminal mark was sent; later events change nothing
};

monitor_impl_actor::behavior_type monitor_impl(
    monitor_impl_actor::stateful_pointer<monitor_state> self, const monitored_actor& container,
    std::chrono::milliseconds lifetime) {
  self->state.container = container;
  // The monitor lives exactly as long as its container.
  self->monitor(container);
  self->set_down_handler([self](const caf::down_msg&) { self->quit(); });
  if (lifetime.count() > 0) self->delayed_send(self, lifetime, lifetime_atom_v);

  auto mark = [self](messages::sandbox_status status, std::string detail) {
    if (self->state.marked) return;
    self->state.marked = true;
    self->send(self->state.container, mark_atom_v, status, std::move(detail));
  };

  return {
      [self](watch_atom, uint64_t seq, caf::timespan timeout) {
        self->state.watched.insert(seq);
        self->delayed_send(self, timeout, deadline_atom_v, seq);
      },
      [self](unwatch_atom, uint64_t seq) { self->state.watched.erase(seq); },
      [self](deadline_atom, uint64_t seq) {
        // A deadline for an exec that already ended is stale: drop it.
        if (self->state.watched.erase(seq) > 0)
          self->send(self->state.container, exec_timeout_atom_v, seq);
      },
      [self](lifetime_atom) {
        if (!self->state.stopping) self->send(self->state.container, lifetime_atom_v);
      },
      [self](stopping_atom) { self->state.stopping = true; },
      [self, mark](engine_event_atom, const std::string& action, const std::string& exit_code) {
        if (action == "oom") {
          self->state.oom_seen = true;
          self->send(self->state.container, oom_atom_v);
        } else if (action == "kill") {
          self->state.kill_seen = true;
        } else if (action == "die") {
          if (self->state.stopping) return;
          using messages::sandbox_status;
          if (self->state.oom_seen) {
            mark(sandbox_status::oom_killed,
                 "the container ran out of memory (exit " + exit_code + ")");
          } else if (self->state.kill_seen || exit_code == "137" || exit_code == "143") {
            mark(sandbox_status::killed,
                 "the container was killed outside corral (exit " + exit_code + ")");
          } else {
            mark(sandbox_status::exited,
                 "the container's main process exited (exit " + exit_code + ")");
          }
        } else if (action == "destroy") {
          if (self->state.stopping) return;
          mark(messages::sandbox_status::lost, "the container was removed outside corral");
        }
      },
  };
}

}  // namespace

monitor_actor spawn_monitor(caf::actor_system& sys, monitored_actor container,
                            std::chrono::milliseconds lifetime) {
  return sys.spawn(monitor_impl, std::move(container), lifetime);
}

}  // namespace corral::actors
