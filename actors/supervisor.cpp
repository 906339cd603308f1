#include "actors/supervisor.hpp"

#include <algorithm>
#include <chrono>
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
                             caf::reacts_to<prune_tick_atom>, caf::reacts_to<resubscribe_atom>>;

struct entry {
  container_actor handle;  // empty once the container actor is gone (a tombstone)
  caf::actor monitor;
  sandbox_info info;
  std::chrono::milliseconds idle_limit{0};
  int64_t memory = 0;  // its memory limit, counted against budget.memory while live
  spec_record asked;   // what its creator asked for, per field (empty: not known)
};

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
  bool ready = false;                           // adoption done (or the engine is down)
  caf::error engine_down;                       // set while no engine answers
  std::vector<std::function<void()>> deferred;  // requests that came before `ready`
  // Containers the start-up sweep found in `created` and spared (another process may still
  // be starting them): looked at again once their grace is over, and removed at a releasing
  // shutdown before then. Without this, one that a crashed run left behind was never adopted
  // nor removed (found by tests/crash_trial.sh).
  std::vector<std::string> spared;
  runtime_stats stats;
  docker::unix_http_client::request_id events_stream = 0;
  bool negotiating = false;
  bool shutting_down = false;
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
};

using self_ptr = supervisor_impl_actor::stateful_pointer<supervisor_state>;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool is_terminal(sandbox_status s) {
  return s == sandbox_status::removed || s == sandbox_status::exited ||
         s == sandbox_status::failed || s == sandbox_status::timed_out ||
         s == sandbox_status::oom_killed || s == sandbox_status::killed ||
         s == sandbox_status::lost;
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
}

void set_ready(self_ptr self) {
  auto& st = self->state;
  st.ready = true;
  auto deferred = std::move(st.deferred);
  st.deferred.clear();
  for (auto& f : deferred) f();
}

template <class F>
void when_ready(self_ptr self, F f) {
  if (self->state.ready)
    f();
  else
    self->state.deferred.emplace_back(std::move(f));
}

void container_gone(self_ptr self, const caf::actor_addr& source, const caf::error& reason);
void quit_when_answered(self_ptr self);

// A removal nobody waits for but the supervisor itself: counted until the engine answers.
void remove_in_background(self_ptr self, const std::string& container_id) {
  ++self->state.cleanups;
  self->state.docker->container_remove(container_id, true,
                                       back_to<void>(self, [self](docker::result<void>) {
                                         --self->state.cleanups;
                                         quit_when_answered(self);
                                       }));
}

// Asks a container actor; exactly one of on_value and on_error runs. on_error(err, gone)
// always gets a corral error: the container's own answer (gone false), or sandbox_lost when
// the actor is gone (gone true), whether the request bounced off its closed mailbox or the
// actor died holding it.
template <class T, class OnValue, class OnError, class... Ts>
void ask(self_ptr self, const container_actor& handle, std::string doing, OnValue on_value,
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
    caf::anon_send(caf::actor_cast<caf::actor>(strong), resume_atom_v, continuation{[self, ev] {
                     auto& st = self->state;
                     auto key = st.key_by_container.find(ev.id);
                     if (key == st.key_by_container.end()) return;
                     auto it = st.sandboxes.find(key->second);
                     if (it == st.sandboxes.end() || !it->second.monitor) return;
                     std::string exit_code;
                     if (auto code = ev.attributes.find("exitCode"); code != ev.attributes.end())
                       exit_code = code->second;
                     caf::anon_send(it->second.monitor, engine_event_atom_v, ev.action, exit_code);
                   }});
  };
  st.events_stream = st.docker->events(
      options, std::move(on_event), back_to<void>(self, [self](docker::result<void>) {
        if (self->state.shutting_down) return;
        // The stream broke (engine restart?): try again shortly.
        self->delayed_send(self, std::chrono::seconds(1), resubscribe_atom_v);
      }));
}

// -- adoption of what a previous run left --------------------------------------------------

