#include "actors/supervisor.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <unordered_map>

#include <caf/all.hpp>

#include "actors/actor_errors.hpp"
#include "actors/agent_link.hpp"
#include "actors/container.hpp"
#include "actors/engine_bridge.hpp"
#include "actors/engine_errors.hpp"
#include "actors/pending_calls.hpp"
#include "actors/policy.hpp"
#include "actors/spec_record.hpp"
#include "actors/supervisor_seams.hpp"
#include "actors/units.hpp"
#include "docker/client.hpp"
#include "messages/errors.hpp"

namespace corral::actors {

namespace {

using namespace messages;

using supervisor_impl_actor =
    supervisor_actor::extend<caf::reacts_to<resume_atom, continuation>,
                             caf::reacts_to<update_atom, sandbox_info, caf::actor>,
                             caf::reacts_to<update_atom, std::string>,
                             caf::reacts_to<prune_tick_atom>, caf::reacts_to<resubscribe_atom>>;

struct entry {
  container_actor handle;  // empty once the container actor is gone (a tombstone)
  caf::actor monitor;
  sandbox_info info;
  std::chrono::milliseconds idle_limit{0};
  int64_t memory = 0;  // its memory limit, counted against budget.memory while live
  spec_record asked;   // what its creator asked for, per field (empty: not known)
};

// A warm pool member (actors/container.cpp, "the warm pool"): a container actor with no key
// yet, counted against the budget like any sandbox.
struct pool_member {
  container_actor handle;
  caf::actor monitor;
  std::string hash;  // its pool's (empty: adopted from a pool this runtime does not keep)
  std::string container_id;
  bool ready = false;     // started, its agent up and unbound: claimable
  bool adopting = false;  // left by a previous run: its agent says if it is bound, and to whom
  std::chrono::steady_clock::time_point since = std::chrono::steady_clock::now();
  int64_t memory = 0;
  std::string bound_spec;  // an adopted member's: the spec record its agent was bound with
};

// One pool per create config (pool_hash): the plan its members are made from, and how many.
struct warm_pool {
  sandbox_plan plan;
  std::size_t min = 0;
  std::size_t max = 0;
  std::size_t target = 0;             // min, grown by misses toward max, back to min when they stop
  std::deque<caf::actor_addr> ready;  // oldest first
  std::size_t warming = 0;
  int failures = 0;  // members in a row that died before they were ready: backs off refills
  bool refill_waiting = false;
  int64_t last_miss_ms = 0;
};

// The supervisor's phases, each entered through one function (named below it):
//
//   connecting ───────► adopting ───────► serving ───────► shutting_down ───► quit
//   enter_connecting    adopt_existing    enter_serving    shut_down
//   negotiate           list this         requests         release all (or keep them),
//                       runtime's containers: adopt        await the last answers and
//                       or remove them; pooled ones'       removals
//                       agents say whose they are
//
// No engine at connecting: serving, and every request is told so; at the next prune tick,
// connecting again. Requests that come before serving wait (when_serving). A shutdown may come
// in any phase: the requests that waited are answered at once (refused), later ones run at once.
enum class phase { connecting, adopting, serving, shutting_down };

struct supervisor_state {
  static inline const char* name = "corral.supervisor";
  supervisor_state() = default;  // not an aggregate: CAF must not build it from the self pointer
  runtime_config cfg;
  container_factory make_container;
  std::shared_ptr<docker::client> docker;
  std::shared_ptr<agent_hub> agents;  // with cfg.agent_path: links to the sandboxes' agents
  std::map<std::string, entry> sandboxes;
  std::unordered_map<std::string, std::string> key_by_container;
  // Live container actors: counted and indexed, so acquire and down handling stay O(log n)
  // at ten thousand sandboxes.
  uint64_t live = 0;
  int64_t memory_in_use = 0;     // the live sandboxes' memory limits (policy key budget.memory)
  uint64_t execs_in_flight = 0;  // asked of container actors, not answered (budget.execs)
  std::map<caf::actor_addr, std::string> key_by_actor;
  phase now = phase::connecting;
  caf::error engine_down;                       // set while no engine answers
  std::vector<std::function<void()>> deferred;  // requests that came before serving
  // Containers the start-up sweep found in `created` and spared (another process may still
  // be starting them): looked at again once their grace is over, and removed at a releasing
  // shutdown before then. Without this, one that a crashed run left behind was never adopted
  // nor removed (found by tests/crash_trial.sh).
  std::vector<std::string> spared;
  runtime_stats stats;
  docker::unix_http_client::request_id events_stream = 0;
  // Releases asked for by clients and still on their way: the supervisor answers them all
  // before it quits, also during a shutdown.
  std::size_t client_releases = 0;
  // Removals the supervisor started on its own (a dead actor's container, what a crashed run
  // left): awaited before it quits, so that no removal is cut off half-way by the engine client's
  // shutdown (found by tests/engine_restart_trial.sh: a container left in `removing`).
  std::size_t cleanups = 0;
  std::optional<caf::error> quit_reason;  // set when only those answers keep it alive
  // Requests to container actors not answered yet: a container actor that goes down fails
  // them at once. The supervisor answers every caller itself and never delegates, so no
  // caller ever sees CAF's own errors (or a container actor's handle).
  pending_calls calls;
  // The warm pools (cfg.warm) and their members, by actor and by container.
  std::map<std::string, warm_pool> pools;
  std::map<caf::actor_addr, pool_member> members;
  std::unordered_map<std::string, caf::actor_addr> member_by_container;
  bool listed = false;                // the start-up adoption listed the engine's containers
  std::size_t unkeyed_adoptions = 0;  // pool members of a previous run whose agents are asked
  uint64_t misses_in_a_row = 0;       // acquires the pool could not serve since its last hit
  // Acquires that found the budget full while sandboxes were being released (a detached
  // release is answered before its removal ends): tried again when one is gone.
  std::vector<std::function<void()>> room_waiters;
};

using self_ptr = supervisor_impl_actor::stateful_pointer<supervisor_state>;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

uint64_t live_count(self_ptr self) {
  return self->state.live;
}

// The entry's container actor is gone (or done): it no longer counts as live.
void drop_handle(self_ptr self, entry& e) {
  if (!e.handle) return;
  --self->state.live;
  self->state.memory_in_use -= e.memory;
  self->state.key_by_actor.erase(e.handle.address());
  e.handle = nullptr;
  e.monitor = nullptr;
  // Room for an acquire that waits for it: tried again after this handler.
  if (!self->state.room_waiters.empty()) {
    auto waiters = std::move(self->state.room_waiters);
    self->state.room_waiters.clear();
    for (auto& w : waiters) self->send(self, resume_atom_v, continuation{std::move(w)});
  }
}

void refill(self_ptr self);

// Adoption done, or no engine to adopt from. A shutdown that came meanwhile stays the phase:
// the requests that waited are run, and refuse.
void enter_serving(self_ptr self) {
  auto& st = self->state;
  if (st.now != phase::shutting_down) st.now = phase::serving;
  auto deferred = std::move(st.deferred);
  st.deferred.clear();
  for (auto& f : deferred) f();
  refill(self);
}

template <class F>
void when_serving(self_ptr self, F f) {
  if (self->state.now == phase::serving || self->state.now == phase::shutting_down)
    f();
  else
    self->state.deferred.emplace_back(std::move(f));
}

void container_gone(self_ptr self, const caf::actor_addr& source, const caf::error& reason);
void member_gone(self_ptr self, const caf::actor_addr& addr);
void quit_when_answered(self_ptr self);

// A removal nobody waits for but the supervisor itself: counted until the engine answers.
void remove_in_background(self_ptr self, const std::string& container_id) {
  ++self->state.cleanups;
  self->state.docker->container_remove(container_id, true,
                                       back_to<void>(self, [self](const docker::result<void>&) {
                                         --self->state.cleanups;
                                         quit_when_answered(self);
                                       }));
}

// Asks a container actor; exactly one of on_value and on_error runs. on_error(err, gone)
// always gets a corral error: the container's own answer (gone false), or sandbox_lost when
// the actor is gone (gone true), whether the request bounced off its closed mailbox or the
// actor died holding it.
template <class T, class OnValue, class OnError, class... Ts>
void ask(self_ptr self, const container_actor& handle, const std::string& doing, OnValue on_value,
         OnError on_error, Ts&&... xs) {
  auto finish = [on_error, doing](const caf::error& err, bool gone) mutable {
    on_error(from_actor(err, corral_errc::sandbox_lost, doing), gone);
  };
  const auto peer = handle.address();
  const auto id =
      self->state.calls.add(peer, [finish](const caf::error& lost) mutable { finish(lost, true); });
  self->request(handle, caf::infinite, std::forward<Ts>(xs)...)
      .then(
          [self, peer, id, on_value](T& value) mutable {
            if (self->state.calls.take(peer, id)) on_value(value);
          },
          [self, peer, id, finish](caf::error& err) mutable {
            if (!self->state.calls.take(peer, id)) return;
            // CAF's own error (request_receiver_down): the actor's mailbox is closed. Its
            // down message may still be on its way; the supervisor forgets it now.
            const bool gone = err.category() != caf::atom(error_category_name);
            if (gone) container_gone(self, peer, err);
            finish(err, gone);
          });
}

// The container actor at `source` is gone (its down message, or a request that bounced off
// it before the down message came): its entry becomes a tombstone, its container is removed
// unless it said it was done, and what it was asked fails.
void container_gone(self_ptr self, const caf::actor_addr& source, const caf::error& reason) {
  auto& st = self->state;
  const auto why = reason ? ": " + describe(reason) : std::string();
  if (st.members.count(source)) return member_gone(self, source);
  auto owner = st.key_by_actor.find(source);
  if (owner == st.key_by_actor.end()) {
    // Retired already (or not a container actor): nothing of it should still be open.
    st.calls.fail_all(source, make_error(corral_errc::sandbox_lost,
                                         "the sandbox's container actor stopped" + why));
    return;
  }
  auto it = st.sandboxes.find(owner->second);
  if (it == st.sandboxes.end()) {
    const auto key = owner->second;
    st.key_by_actor.erase(owner);
    st.calls.fail_all(source,
                      make_error(corral_errc::sandbox_lost, "sandbox " + key + " is gone" + why));
    return;
  }
  auto& e = it->second;
  drop_handle(self, e);
  if (!is_terminal(e.info.status)) {
    // The actor died without saying why: its container is ours to clean up.
    if (!e.info.container_id.empty() && !st.cfg.keep_sandboxes_on_shutdown) {
      remove_in_background(self, e.info.container_id);
    }
    e.info.status = sandbox_status::lost;
    e.info.detail = "its container actor stopped" + why;
    st.stats.lost_total++;
  }
  st.key_by_container.erase(e.info.container_id);
  const auto lost = make_error(corral_errc::sandbox_lost,
                               "sandbox " + e.info.key + " is " + to_string(e.info.status) +
                                   (e.info.detail.empty() ? "" : ": " + e.info.detail));
  if (e.info.status == sandbox_status::removed) {
    st.stats.released_total++;
    st.sandboxes.erase(it);
  }
  st.calls.fail_all(source, lost);
}

// -- engine events: one subscription for the whole runtime ---------------------------------

void subscribe_events(self_ptr self) {
  auto& st = self->state;
  docker::events_options options;
  options.filters["type"] = {"container"};
  options.filters["label"] = {std::string(label_runtime) + "=" + st.cfg.name};
  options.filters["event"] = {"die", "oom", "kill", "destroy"};
  caf::weak_actor_ptr weak = self->ctrl();
  auto on_event = [weak, self](const docker::event_message& ev) {
    auto strong = weak.lock();
    if (!strong) return;
    caf::anon_send(
        caf::actor_cast<caf::actor>(strong), resume_atom_v, continuation{[self, ev] {
          auto& st = self->state;
          std::string exit_code;
          if (auto code = ev.attributes.find("exitCode"); code != ev.attributes.end())
            exit_code = code->second;
          if (auto m = st.member_by_container.find(ev.id); m != st.member_by_container.end()) {
            // A pool member died: its monitor marks it, and it leaves the pool.
            auto member = st.members.find(m->second);
            if (member != st.members.end() && member->second.monitor)
              caf::anon_send(member->second.monitor, engine_event_atom_v, ev.action, exit_code);
            return;
          }
          auto key = st.key_by_container.find(ev.id);
          if (key == st.key_by_container.end()) return;
          auto it = st.sandboxes.find(key->second);
          if (it == st.sandboxes.end() || !it->second.monitor) return;
          // Only the key's current container: not a pool member it let go of.
          if (it->second.info.container_id != ev.id) return;
          caf::anon_send(it->second.monitor, engine_event_atom_v, ev.action, exit_code);
        }});
  };
  st.events_stream = st.docker->events(
      options, std::move(on_event), back_to<void>(self, [self](const docker::result<void>&) {
        if (self->state.now == phase::shutting_down) return;
        // The stream broke (engine restart?): try again shortly.
        self->delayed_send(self, std::chrono::seconds(1), resubscribe_atom_v);
      }));
}

// -- adoption of what a previous run left --------------------------------------------------

// What every container actor of this runtime is given: the engine, the agents, the config.
container_args container_args_of(self_ptr self, std::string adopt_id) {
  auto& st = self->state;
  container_args args;
  args.docker = st.docker;
  args.agents = st.agents;
  args.cfg = st.cfg;
  args.adopt_container_id = std::move(adopt_id);
  args.supervisor = caf::actor_cast<caf::actor>(self);
  return args;
}

void spawn_entry(self_ptr self, const std::string& key, sandbox_plan plan, std::string adopt_id) {
  auto& st = self->state;
  auto args = container_args_of(self, std::move(adopt_id));
  args.key = key;
  const auto idle = plan.idle_limit;
  args.plan = std::move(plan);
  entry e;
  e.asked = decode_spec_record(args.plan.spec_record);
  e.idle_limit = idle;
  e.memory = args.plan.create.host.memory;
  st.memory_in_use += e.memory;
  e.info.key = key;
  e.info.status = sandbox_status::creating;
  e.info.created_ms = now_ms();
  e.info.last_used_ms = e.info.created_ms;
  e.handle = st.make_container(self->system(), std::move(args));
  self->monitor(e.handle);
  ++st.live;
  st.key_by_actor[e.handle.address()] = key;
  st.sandboxes[key] = std::move(e);
}

// What is known of a sandbox a previous run left, before its container actor inspects it.
sandbox_plan adopted_plan(self_ptr self, const docker::container_summary& c) {
  const auto& pol = self->state.cfg.policy;
  sandbox_plan plan;
  plan.user = default_user;
  plan.exec_timeout = pol.defaults.timeout;
  plan.max_stdout = pol.defaults.max_output;
  plan.max_stderr = pol.defaults.max_output;
  plan.idle_limit = pol.defaults.idle;
  plan.lifetime = pol.defaults.lifetime.count() > 0 ? pol.defaults.lifetime : pol.limits.lifetime;
  plan.create.image = c.image;
  // Counted at the ceiling until the container actor's inspect says what it has.
  plan.create.host.memory = pol.limits.memory;
  if (auto record = c.labels.find(label_spec); record != c.labels.end())
    plan.spec_record = record->second;
  return plan;
}

// Takes a container a previous run left (running, with a valid key not held) into the table.
void adopt_one(self_ptr self, const docker::container_summary& c, const std::string& key) {
  auto& st = self->state;
  spawn_entry(self, key, adopted_plan(self, c), c.id);
  auto& info = st.sandboxes[key].info;
  info.container_id = c.id;
  info.image = c.image;
  if (auto created = c.labels.find(label_created_at); created != c.labels.end()) {
    info.created_ms = std::strtoll(created->second.c_str(), nullptr, 10);
  }
  st.key_by_container[c.id] = key;
  st.stats.adopted_total++;
}

// -- the warm pool -------------------------------------------------------------------------
//
// Members are made in the background, `warm_parallel` at a time, until ready + warming reach
// the pool's target; an acquire whose plan has the pool's hash takes the oldest ready one
// (claim_member) and the container actor binds it (actors/container.cpp). A member that dies
// before it is ready backs the refill off (1 s, doubling to 30 s), so a broken image does
// not spin the engine.

void refill(self_ptr self);

void warn(self_ptr self, const std::string& text) {
  if (self->state.cfg.warn)
    self->state.cfg.warn(text);
  else
    std::fprintf(stderr, "corral: warning: %s\n", text.c_str());
}

int64_t plan_memory(const sandbox_plan& plan) {
  return plan.create.host.memory;
}

void spawn_member(self_ptr self, const std::string& hash, const sandbox_plan& plan,
                  std::string adopt_id) {
  auto& st = self->state;
  auto args = container_args_of(self, adopt_id);
  args.plan = plan;
  args.pool_hash = hash;
  args.unclaimed_limit = st.cfg.pool_unclaimed_limit;
  args.adopt_unkeyed = !adopt_id.empty();
  pool_member m;
  m.hash = hash;
  m.adopting = !adopt_id.empty();
  m.container_id = std::move(adopt_id);
  m.memory = plan_memory(plan);
  m.handle = st.make_container(self->system(), std::move(args));
  self->monitor(m.handle);
  ++st.live;
  st.memory_in_use += m.memory;
  if (!m.container_id.empty()) st.member_by_container[m.container_id] = m.handle.address();
  if (m.adopting) ++st.unkeyed_adoptions;
  st.members.emplace(m.handle.address(), std::move(m));
}

// Ready once the start-up adoption listed the engine and every pooled sandbox it found has
// said whose it is: before that, an acquire could not know which key one holds.
void maybe_ready(self_ptr self) {
  auto& st = self->state;
  if (st.now != phase::serving && st.listed && st.unkeyed_adoptions == 0) enter_serving(self);
}

// The member's bookkeeping goes (the budget it held is free); its actor lives on if `keep`.
pool_member forget_member(self_ptr self, const caf::actor_addr& addr) {
  auto& st = self->state;
  auto it = st.members.find(addr);
  pool_member m = std::move(it->second);
  st.members.erase(it);
  --st.live;
  st.memory_in_use -= m.memory;
  if (!m.container_id.empty()) st.member_by_container.erase(m.container_id);
  if (auto p = st.pools.find(m.hash); p != st.pools.end()) {
    auto& ready = p->second.ready;
    if (auto r = std::find(ready.begin(), ready.end(), addr); r != ready.end())
      ready.erase(r);
    else if (!m.adopting && !m.ready && p->second.warming > 0)
      --p->second.warming;
  }
  if (m.adopting) {
    m.adopting = false;
    --st.unkeyed_adoptions;
    // Ready may follow: once the caller has put the member where it goes.
    self->send(self, resume_atom_v, continuation{[self] { maybe_ready(self); }});
  }
  return m;
}

// A member nobody will claim (its pool is gone, it is being replaced, or the budget needs
// its room): released in the background.
void release_member(self_ptr self, const caf::actor_addr& addr) {
  auto m = forget_member(self, addr);
  if (m.handle) caf::anon_send(m.handle, release_atom_v, release_mode::cancel_execs);
}

void refill_later(self_ptr self, const std::string& hash, std::chrono::milliseconds delay) {
  auto& p = self->state.pools[hash];
  if (p.refill_waiting) return;
  p.refill_waiting = true;
  self->delayed_send(self, delay, resume_atom_v, continuation{[self, hash] {
                       self->state.pools[hash].refill_waiting = false;
                       refill(self);
                     }});
}

void refill(self_ptr self) {
  auto& st = self->state;
  if (st.now != phase::serving || st.engine_down) return;
  const auto& budget = st.cfg.policy.budget;
  for (auto& [hash, p] : st.pools) {
    if (p.refill_waiting) continue;
    while (p.ready.size() + p.warming < p.target && p.warming < st.cfg.warm_parallel &&
           st.live < budget.sandboxes && st.memory_in_use + plan_memory(p.plan) <= budget.memory) {
      ++p.warming;
      spawn_member(self, hash, p.plan, {});
    }
  }
}

// A member's container actor reported (update_atom).
void member_update(self_ptr self, const caf::actor_addr& addr, sandbox_info& info,
                   caf::actor& monitor) {
  auto& st = self->state;
  auto& m = st.members[addr];
  m.monitor = monitor;
  if (!info.container_id.empty() && m.container_id != info.container_id) {
    if (!m.container_id.empty()) st.member_by_container.erase(m.container_id);
    m.container_id = info.container_id;
    st.member_by_container[m.container_id] = addr;
  }
  if (info.status != sandbox_status::ready) return;
  if (!info.key.empty()) {
    // A previous run's member, bound to this key before that run ended: a sandbox again.
    const auto key = info.key;
    auto held = st.sandboxes.find(key);
    if (held != st.sandboxes.end() && held->second.handle) {
      // Cannot be: a key names one container. Never two actors on one key.
      return release_member(self, addr);
    }
    auto member = forget_member(self, addr);
    entry e;
    e.handle = member.handle;
    e.monitor = member.monitor;
    e.memory = member.memory;
    e.idle_limit = st.cfg.policy.defaults.idle;
    e.info = info;
    // What its creator asked for, as its agent says: a later acquire with another spec is
    // told which fields differ, as for a sandbox this process made.
    e.asked = decode_spec_record(member.bound_spec);
    ++st.live;
    st.memory_in_use += e.memory;
    st.key_by_actor[e.handle.address()] = key;
    st.key_by_container[info.container_id] = key;
    st.sandboxes[key] = std::move(e);
    st.stats.adopted_total++;
    return;
  }
  if (m.ready) return;
  auto pool = st.pools.find(m.hash);
  if (pool == st.pools.end()) return release_member(self, addr);
  m.ready = true;
  auto& p = pool->second;
  if (m.adopting) {
    m.adopting = false;
    --st.unkeyed_adoptions;
  } else {
    if (p.warming > 0) --p.warming;
    st.stats.pool_refills++;
    st.stats.pool_refill_us_total +=
        static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                  std::chrono::steady_clock::now() - m.since)
                                  .count());
  }
  p.failures = 0;
  p.ready.push_back(addr);
  maybe_ready(self);
  refill(self);
}

