// The supervisor's warm pools (supervisor_state.hpp, `pools` and `members`): making members,
// their updates and deaths, claims, making room in the budget, recycling, and the pools'
// configuration. Apart from supervisor.cpp: a pool's bookkeeping is its own concern, touched
// there only through the functions supervisor_state.hpp declares.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors/policy.hpp"
#include "actors/spec_record.hpp"
#include "actors/supervisor_state.hpp"

namespace corral::actors::supervisor_detail {

// -- the warm pool -------------------------------------------------------------------------
//
// Members are made in the background, `warm_parallel` at a time, until ready + warming reach
// the pool's target; an acquire whose plan has the pool's hash takes the oldest ready one
// (claim_member) and the container actor binds it (actors/container_claim.cpp). A member that dies
// before it is ready backs the refill off (1 s, doubling to 16 s), so a broken image does
// not spin the engine.

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

namespace {

// The member's bookkeeping goes (the budget it held is free); its actor is the caller's to
// end or to let end.
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

}  // namespace

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
  const int64_t now_wall = unix_now_ms();
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
    auto plan = plan_sandbox(st.cfg, "pool", spec, st.cfg.socket_path, unix_now_ms());
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

}  // namespace corral::actors::supervisor_detail