void spawn_entry(self_ptr self, const std::string& key, sandbox_plan plan, std::string adopt_id) {
  auto& st = self->state;
  container_args args;
  args.docker = st.docker;
  args.agents = st.agents;
  args.cfg = st.cfg;
  args.key = key;
  args.adopt_container_id = std::move(adopt_id);
  args.supervisor = caf::actor_cast<caf::actor>(self);
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

// Takes a container a previous run left (running, with a valid key not held) into the table.
void adopt_one(self_ptr self, const docker::container_summary& c, const std::string& key) {
  auto& st = self->state;
  const auto& pol = st.cfg.policy;
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
  spawn_entry(self, key, std::move(plan), c.id);
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

void recheck_spared(self_ptr self);

// Run directories (actors/container.cpp) whose sandbox is gone: a container removed by
// another process, by hand, or left by a process that was killed. Every corral container on
// the engine counts (all runtimes share the directory); one made in the last minute may be
// another process's create in flight. Looked at once a minute.
void sweep_run_dirs(self_ptr self) {
  auto& st = self->state;
  if (st.cfg.agent_path.empty() || st.shutting_down) return;
  docker::container_list_options options;
  options.all = true;
  options.filters["label"] = {label_sandbox_id};
  st.docker->container_list(
      options, back_to<std::vector<docker::container_summary>>(self, [self](auto listed) {
        auto& st = self->state;
        if (st.shutting_down) return;
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
      }));
}

void adopt_existing(self_ptr self);
void learn_remapped_root(self_ptr self);

void adopt_existing(self_ptr self) {
  auto& st = self->state;
  docker::container_list_options options;
  options.all = true;
  options.filters["label"] = {std::string(label_managed_by) + "=corral",
                              std::string(label_runtime) + "=" + st.cfg.name};
  st.docker->container_list(
      options, back_to<std::vector<docker::container_summary>>(self, [self](auto listed) {
        auto& st = self->state;
        if (!listed) {
          st.engine_down = from_engine(listed.err(), "listing this runtime's containers");
          return set_ready(self);
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
          const bool adoptable = key != c.labels.end() && !check_key(key->second) &&
                                 c.state == "running" &&
                                 st.sandboxes.find(key->second) == st.sandboxes.end();
          if (!adoptable) {
            // Stuck in created, exited, or a duplicate key after a crash: it cannot be owned.
            // One created in the last minute may be another process's, still starting: spared,
            // and looked at again when the minute is over.
            int64_t created_ms = 0;
            if (auto created = c.labels.find(label_created_at); created != c.labels.end()) {
              created_ms = std::strtoll(created->second.c_str(), nullptr, 10);
            }
            const int64_t age = now_ms() - created_ms;
            if (c.state == "created" && age < spare_created_ms) {
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
        set_ready(self);
      }));
}

// The spared containers, once their grace is over: adopted if running under a key nobody
// holds, removed otherwise.
void recheck_spared(self_ptr self) {
  auto& st = self->state;
  if (st.spared.empty() || st.shutting_down) return;
  docker::container_list_options options;
  options.all = true;
  options.filters["label"] = {std::string(label_managed_by) + "=corral",
                              std::string(label_runtime) + "=" + st.cfg.name};
  st.docker->container_list(
      options, back_to<std::vector<docker::container_summary>>(self, [self](auto listed) {
        auto& st = self->state;
        if (st.shutting_down) return;
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
          if (key != c.labels.end() && !check_key(key->second) && c.state == "running" &&
              st.sandboxes.find(key->second) == st.sandboxes.end()) {
            adopt_one(self, c, key->second);
          } else {
            remove_in_background(self, c.id);
          }
        }
      }));
}

void connect_engine(self_ptr self) {
  auto& st = self->state;
  if (st.negotiating) return;
  st.negotiating = true;
  st.docker->negotiate(back_to<docker::version_response>(self, [self](auto version) {
    auto& st = self->state;
    st.negotiating = false;
    if (!version) {
      st.engine_down = from_engine(version.err(), "connecting to the Docker engine");
      return set_ready(self);
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
void acquire_from(self_ptr self, caf::typed_response_promise<sandbox_info> rp,
                  const std::string& key, const sandbox_spec& spec, int attempt) {
  const auto handle = self->state.sandboxes[key].handle;
  ask<sandbox_info>(
      self, handle, "acquiring sandbox " + key,
      [rp](sandbox_info& info) mutable { rp.deliver(std::move(info)); },
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
  if (st.shutting_down)
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
  const auto& budget = st.cfg.policy.budget;
  if (live_count(self) >= budget.sandboxes) {
    return void(rp.deliver(make_error(
        corral_errc::capacity, "the runtime holds its maximum of " +
                                   std::to_string(budget.sandboxes) +
                                   " sandboxes (policy key budget.sandboxes); release one first")));
  }
  auto plan = plan_sandbox(st.cfg, key, spec, st.cfg.socket_path, now_ms());
  if (!plan) return void(rp.deliver(plan.error()));
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

void release_all(self_ptr self, release_mode mode, std::function<void(uint64_t)> done,
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

void shut_down(self_ptr self, caf::error reason) {
  auto& st = self->state;
  if (st.shutting_down) return;
  st.shutting_down = true;
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
    return finish();
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
  if (st.engine_down)
    set_ready(self);
  else
    connect_engine(self);
  self->delayed_send(self, st.cfg.prune_interval, prune_tick_atom_v);

  self->set_exit_handler([self](caf::exit_msg& msg) { shut_down(self, msg.reason); });
  self->set_down_handler(
      [self](caf::down_msg& msg) { container_gone(self, msg.source, msg.reason); });

  return {
      [self](acquire_atom, std::string& key, sandbox_spec& spec) -> caf::result<sandbox_info> {
        auto rp = self->make_response_promise<sandbox_info>();
        when_ready(self, [self, rp, key = std::move(key), spec = std::move(spec)]() mutable {
          do_acquire(self, rp, key, spec);
        });
        return rp;
      },
      [self](lookup_atom, std::string& key) -> caf::result<sandbox_info> {
        auto rp = self->make_response_promise<sandbox_info>();
        when_ready(self, [self, rp, key = std::move(key)]() mutable {
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
        when_ready(self, [self, rp, key = std::move(key), request = std::move(request)]() mutable {
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
        when_ready(self, [self, rp, key = std::move(key), mode]() mutable {
          auto& st = self->state;
          auto it = st.sandboxes.find(key);
          if (it == st.sandboxes.end()) return void(rp.deliver(unknown_key(key)));
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
        when_ready(self, [self, rp, mode]() mutable {
          release_all(self, mode, [rp](uint64_t n) mutable { rp.deliver(n); });
        });
        return rp;
      },
      [self](list_atom) -> caf::result<std::vector<sandbox_info>> {
        auto rp = self->make_response_promise<std::vector<sandbox_info>>();
        when_ready(self, [self, rp]() mutable {
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
        return s;
      },
      [self](prune_atom, caf::timespan idle,
             caf::timespan max_age) -> caf::result<std::vector<std::string>> {
        if (idle.count() < 0 || max_age.count() < 0) {
          return make_error(corral_errc::invalid_request,
                            "prune: idle and max-age must not be negative");
        }
        auto rp = self->make_response_promise<std::vector<std::string>>();
        when_ready(self, [self, rp, idle, max_age]() mutable {
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
      [self](resume_atom, continuation& step) { step.run(); },
      [self](update_atom, sandbox_info& info, caf::actor& monitor) {
        auto& st = self->state;
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
        if (st.shutting_down) return;
        if (st.engine_down && st.ready) {
          // Try the engine again: the runtime recovers when it comes back.
          st.ready = false;
          connect_engine(self);
        }
        const int64_t now = now_ms();
        prune_where(self, [now](const entry& e) {
          return e.idle_limit.count() > 0 && now - e.info.last_used_ms >= e.idle_limit.count();
        });
        self->delayed_send(self, st.cfg.prune_interval, prune_tick_atom_v);
      },
      [self](resubscribe_atom) {
        if (!self->state.shutting_down) subscribe_events(self);
      },
  };
}

}  // namespace

messages::supervisor_actor spawn_supervisor(caf::actor_system& sys, runtime_config cfg) {
  return spawn_supervisor_with(sys, std::move(cfg), spawn_container);
}

messages::supervisor_actor spawn_supervisor_with(caf::actor_system& sys, runtime_config cfg,
                                                 container_factory make) {
  return sys.spawn(supervisor_impl, std::move(cfg), std::move(make));
}

}  // namespace corral::actors
