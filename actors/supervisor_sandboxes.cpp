// The supervisor's keyed sandboxes (supervisor_state.hpp, `sandboxes`) and the work of the
// requests on them: spawning an entry's container actor, acquiring (cold, or from a warm pool),
// retiring a released one, pruning, releasing all, and an entry's container actor gone. Apart
// from supervisor.cpp, whose behavior calls these, so that each file holds one concern.
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors/engine_bridge.hpp"
#include "actors/supervisor_state.hpp"
#include "actors/units.hpp"
#include "docker/client.hpp"
#include "messages/errors.hpp"

namespace corral::actors::supervisor_detail {

namespace {

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

}  // namespace

// A removal nobody waits for but the supervisor itself: counted until the engine answers.
void remove_in_background(self_ptr self, const std::string& container_id) {
  ++self->state.cleanups;
  self->state.docker->container_remove(container_id, true,
                                       back_to<void>(self, [self](const docker::result<void>&) {
                                         --self->state.cleanups;
                                         quit_when_answered(self);
                                       }));
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
  e.info.created_ms = unix_now_ms();
  e.info.last_used_ms = e.info.created_ms;
  e.handle = st.make_container(self->system(), std::move(args));
  self->monitor(e.handle);
  ++st.live;
  st.key_by_actor[e.handle.address()] = key;
  st.sandboxes[key] = std::move(e);
}

// -- requests ------------------------------------------------------------------------------

// The answer for a key the runtime does not hold: malformed, or simply unknown.
caf::error unknown_key(const std::string& key) {
  if (auto err = check_key(key)) return err;
  return make_error(corral_errc::not_found, "no sandbox with key " + key);
}

namespace {

// At most this many tries of one acquire: a container actor that was gone when asked is
// retried on a fresh sandbox, once.
constexpr int acquire_attempts = 2;

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

}  // namespace

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
      it->second.info.last_used_ms = unix_now_ms();
      return acquire_from(self, rp, key, spec, attempt);
    }
    if (!it->second.handle)
      st.sandboxes.erase(it);  // a tombstone: start afresh
    else
      return void(rp.deliver(make_error(corral_errc::sandbox_lost,
                                        "sandbox " + key + " is being released; try again")));
  }
  auto plan = plan_sandbox(st.cfg, key, spec, st.cfg.socket_path, unix_now_ms());
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
      e.info.created_ms = unix_now_ms();
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
      p.last_miss_ms = unix_now_ms();
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
                 std::chrono::milliseconds patience) {
  auto count = gather<uint64_t>([done](uint64_t& n) { done(n); });
  auto one_done = [count](bool released) {
    if (released) ++count->value();
    count->done();
  };
  for (auto& [key, e] : self->state.sandboxes) {
    if (!e.handle) continue;
    count->expect();
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
  count->done();
}

}  // namespace corral::actors::supervisor_detail