// A member's container actor is gone: its room is free, and the pool is refilled (later,
// if it died before it was ready).
void member_gone(self_ptr self, const caf::actor_addr& addr) {
  auto& st = self->state;
  const auto m = forget_member(self, addr);
  auto p = st.pools.find(m.hash);
  if (p == st.pools.end() || st.now == phase::shutting_down) return;
  if (!m.ready) {
    const int n = std::min(++p->second.failures, 5);
    return refill_later(self, m.hash, std::chrono::milliseconds(1000 << (n - 1)));
  }
  refill(self);
}

// The oldest ready member of the pool for `hash`, taken out of the pool; none when empty.
container_actor take_member(self_ptr self, const std::string& hash) {
  auto& st = self->state;
  auto pool = st.pools.find(hash);
  if (pool == st.pools.end() || pool->second.ready.empty()) return {};
  const auto addr = pool->second.ready.front();
  auto m = forget_member(self, addr);
  // Still counted: it becomes the key's sandbox.
  ++st.live;
  st.memory_in_use += m.memory;
  return m.handle;
}

// Room for one more sandbox, made by releasing idle members of any pool if need be.
void make_room(self_ptr self, int64_t memory) {
  auto& st = self->state;
  const auto& budget = st.cfg.policy.budget;
  for (auto& [hash, p] : st.pools) {
    while (!p.ready.empty() &&
           (st.live >= budget.sandboxes || st.memory_in_use + memory > budget.memory))
      release_member(self, p.ready.front());
  }
}

