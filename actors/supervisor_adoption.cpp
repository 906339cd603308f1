// What the supervisor finds on the engine at start-up and keeps watching: the engine's events
// for this runtime's containers (one subscription), the adoption of what a previous run left
// (the adopting phase, entered through adopt_existing), the containers spared for a minute and
// looked at again, and the sweep of run directories whose sandbox is gone. Apart from
// supervisor.cpp: none of it is a request's work.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors/engine_bridge.hpp"
#include "actors/engine_errors.hpp"
#include "actors/policy.hpp"
#include "actors/supervisor_state.hpp"
#include "docker/client.hpp"

namespace corral::actors::supervisor_detail {

// -- engine events: one subscription for the whole runtime ---------------------------------

void subscribe_events(self_ptr self) {
  auto& st = self->state;
  // One subscription at a time: a reconnect (after a failed first list, say) keeps the stream
  // that still lives; a second one would deliver every event twice, and replacing it would
  // miss the events between the two.
  if (st.events_stream != 0) return;
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
        self->state.events_stream = 0;
        if (self->state.now == phase::shutting_down) return;
        // The stream broke (engine restart?): try again shortly.
        self->delayed_send(self, std::chrono::seconds(1), resubscribe_atom_v);
      }));
}

// -- adoption of what a previous run left --------------------------------------------------

namespace {

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

// How long a container found in `created` is spared after its creation.
constexpr int64_t spare_created_ms = 60'000;

// Every container of this runtime, in any state: what the start-up adoption lists, and the
// re-check of the spared ones.
docker::container_list_options this_runtimes_containers(self_ptr self) {
  docker::container_list_options options;
  options.all = true;
  options.filters["label"] = {std::string(label_managed_by) + "=corral",
                              std::string(label_runtime) + "=" + self->state.cfg.name};
  return options;
}

int64_t created_at_of(const docker::container_summary& c) {
  auto created = c.labels.find(label_created_at);
  return created == c.labels.end() ? 0 : std::strtoll(created->second.c_str(), nullptr, 10);
}

void recheck_spared(self_ptr self);

// Run directories (actors/container_agent.cpp) whose sandbox is gone: a container removed by
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

}  // namespace

// Enters adopting (a shutdown that came meanwhile stays the phase: the adoption still ends,
// so that what a previous run left is not left twice).
void adopt_existing(self_ptr self) {
  auto& st = self->state;
  if (st.now != phase::shutting_down) st.now = phase::adopting;
  st.docker->container_list(
      this_runtimes_containers(self),
      back_to<std::vector<docker::container_summary>>(self, [self](auto listed) {
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
              unix_now_ms() > std::strtoll(deadline->second.c_str(), nullptr, 10)) {
            remove_in_background(self, c.id);
            continue;
          }
          auto key = c.labels.find(label_key);
          const std::string name = c.names.empty() ? std::string() : c.names.front();
          if (key == c.labels.end() && is_unclaimed_name(name)) {
            // A cold create not claimed yet: its maker died before the rename (removed), or
            // another process of this name is making it (spared for a minute, unless this
            // process holds the name alone).
            const int64_t age = unix_now_ms() - created_at_of(c);
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
            const int64_t age = unix_now_ms() - created_at_of(c);
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

namespace {

// The spared containers, once their grace is over: adopted if running under a key nobody
// holds, removed otherwise.
void recheck_spared(self_ptr self) {
  auto& st = self->state;
  if (st.spared.empty() || st.now == phase::shutting_down) return;
  st.docker->container_list(
      this_runtimes_containers(self),
      back_to<std::vector<docker::container_summary>>(self, [self](auto listed) {
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

}  // namespace

}  // namespace corral::actors::supervisor_detail
