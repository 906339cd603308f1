// The supervisor actor (supervisor.hpp): its phases, entered through enter_connecting,
// adopt_existing (supervisor_adoption.cpp), enter_serving and shut_down, and its behavior, the
// one place every request comes in. Its state and the phases' diagram are in
// supervisor_state.hpp; the requests' work on the keyed sandboxes is in
// supervisor_sandboxes.cpp, the warm pools in supervisor_pool.cpp.
#include "actors/supervisor.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>

#include <caf/all.hpp>

#include "actors/engine_bridge.hpp"
#include "actors/engine_errors.hpp"
#include "actors/supervisor_state.hpp"
#include "docker/client.hpp"
#include "messages/errors.hpp"

namespace corral::actors::supervisor_detail {

// Adoption done, or no engine to adopt from. A shutdown that came meanwhile stays the phase:
// the requests that waited are run, and refuse.
void enter_serving(self_ptr self) {
  auto& st = self->state;
  if (st.now != phase::shutting_down) st.now = phase::serving;
  st.deferred.run_all();
  refill(self);
}

void quit_when_answered(self_ptr self) {
  auto& st = self->state;
  if (!st.quit_reason || st.client_releases > 0 || st.cleanups > 0) return;
  st.docker->shutdown();
  self->quit(*st.quit_reason);
}

namespace {

template <class F>
void when_serving(self_ptr self, F f) {
  if (self->state.now == phase::serving || self->state.now == phase::shutting_down)
    f();
  else
    self->state.deferred.add(std::move(f));
}

void learn_remapped_root(self_ptr self);

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

void shut_down(self_ptr self, const caf::error& reason) {
  auto& st = self->state;
  if (st.now == phase::shutting_down) return;
  st.now = phase::shutting_down;
  // Requests that waited for serving are answered now (they refuse: the runtime is stopping).
  // The start-up's own steps may never end once the last release is answered and the
  // supervisor quits, and CAF 0.17 tells a caller nothing of a promise dropped with it.
  st.deferred.run_all();
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
          it->second.info.last_used_ms = unix_now_ms();
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
          auto all =
              gather<std::vector<sandbox_info>>([rp](std::vector<sandbox_info>& out) mutable {
                std::sort(out.begin(), out.end(),
                          [](const auto& a, const auto& b) { return a.key < b.key; });
                rp.deliver(std::move(out));
              });
          for (const auto& [key, e] : self->state.sandboxes) {
            if (!e.handle) {
              all->value().push_back(e.info);
              continue;
            }
            all->expect();
            self->request(e.handle, std::chrono::seconds(10), lookup_atom_v)
                .then(
                    [all](sandbox_info& info) {
                      all->value().push_back(std::move(info));
                      all->done();
                    },
                    [all, info = e.info](caf::error&) {
                      all->value().push_back(info);
                      all->done();
                    });
          }
          all->done();
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
          const int64_t now = unix_now_ms();
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
        if (it == st.sandboxes.end() || !it->second.handle || !self->current_sender() ||
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
        const int64_t now = unix_now_ms();
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

}  // namespace corral::actors::supervisor_detail

namespace corral::actors {

messages::supervisor_actor spawn_supervisor(caf::actor_system& sys, runtime_config cfg) {
  return spawn_supervisor_with(sys, std::move(cfg), spawn_container);
}

messages::supervisor_actor spawn_supervisor_with(caf::actor_system& sys, runtime_config cfg,
                                                 container_factory make) {
  // One egress proxy per runtime, started by its first sandbox with egress.
  if (!cfg.egress) cfg.egress = std::make_shared<egress_service>(cfg.egress_options);
  return sys.spawn(supervisor_detail::supervisor_impl, std::move(cfg), std::move(make));
}

}  // namespace corral::actors