// Members ready for most of their unclaimed limit are replaced before their agents end them.
void recycle_members(self_ptr self) {
  auto& st = self->state;
  const auto old = st.cfg.pool_unclaimed_limit * 5 / 6;
  const auto now = std::chrono::steady_clock::now();
  std::vector<caf::actor_addr> due;
  for (const auto& [addr, m] : st.members)
    if (m.ready && now - m.since >= old) due.push_back(addr);
  for (const auto& addr : due) release_member(self, addr);
  // Misses stopped a minute ago: the pool shrinks back toward its minimum.
  const int64_t now_wall = now_ms();
  for (auto& [hash, p] : st.pools)
    if (p.target > p.min && now_wall - p.last_miss_ms > 60'000) --p.target;
  if (!due.empty()) refill(self);
}

// One pool for runtime_config.warm (the default spec) and one per policy `pools` entry; two
// that plan to the same create config are one pool, their sizes added.
void configure_pools(self_ptr self) {
  auto& st = self->state;
  if (st.cfg.agent_path.empty()) return;
  auto add = [&](const sandbox_spec& spec, std::size_t min, std::size_t max) {
    auto plan = plan_sandbox(st.cfg, "pool", spec, st.cfg.socket_path, now_ms());
    if (!plan) {
      warn(self, "warm pool: its spec is refused by the policy: " + describe(plan.error()));
      return;
    }
    const auto hash = pool_hash(*plan);
    if (hash.empty()) return;
    auto& p = st.pools[hash];
    p.plan = std::move(*plan);
    p.min += min;
    p.max += std::max(max == 0 ? 2 * min : max, min);
    p.target = p.min;
  };
  if (st.cfg.warm > 0) add(sandbox_spec{}, st.cfg.warm, st.cfg.warm_max);
  for (const auto& entry : st.cfg.policy.pools) {
    sandbox_spec spec;
    spec.image = entry.image;
    spec.memory_bytes = entry.memory;
    spec.nano_cpus = entry.nano_cpus;
    spec.pids_limit = entry.pids;
    add(spec, entry.min, entry.max);
  }
}

// How long a container found in `created` is spared after its creation.
constexpr int64_t spare_created_ms = 60'000;

int64_t created_at_of(const docker::container_summary& c) {
  auto created = c.labels.find(label_created_at);
  return created == c.labels.end() ? 0 : std::strtoll(created->second.c_str(), nullptr, 10);
}

void recheck_spared(self_ptr self);

// Run directories (actors/container.cpp) whose sandbox is gone: a container removed by
// another process, by hand, or left by a process that was killed. Every corral container on
// the engine counts (all runtimes share the directory); one made in the last minute may be
// another process's create in flight. Looked at once a minute.
void sweep_run_dirs(self_ptr self) {
  auto& st = self->state;
  if (st.cfg.agent_path.empty() || st.now == phase::shutting_down) return;
  docker::container_list_options options;
  options.all = true;
  options.filters["label"] = {label_sandbox_id};
  st.docker->container_list(
      options, back_to<std::vector<docker::container_summary>>(self, [self](auto listed) {
        auto& st = self->state;
        if (st.now == phase::shutting_down) return;
        self->delayed_send(self, std::chrono::minutes(1), resume_atom_v,
                           continuation{[self] { sweep_run_dirs(self); }});
        if (!listed) return;
        std::set<std::string> live;
        for (const auto& c : *listed)
          if (auto id = c.labels.find(label_sandbox_id); id != c.labels.end())
            live.insert(id->second);
        // A directory listing and a few removals: quick enough for a handler.
        std::error_code ec;
        const auto minute_ago =
            std::filesystem::file_time_type::clock::now() - std::chrono::minutes(1);
        for (const auto& dir : std::filesystem::directory_iterator(st.cfg.agent_run_root, ec)) {
          const auto name = dir.path().filename().string();
          if (live.count(name) || dir.last_write_time(ec) > minute_ago) continue;
          std::filesystem::remove_all(dir.path(), ec);
        }
        // The egress grants of sandboxes gone meanwhile (actors/egress_service.hpp).
        for (const auto& entry :
             std::filesystem::directory_iterator(st.cfg.agent_run_root + ".egress", ec)) {
          auto name = entry.path().filename().string();
          if (name.ends_with(".sock")) name.resize(name.size() - 5);
          if (live.count(name) || entry.last_write_time(ec) > minute_ago) continue;
          std::filesystem::remove(entry.path(), ec);
        }
      }));
}

void adopt_existing(self_ptr self);
void learn_remapped_root(self_ptr self);

// Enters adopting (a shutdown that came meanwhile stays the phase: the adoption still ends,
// so that what a previous run left is not left twice).
void adopt_existing(self_ptr self) {
  auto& st = self->state;
  if (st.now != phase::shutting_down) st.now = phase::adopting;
  docker::container_list_options options;
  options.all = true;
  options.filters["label"] = {std::string(label_managed_by) + "=corral",
                              std::string(label_runtime) + "=" + st.cfg.name};
  st.docker->container_list(
      options, back_to<std::vector<docker::container_summary>>(self, [self](auto listed) {
        auto& st = self->state;
        if (!listed) {
          st.engine_down = from_engine(listed.err(), "listing this runtime's containers");
          return enter_serving(self);
        }
        int64_t spare_for_ms = 0;
        for (const auto& c : *listed) {
          // Past its lifetime (its agent should have ended it): reaped, never adopted.
          if (auto deadline = c.labels.find(label_deadline);
              deadline != c.labels.end() &&
              now_ms() > std::strtoll(deadline->second.c_str(), nullptr, 10)) {
            remove_in_background(self, c.id);
            continue;
          }
          auto key = c.labels.find(label_key);
          const std::string name = c.names.empty() ? std::string() : c.names.front();
          if (key == c.labels.end() && is_unclaimed_name(name)) {
            // A cold create not claimed yet: its maker died before the rename (removed), or
            // another process of this name is making it (spared for a minute, unless this
            // process holds the name alone).
            const int64_t age = now_ms() - created_at_of(c);
            if (age < spare_created_ms && !st.cfg.exclusive_name) {
              st.spared.push_back(c.id);
              spare_for_ms = std::max(spare_for_ms, spare_created_ms - age);
            } else {
              remove_in_background(self, c.id);
            }
            continue;
          }
          if (auto pool = c.labels.find(label_pool);
              pool != c.labels.end() && key == c.labels.end() && c.state != "running" &&
              st.pools.count(pool->second)) {
            // A member of this runtime's pool that never started (its maker died: only the
            // holder of the runtime's name makes members) or has ended: of no use to anyone.
            remove_in_background(self, c.id);
            continue;
          }
          if (key == c.labels.end() && c.labels.count(label_sandbox_id) && c.state == "running" &&
              st.agents) {
            // Claimed by rename (a pool member, or a cold sandbox made with the agent), or a
            // pool member not claimed yet: its agent says whose it is (container actor,
            // adopt_unkeyed). An unclaimed one of a pool this runtime does not keep is left
            // alone: another process of this name may keep that pool (an embedded CLI beside
            // its node), and its agent ends it after its unclaimed limit otherwise.
            auto pool = c.labels.find(label_pool);
            const bool kept = pool != c.labels.end() && st.pools.count(pool->second) > 0;
            if (!kept && is_pool_member_name(name)) continue;
            auto plan = kept ? st.pools[pool->second].plan : adopted_plan(self, c);
            spawn_member(self, kept ? pool->second : std::string(), plan, c.id);
            continue;
          }
          const bool adoptable = key != c.labels.end() && !check_key(key->second) &&
                                 c.state == "running" &&
                                 st.sandboxes.find(key->second) == st.sandboxes.end();
          if (!adoptable) {
            // Stuck in created, exited, or a duplicate key after a crash: it cannot be owned.
            // One created in the last minute may be another process's, still starting: spared,
            // and looked at again when the minute is over.
            const int64_t age = now_ms() - created_at_of(c);
            if (c.state == "created" && age < spare_created_ms && !st.cfg.exclusive_name) {
              st.spared.push_back(c.id);
              spare_for_ms = std::max(spare_for_ms, spare_created_ms - age);
              continue;
            }
            remove_in_background(self, c.id);
            continue;
          }
          adopt_one(self, c, key->second);
        }
        if (!st.spared.empty()) {
          self->delayed_send(self, std::chrono::milliseconds(spare_for_ms + 1000), resume_atom_v,
                             continuation{[self] { recheck_spared(self); }});
        }
        sweep_run_dirs(self);
        st.listed = true;
        maybe_ready(self);
      }));
}

// The spared containers, once their grace is over: adopted if running under a key nobody
// holds, removed otherwise.
void recheck_spared(self_ptr self) {
  auto& st = self->state;
  if (st.spared.empty() || st.now == phase::shutting_down) return;
  docker::container_list_options options;
  options.all = true;
  options.filters["label"] = {std::string(label_managed_by) + "=corral",
                              std::string(label_runtime) + "=" + st.cfg.name};
  st.docker->container_list(
      options, back_to<std::vector<docker::container_summary>>(self, [self](auto listed) {
        auto& st = self->state;
        if (st.now == phase::shutting_down) return;
        if (!listed) {
          self->delayed_send(self, std::chrono::seconds(5), resume_atom_v,
                             continuation{[self] { recheck_spared(self); }});
          return;
        }
        auto spared = std::move(st.spared);
        st.spared.clear();
        for (const auto& c : *listed) {
          if (std::find(spared.begin(), spared.end(), c.id) == spared.end()) continue;
          auto key = c.labels.find(label_key);
          const std::string name = c.names.empty() ? std::string() : c.names.front();
          if (key == c.labels.end() && is_unclaimed_name(name)) {
            remove_in_background(self, c.id);  // never claimed in a minute: its maker died
            continue;
          }
          if (key == c.labels.end() && c.labels.count(label_sandbox_id) && c.state == "running" &&
              st.agents && !is_pool_member_name(name)) {
            // Claimed by its maker meanwhile (renamed to a key's name): its agent says whose
            // it is, as at start (adopt_existing).
            auto pool = c.labels.find(label_pool);
            const bool kept = pool != c.labels.end() && st.pools.count(pool->second) > 0;
            spawn_member(self, kept ? pool->second : std::string(),
                         kept ? st.pools[pool->second].plan : adopted_plan(self, c), c.id);
            continue;
          }
          if (auto pool = c.labels.find(label_pool);
              pool != c.labels.end() && key == c.labels.end() && c.state == "running") {
            // A pool member whose creator finished it meanwhile: as at start (adopt_existing).
            if (st.pools.count(pool->second) && st.agents)
              spawn_member(self, pool->second, st.pools[pool->second].plan, c.id);
            continue;
          }
          if (key != c.labels.end() && !check_key(key->second) && c.state == "running" &&
              st.sandboxes.find(key->second) == st.sandboxes.end()) {
            adopt_one(self, c, key->second);
          } else {
            remove_in_background(self, c.id);
          }
        }
      }));
}

void enter_connecting(self_ptr self) {
  auto& st = self->state;
  if (st.now == phase::shutting_down) return;
  st.now = phase::connecting;
  st.docker->negotiate(back_to<docker::version_response>(self, [self](auto version) {
    auto& st = self->state;
    if (!version) {
      st.engine_down = from_engine(version.err(), "connecting to the Docker engine");
      return enter_serving(self);
    }
    st.engine_down = caf::error{};
    subscribe_events(self);
    if (st.cfg.agent_path.empty() || st.cfg.agent_root_uid != 0) return adopt_existing(self);
    learn_remapped_root(self);
  }));
}

// On an engine that remaps user namespaces, the sandbox's root is a host uid, and the run
// directory (where the agent, that root, makes its socket) must be that uid's. The engine's
// data root names the pair: /var/lib/docker/165536.165536. Without an answer, root's it stays.
void learn_remapped_root(self_ptr self) {
  self->state.docker->info(back_to<docker::system_info>(self, [self](auto info) {
    auto& st = self->state;
    if (info && info->userns_remapped()) {
      const std::string root = info->docker_root_dir;
      const auto slash = root.rfind('/');
      const std::string last = slash == std::string::npos ? root : root.substr(slash + 1);
      unsigned long uid = 0, gid = 0;
      char end = 0;
      if (std::sscanf(last.c_str(), "%lu.%lu%c", &uid, &gid, &end) == 2 && uid > 0 &&
          uid <= UINT32_MAX && gid <= UINT32_MAX) {
        st.cfg.agent_root_uid = static_cast<uint32_t>(uid);
        st.cfg.agent_root_gid = static_cast<uint32_t>(gid);
      }
    }
    adopt_existing(self);
  }));
}

// -- requests ------------------------------------------------------------------------------

// The answer for a key the runtime does not hold: malformed, or simply unknown.
caf::error unknown_key(const std::string& key) {
  if (auto err = check_key(key)) return err;
  return make_error(corral_errc::not_found, "no sandbox with key " + key);
}

// At most this many tries of one acquire: a container actor that was gone when asked is
// retried on a fresh sandbox, once.
constexpr int acquire_attempts = 2;

void do_acquire(self_ptr self, caf::typed_response_promise<sandbox_info> rp, const std::string& key,
                const sandbox_spec& spec, int attempt = 1);

// The container actor of `key` answers the acquire when its sandbox is ready (or failed).
// `claimed_at`: set for a sandbox taken from the warm pool (its claim time goes to the stats).
void acquire_from(self_ptr self, caf::typed_response_promise<sandbox_info> rp,
                  const std::string& key, const sandbox_spec& spec, int attempt,
                  std::optional<std::chrono::steady_clock::time_point> claimed_at = {}) {
  const auto handle = self->state.sandboxes[key].handle;
  ask<sandbox_info>(
      self, handle, "acquiring sandbox " + key,
      [self, rp, claimed_at](sandbox_info& info) mutable {
        if (claimed_at) {
          refill(self);
          self->state.stats.pool_claim_us_total +=
              static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                        std::chrono::steady_clock::now() - *claimed_at)
                                        .count());
        }
        rp.deliver(std::move(info));
      },
      [self, rp, key, spec, attempt](caf::error err, bool gone) mutable {
        // Gone before it could answer: forget it, and try once more on a fresh sandbox.
        if (gone && attempt < acquire_attempts) return do_acquire(self, rp, key, spec, attempt + 1);
        rp.deliver(std::move(err));
      },
      acquire_atom_v);
}

void do_acquire(self_ptr self, caf::typed_response_promise<sandbox_info> rp, const std::string& key,
                const sandbox_spec& spec, int attempt) {
  auto& st = self->state;
  if (st.now == phase::shutting_down)
    return void(rp.deliver(make_error(corral_errc::shutting_down, "the runtime is stopping")));
  if (st.engine_down) return void(rp.deliver(st.engine_down));
  if (auto err = check_key(key)) return void(rp.deliver(err));
  if (auto it = st.sandboxes.find(key); it != st.sandboxes.end()) {
    if (it->second.handle && !is_terminal(it->second.info.status) &&
        it->second.info.status != sandbox_status::stopping) {
      // Never another caller's spec: one who asks for something else is told what differs.
      if (!it->second.asked.empty()) {
        const auto differ =
            differing_fields(it->second.asked, make_spec_record(spec, st.cfg.spec_secret));
        if (!differ.empty()) {
          std::string fields;
          for (const auto& f : differ) fields += (fields.empty() ? "" : ", ") + f;
          return void(rp.deliver(make_error(
              corral_errc::conflict,
              "sandbox " + key + " exists with another spec; these fields differ: " + fields +
                  " (release it first, or ask for the same)")));
        }
      }
      it->second.info.last_used_ms = now_ms();
      return acquire_from(self, rp, key, spec, attempt);
    }
    if (!it->second.handle)
      st.sandboxes.erase(it);  // a tombstone: start afresh
    else
      return void(rp.deliver(make_error(corral_errc::sandbox_lost,
                                        "sandbox " + key + " is being released; try again")));
  }
  auto plan = plan_sandbox(st.cfg, key, spec, st.cfg.socket_path, now_ms());
  if (!plan) return void(rp.deliver(plan.error()));
  if (auto hash = st.pools.empty() ? std::string() : pool_hash(*plan); !hash.empty()) {
    if (auto member = take_member(self, hash)) {
      // A warm sandbox: its container actor renames it to the key's name and binds it.
      const auto started = std::chrono::steady_clock::now();
      entry e;
      e.asked = decode_spec_record(plan->spec_record);
      e.idle_limit = plan->idle_limit;
      e.memory = plan_memory(*plan);
      e.handle = member;
      e.info.key = key;
      e.info.status = sandbox_status::starting;
      e.info.created_ms = now_ms();
      e.info.last_used_ms = e.info.created_ms;
      st.key_by_actor[member.address()] = key;
      st.sandboxes[key] = std::move(e);
      st.stats.pool_hits++;
      st.misses_in_a_row = 0;
      caf::anon_send(caf::actor_cast<caf::actor>(member), claim_atom_v,
                     pool_claim{key, std::make_shared<const sandbox_plan>(std::move(*plan))});
      refill(self);
      return acquire_from(self, rp, key, spec, attempt, started);
    }
    if (auto pool = st.pools.find(hash); pool != st.pools.end()) {
      // Empty: a cold create, and the pool grows toward its maximum while misses go on.
      auto& p = pool->second;
      st.stats.pool_misses++;
      p.last_miss_ms = now_ms();
      if (p.target < p.max) ++p.target;
      if (++st.misses_in_a_row == 2 * p.max)
        warn(self, "warm pool: " + std::to_string(st.misses_in_a_row) +
                       " acquires in a row found it empty (target " + std::to_string(p.target) +
                       ", max " + std::to_string(p.max) + "); consider a larger --warm");
      refill(self);
    }
  }
  const auto& budget = st.cfg.policy.budget;
  make_room(self, plan_memory(*plan));
  if (live_count(self) >= budget.sandboxes && st.client_releases > 0) {
    // Full, but a release is on its way (`corral run`'s detached one, say): wait for it
    // rather than refuse a caller who released before asking.
    st.room_waiters.emplace_back(
        [self, rp, key, spec, attempt]() mutable { do_acquire(self, rp, key, spec, attempt); });
    return;
  }
  if (live_count(self) >= budget.sandboxes) {
    return void(rp.deliver(make_error(
        corral_errc::capacity, "the runtime holds its maximum of " +
                                   std::to_string(budget.sandboxes) +
                                   " sandboxes (policy key budget.sandboxes); release one first")));
  }
  if (st.memory_in_use + plan->create.host.memory > budget.memory) {
    return void(rp.deliver(make_error(
        corral_errc::capacity,
        "a sandbox of " + format_size(plan->create.host.memory) + " memory does not fit: " +
            format_size(st.memory_in_use) + " of the runtime's " + format_size(budget.memory) +
            " are held by live sandboxes (policy key budget.memory); release one first")));
  }
  spawn_entry(self, key, std::move(*plan), {});
  st.stats.created_total++;
  acquire_from(self, rp, key, spec, attempt);
}

// A container actor answered its release: the sandbox is done with. Forget it now, not when
// the actor's down message comes, so a caller who saw the release finish can use the freed
// capacity and key (and finds the key unknown) at once.
void retire(self_ptr self, const std::string& key, const caf::actor_addr& source,
            const sandbox_info& info) {
  auto& st = self->state;
  auto it = st.sandboxes.find(key);
  if (it == st.sandboxes.end() || !it->second.handle || it->second.handle.address() != source ||
      !is_terminal(info.status)) {
    return;
  }
  st.key_by_container.erase(info.container_id);
  drop_handle(self, it->second);
  if (info.status == sandbox_status::removed) {
    st.stats.released_total++;
    st.sandboxes.erase(it);
    return;
  }
  it->second.info = info;  // a tombstone that says what happened
}

std::vector<std::string> prune_where(self_ptr self,
                                     const std::function<bool(const entry&)>& expired) {
  std::vector<std::string> pruned;
  for (auto& [key, e] : self->state.sandboxes) {
    if (!e.handle || e.info.status != sandbox_status::ready || e.info.execs_in_flight > 0) continue;
    if (!expired(e)) continue;
    pruned.push_back(key);
    self->state.stats.pruned_total++;
    e.info.status = sandbox_status::stopping;
    self->request(e.handle, std::chrono::minutes(2), release_atom_v, release_mode::wait_for_execs)
        .then([self, key = key, source = e.handle.address()](
                  const sandbox_info& info) { retire(self, key, source, info); },
              [](const caf::error&) {});
  }
  return pruned;
}

void release_all(self_ptr self, release_mode mode, const std::function<void(uint64_t)>& done,
                 std::chrono::milliseconds patience = std::chrono::minutes(5)) {
  auto count = std::make_shared<uint64_t>(0);
  auto pending = std::make_shared<uint64_t>(0);
  for (auto& [key, e] : self->state.sandboxes) {
    if (!e.handle) continue;
    ++*pending;
  }
  if (*pending == 0) return done(0);
  auto one_done = [count, pending, done](bool released) {
    if (released) ++*count;
    if (--*pending == 0) done(*count);
  };
  for (auto& [key, e] : self->state.sandboxes) {
    if (!e.handle) continue;
    self->request(e.handle, patience, release_atom_v, mode)
        .then(
            [self, one_done, key = key, source = e.handle.address()](const sandbox_info& info) {
              retire(self, key, source, info);
              one_done(true);
            },
            [self, one_done, key = key, handle = e.handle](const caf::error&) {
              if (!handle) return one_done(false);
              // Out of patience: cancel what still runs, and wait for the removal.
              self->request(handle, std::chrono::minutes(2), release_atom_v,
                            release_mode::cancel_execs)
                  .then(
                      [self, one_done, key, source = handle.address()](const sandbox_info& info) {
                        retire(self, key, source, info);
                        one_done(true);
                      },
                      [one_done](const caf::error&) { one_done(false); });
            });
  }
}

void quit_when_answered(self_ptr self) {
  auto& st = self->state;
  if (!st.quit_reason || st.client_releases > 0 || st.cleanups > 0) return;
  st.docker->shutdown();
  self->quit(*st.quit_reason);
}

void shut_down(self_ptr self, const caf::error& reason) {
  auto& st = self->state;
  if (st.now == phase::shutting_down) return;
  st.now = phase::shutting_down;
  // Requests that waited for serving are answered now (they refuse: the runtime is stopping).
  // The start-up's own steps may never end once the last release is answered and the
  // supervisor quits, and CAF 0.17 tells a caller nothing of a promise dropped with it.
  auto deferred = std::move(st.deferred);
  st.deferred.clear();
  for (auto& f : deferred) f();
  if (st.events_stream != 0) st.docker->cancel(st.events_stream);
  auto finish = [self, reason] {
    self->state.quit_reason = reason;
    quit_when_answered(self);
  };
  if (st.cfg.keep_sandboxes_on_shutdown) {
    // Kept for the next start to adopt: the container actors go, the containers stay.
    for (auto& [key, e] : st.sandboxes) {
      if (e.handle) self->send_exit(e.handle, caf::exit_reason::user_shutdown);
    }
    for (auto& [addr, m] : st.members) self->send_exit(m.handle, caf::exit_reason::user_shutdown);
    return finish();
  }
  // The pool's members go with the runtime, awaited like the sandboxes (the next run of this
  // name would adopt them, but a stopped runtime keeps nothing running).
  for (auto& [addr, m] : st.members) {
    ++st.cleanups;
    self->request(m.handle, std::chrono::minutes(2), release_atom_v, release_mode::cancel_execs)
        .then(
            [self](const sandbox_info&) {
              --self->state.cleanups;
              quit_when_answered(self);
            },
            [self](const caf::error&) {
              --self->state.cleanups;
              quit_when_answered(self);
            });
  }
  // Running execs get the grace period; whatever still runs after it is cancelled.
  auto release = [self, finish] {
    release_all(
        self, release_mode::wait_for_execs, [finish](uint64_t) { finish(); },
        self->state.cfg.shutdown_grace);
  };
  // What a crashed run left in `created` goes first (nobody holds it), before the engine
  // client is shut down.
  auto spared = std::move(st.spared);
  st.spared.clear();
  if (spared.empty()) return release();
  auto left = std::make_shared<std::size_t>(spared.size());
  for (const auto& id : spared) {
    st.docker->container_remove(id, true, back_to<void>(self, [left, release](auto) {
                                  if (--*left == 0) release();
                                }));
  }
}

supervisor_impl_actor::behavior_type supervisor_impl(self_ptr self, runtime_config cfg,
                                                     container_factory make) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.make_container = std::move(make);
  if (st.cfg.spec_secret.empty()) st.cfg.spec_secret = load_spec_secret(st.cfg.spec_secret_path);
  st.stats.runtime_name = st.cfg.name;
  st.stats.capacity = st.cfg.policy.budget.sandboxes;
  if (st.cfg.socket_path.empty()) {
    auto socket = docker::resolve_engine_socket();
    if (socket)
      st.cfg.socket_path = *socket;
    else
      st.engine_down = from_engine(socket.err(), "finding the Docker engine");
  }
  docker::client_options options;
  options.http.socket_path =
      st.cfg.socket_path.empty() ? "/var/run/docker.sock" : st.cfg.socket_path;
  options.http.default_timeout = st.cfg.engine_timeout;
  st.docker = std::make_shared<docker::client>(options);
  if (!st.cfg.agent_path.empty()) st.agents = std::make_shared<agent_hub>();
  configure_pools(self);
  if (st.engine_down)
    enter_serving(self);
  else
    enter_connecting(self);
  self->delayed_send(self, st.cfg.prune_interval, prune_tick_atom_v);

  self->set_exit_handler([self](caf::exit_msg& msg) { shut_down(self, msg.reason); });
  self->set_down_handler(
      [self](caf::down_msg& msg) { container_gone(self, msg.source, msg.reason); });

  return {
      [self](acquire_atom, std::string& key, sandbox_spec& spec) -> caf::result<sandbox_info> {
        auto rp = self->make_response_promise<sandbox_info>();
        when_serving(self, [self, rp, key = std::move(key), spec = std::move(spec)]() mutable {
          do_acquire(self, rp, key, spec);
        });
        return rp;
      },
      [self](lookup_atom, std::string& key) -> caf::result<sandbox_info> {
        auto rp = self->make_response_promise<sandbox_info>();
        when_serving(self, [self, rp, key = std::move(key)]() mutable {
          auto& st = self->state;
          auto it = st.sandboxes.find(key);
          if (it == st.sandboxes.end()) return void(rp.deliver(unknown_key(key)));
          if (!it->second.handle) return void(rp.deliver(it->second.info));
          ask<sandbox_info>(
              self, it->second.handle, "looking up sandbox " + key,
              [rp](sandbox_info& info) mutable { rp.deliver(std::move(info)); },
              [rp](caf::error err, bool) mutable { rp.deliver(std::move(err)); }, lookup_atom_v);
        });
        return rp;
      },
      [self](exec_atom, std::string& key, exec_request& request) -> caf::result<exec_result> {
        auto rp = self->make_response_promise<exec_result>();
        when_serving(self, [self, rp, key = std::move(key),
                            request = std::move(request)]() mutable {
          auto& st = self->state;
          auto it = st.sandboxes.find(key);
          if (it == st.sandboxes.end()) return void(rp.deliver(unknown_key(key)));
          if (!it->second.handle) {
            return void(rp.deliver(make_error(
                corral_errc::sandbox_lost,
                "sandbox " + key + " is " + to_string(it->second.info.status) +
                    (it->second.info.detail.empty() ? "" : ": " + it->second.info.detail))));
          }
          const auto budget = st.cfg.policy.budget.execs;
          if (st.execs_in_flight >= budget) {
            return void(rp.deliver(make_error(
                corral_errc::capacity, "the runtime runs its maximum of " + std::to_string(budget) +
                                           " commands (policy key budget.execs); try again")));
          }
          it->second.info.last_used_ms = now_ms();
          it->second.info.execs_in_flight++;  // until the container's next update says otherwise
          st.stats.execs_total++;
          ++st.execs_in_flight;
          ask<exec_result>(
              self, it->second.handle, "running a command in sandbox " + key,
              [self, rp](exec_result& result) mutable {
                --self->state.execs_in_flight;
                rp.deliver(std::move(result));
              },
              [self, rp](caf::error err, bool) mutable {
                --self->state.execs_in_flight;
                rp.deliver(std::move(err));
              },
              exec_atom_v, std::move(request));
        });
        return rp;
      },
      [self](release_atom, std::string& key, release_mode mode) -> caf::result<sandbox_info> {
        auto rp = self->make_response_promise<sandbox_info>();
        when_serving(self, [self, rp, key = std::move(key), mode]() mutable {
          auto& st = self->state;
          auto it = st.sandboxes.find(key);
          if (it == st.sandboxes.end()) return void(rp.deliver(unknown_key(key)));
          if (auto handle = it->second.handle; handle && mode == release_mode::detach) {
            // Answered now; the removal is awaited by the runtime (and by its shutdown).
            auto info = it->second.info;
            info.status = sandbox_status::stopping;
            rp.deliver(info);
            ++st.client_releases;
            ask<sandbox_info>(
                self, handle, "releasing sandbox " + key,
                [self, key, source = handle.address()](sandbox_info& info) {
                  retire(self, key, source, info);
                  --self->state.client_releases;
                  quit_when_answered(self);
                },
                [self, key](const caf::error&, bool gone) {
                  auto& st = self->state;
                  auto it = st.sandboxes.find(key);
                  if (gone && it != st.sandboxes.end() && !it->second.handle)
                    st.sandboxes.erase(it);
                  --st.client_releases;
                  quit_when_answered(self);
                },
                release_atom_v, release_mode::cancel_execs);
            return;
          }
          if (auto handle = it->second.handle) {
            ++st.client_releases;
            ask<sandbox_info>(
                self, handle, "releasing sandbox " + key,
                [self, rp, key, source = handle.address()](sandbox_info& info) mutable {
                  retire(self, key, source, info);
                  rp.deliver(std::move(info));
                  --self->state.client_releases;
                  quit_when_answered(self);
                },
                [self, rp, key](caf::error err, bool gone) mutable {
                  // Gone: the sandbox is released all the same; say what became of it.
                  auto& st = self->state;
                  auto it = st.sandboxes.find(key);
                  if (gone && it != st.sandboxes.end() && !it->second.handle) {
                    rp.deliver(it->second.info);
                    st.sandboxes.erase(it);
                  } else {
                    rp.deliver(std::move(err));
                  }
                  --st.client_releases;
                  quit_when_answered(self);
                },
                release_atom_v, mode);
            return;
          }
          auto info = it->second.info;
          st.sandboxes.erase(it);
          rp.deliver(info);
        });
        return rp;
      },
      [self](release_all_atom, release_mode mode) -> caf::result<uint64_t> {
        auto rp = self->make_response_promise<uint64_t>();
        when_serving(self, [self, rp, mode]() mutable {
          release_all(self, mode, [rp](uint64_t n) mutable { rp.deliver(n); });
        });
        return rp;
      },
      [self](list_atom) -> caf::result<std::vector<sandbox_info>> {
        auto rp = self->make_response_promise<std::vector<sandbox_info>>();
        when_serving(self, [self, rp]() mutable {
          // Ask every live container for its own state (fresher than the last update);
          // tombstones answer from the supervisor's record.
          auto out = std::make_shared<std::vector<sandbox_info>>();
          auto pending = std::make_shared<std::size_t>(1);
          auto done = [rp, out, pending]() mutable {
            if (--*pending == 0) {
              std::sort(out->begin(), out->end(),
                        [](const auto& a, const auto& b) { return a.key < b.key; });
              rp.deliver(std::move(*out));
            }
          };
          for (const auto& [key, e] : self->state.sandboxes) {
            if (!e.handle) {
              out->push_back(e.info);
              continue;
            }
            ++*pending;
            self->request(e.handle, std::chrono::seconds(10), lookup_atom_v)
                .then(
                    [out, done](sandbox_info& info) mutable {
                      out->push_back(std::move(info));
                      done();
                    },
                    [out, done, info = e.info](caf::error&) mutable {
                      out->push_back(info);
                      done();
                    });
          }
          done();
        });
        return rp;
      },
      [self](stats_atom) -> runtime_stats {
        auto s = self->state.stats;
        s.live_sandboxes = live_count(self);
        s.execs_in_flight = 0;
        for (const auto& [key, e] : self->state.sandboxes)
          s.execs_in_flight += e.info.execs_in_flight;
        for (const auto& [hash, p] : self->state.pools) {
          s.pool_ready += p.ready.size();
          s.pool_warming += p.warming;
          s.pool_target += p.target;
        }
        return s;
      },
      [self](prune_atom, caf::timespan idle,
             caf::timespan max_age) -> caf::result<std::vector<std::string>> {
        if (idle.count() < 0 || max_age.count() < 0) {
          return make_error(corral_errc::invalid_request,
                            "prune: idle and max-age must not be negative");
        }
        auto rp = self->make_response_promise<std::vector<std::string>>();
        when_serving(self, [self, rp, idle, max_age]() mutable {
          const int64_t now = now_ms();
          const int64_t idle_ms =
              std::chrono::duration_cast<std::chrono::milliseconds>(idle).count();
          const int64_t age_ms =
              std::chrono::duration_cast<std::chrono::milliseconds>(max_age).count();
          rp.deliver(prune_where(self, [&](const entry& e) {
            return (idle_ms > 0 && now - e.info.last_used_ms >= idle_ms) ||
                   (age_ms > 0 && now - e.info.created_ms >= age_ms);
          }));
        });
        return rp;
      },
      [](hello_atom, int32_t) -> caf::result<int32_t, std::string> {
        return caf::make_result(protocol_version, std::string(corral_version));
      },
      // In-process callers are the embedder's: one namespace, no principals.
      [](hello_atom, int32_t, const std::string&) -> caf::result<int32_t, std::string> {
        return caf::make_result(protocol_version, std::string(corral_version));
      },
      [](resume_atom, continuation& step) { step.run(); },
      [self](update_atom, std::string& bound_spec) {
        // An adopted member's bound spec (container actor, bound_agent), before it says ready.
        auto& st = self->state;
        if (auto sender = self->current_sender(); sender) {
          if (auto m = st.members.find(sender->address()); m != st.members.end())
            m->second.bound_spec = std::move(bound_spec);
        }
      },
      [self](update_atom, sandbox_info& info, caf::actor& monitor) {
        auto& st = self->state;
        if (auto sender = self->current_sender(); sender && st.members.count(sender->address()))
          return member_update(self, sender->address(), info, monitor);
        auto it = st.sandboxes.find(info.key);
        if (it == st.sandboxes.end() || !it->second.handle ||
            it->second.handle.address() != self->current_sender()->address()) {
          return;  // from a container actor this key no longer maps to
        }
        auto& e = it->second;
        // The supervisor may know of a newer use than the container has reported yet.
        info.last_used_ms = std::max(info.last_used_ms, e.info.last_used_ms);
        if (!info.container_id.empty()) st.key_by_container[info.container_id] = info.key;
        if (info.memory_bytes > 0 && info.memory_bytes != e.memory) {
          st.memory_in_use += info.memory_bytes - e.memory;  // an adopted one, inspected
          e.memory = info.memory_bytes;
        }
        e.info = std::move(info);
        e.monitor = std::move(monitor);
      },
      [self](prune_tick_atom) {
        auto& st = self->state;
        if (st.now == phase::shutting_down) return;
        if (st.engine_down && st.now == phase::serving) {
          // Try the engine again: the runtime recovers when it comes back.
          enter_connecting(self);
        }
        const int64_t now = now_ms();
        prune_where(self, [now](const entry& e) {
          return e.idle_limit.count() > 0 && now - e.info.last_used_ms >= e.idle_limit.count();
        });
        if (st.now == phase::serving) recycle_members(self);
        self->delayed_send(self, st.cfg.prune_interval, prune_tick_atom_v);
      },
      [self](resubscribe_atom) {
        if (self->state.now != phase::shutting_down) subscribe_events(self);
      },
  };
}

}  // namespace

messages::supervisor_actor spawn_supervisor(caf::actor_system& sys, runtime_config cfg) {
  return spawn_supervisor_with(sys, std::move(cfg), spawn_container);
}

messages::supervisor_actor spawn_supervisor_with(caf::actor_system& sys, runtime_config cfg,
                                                 container_factory make) {
  // One egress proxy per runtime, started by its first sandbox with egress.
  if (!cfg.egress) cfg.egress = std::make_shared<egress_service>(cfg.egress_options);
  return sys.spawn(supervisor_impl, std::move(cfg), std::move(make));
}

}  // namespace corral::actors
