#include "actors/router.hpp"

#include <algorithm>
#include <functional>
#include <map>
#include <memory>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/actor_errors.hpp"
#include "actors/internal_messages.hpp"
#include "actors/pending_calls.hpp"
#include "actors/plumbing.hpp"
#include "actors/supervisor.hpp"
#include "messages/errors.hpp"

namespace corral::actors {

namespace {

using namespace messages;

using router_impl_actor = supervisor_actor::extend<caf::reacts_to<reconnect_atom>>;

struct node_link {
  node_endpoint where;
  std::string name;  // host:port, for messages
  supervisor_actor handle;
  bool connecting = false;
  uint64_t live = 0;
  uint64_t capacity = 1;
};

struct router_state {
  static inline const char* name = "corral.router";
  router_state() = default;
  router_options options;
  std::vector<node_link> nodes;
  std::map<std::string, std::size_t> key_node;  // which node holds a key
  std::size_t pending_connects = 0;
  bool ready = false;
  deferred_work deferred;  // requests that came before the first connections ended
  // Requests sent to nodes and not answered yet. A node that goes down fails them at once
  // (its proxy would never answer: CAF 0.17 only times out).
  pending_calls calls;
};

using self_ptr = router_impl_actor::stateful_pointer<router_state>;

void set_ready(self_ptr self) {
  if (self->state.ready) return;
  self->state.ready = true;
  self->state.deferred.run_all();
}

template <class F>
void when_ready(self_ptr self, F f) {
  if (self->state.ready)
    f();
  else
    self->state.deferred.add(std::move(f));
}

caf::error node_down(const node_link& n, const std::string& key) {
  return make_error(corral_errc::sandbox_lost,
                    "sandbox " + key + " is lost: node " + n.name + " is down");
}

// What the router says of a sandbox whose node is down (lookup, release, list).
sandbox_info lost_with(const node_link& n, const std::string& key) {
  sandbox_info info;
  info.key = key;
  info.status = sandbox_status::lost;
  info.detail = "node " + n.name + " is down";
  return info;
}

// Sends a request to node `index`; exactly one of `on_value` and `on_error` runs: with the
// node's answer, or with a corral error: the node's own, `timeout` when it did not answer in
// time, sandbox_lost as soon as the node goes down.
template <class T, class OnValue, class OnError, class... Ts>
void call(self_ptr self, std::size_t index, caf::timespan timeout, OnValue on_value,
          OnError on_error, Ts&&... xs) {
  auto& n = self->state.nodes[index];
  auto fail = std::make_shared<OnError>(std::move(on_error));
  auto typed = [fail, doing = "asking node " + n.name](const caf::error& err) {
    (*fail)(from_actor(err, corral_errc::sandbox_lost, doing));
  };
  const auto peer = n.handle.address();
  const auto id = self->state.calls.add(peer, typed);
  self->request(n.handle, timeout, std::forward<Ts>(xs)...)
      .then(
          [self, peer, id, on_value](T& value) mutable {
            if (self->state.calls.take(peer, id)) on_value(value);
          },
          [self, peer, id, typed](caf::error& err) {
            if (self->state.calls.take(peer, id)) typed(err);
          });
}

// Learns what a (re)connected node holds (its adopted sandboxes route to it again) and how
// loaded it is; `done` runs when both answers are in.
void learn(self_ptr self, std::size_t index, const std::function<void()>& done) {
  auto both = gather<bool>([done](bool&) { done(); });
  both->expect();  // the second answer; the first is the sender's own part
  auto one = [both] { both->done(); };
  call<std::vector<sandbox_info>>(
      self, index, self->state.options.request_timeout,
      [self, index, one](const std::vector<sandbox_info>& infos) {
        for (const auto& info : infos) self->state.key_node[info.key] = index;
        one();
      },
      [one](const caf::error&) { one(); }, list_atom_v);
  call<runtime_stats>(
      self, index, self->state.options.request_timeout,
      [self, index, one](const runtime_stats& s) {
        auto& n = self->state.nodes[index];
        n.live = s.live_sandboxes;
        n.capacity = std::max<uint64_t>(1, s.capacity);
        one();
      },
      [one](const caf::error&) { one(); }, stats_atom_v);
}

void connect(self_ptr self, std::size_t index) {
  auto& n = self->state.nodes[index];
  if (n.connecting || n.handle) return;
  n.connecting = true;
  auto& sys = self->system();
  // The program's mutual-TLS middleman (app/tls_listener.hpp) when it runs one.
  auto tls = caf::actor_cast<caf::io::middleman_actor>(sys.registry().get(caf::atom("corral-tls")));
  auto mm = tls ? tls : sys.middleman().actor_handle();
  std::function<void()> done = [self, index] {
    self->state.nodes[index].connecting = false;
    if (self->state.pending_connects > 0 && --self->state.pending_connects == 0) set_ready(self);
  };
  self->request(mm, self->state.options.connect_timeout, caf::connect_atom_v, n.where.host,
                n.where.port)
      .then(
          [self, index, done](const caf::node_id&, caf::strong_actor_ptr& ptr,
                              const std::set<std::string>& ifs) {
            auto& n = self->state.nodes[index];
            if (!ptr || ifs != self->system().message_types<supervisor_actor>()) {
              // Not a corral node of this version: stay down, try again later.
              return done();
            }
            n.handle = caf::actor_cast<supervisor_actor>(ptr);
            self->monitor(n.handle);
            // Who this router speaks for (the node scopes keys by it), then what it holds.
            self->request(n.handle, self->state.options.connect_timeout, hello_atom_v,
                          protocol_version, self->state.options.principal)
                .then(
                    [self, index, done](int32_t, const std::string&) { learn(self, index, done); },
                    [self, index, done](const caf::error&) {
                      self->state.nodes[index].handle = nullptr;
                      done();
                    });
          },
          [done](const caf::error&) { done(); });
}

// Least loaded node (live against capacity) that has room; -1 when none does.
int place(self_ptr self) {
  int best = -1;
  double best_load = 2.0;
  for (std::size_t i = 0; i < self->state.nodes.size(); ++i) {
    const auto& n = self->state.nodes[i];
    if (!n.handle || n.live >= n.capacity) continue;
    const double load = static_cast<double>(n.live) / static_cast<double>(n.capacity);
    if (load < best_load) {
      best_load = load;
      best = static_cast<int>(i);
    }
  }
  return best;
}

// Runs `on_node` for a key's node, or answers for a key that is unknown or on a dead node.
template <class Rp, class OnNode, class OnDown>
void route(self_ptr self, const std::string& key, Rp& rp, OnNode on_node, OnDown on_down) {
  auto it = self->state.key_node.find(key);
  if (it == self->state.key_node.end()) {
    rp.deliver(make_error(corral_errc::not_found, "no sandbox with key " + key + " on any node"));
    return;
  }
  auto& n = self->state.nodes[it->second];
  if (!n.handle) return on_down(n);
  on_node(n);
}

router_impl_actor::behavior_type router_impl(self_ptr self, router_options options) {
  auto& st = self->state;
  st.options = std::move(options);
  for (const auto& where : st.options.nodes) {
    node_link n;
    n.where = where;
    n.name = where.host + ":" + std::to_string(where.port);
    st.nodes.push_back(std::move(n));
  }
  st.pending_connects = st.nodes.size();
  if (st.nodes.empty()) set_ready(self);
  for (std::size_t i = 0; i < st.nodes.size(); ++i) connect(self, i);
  self->delayed_send(self, st.options.reconnect_interval, reconnect_atom_v);

  self->set_down_handler([self](caf::down_msg& msg) {
    for (auto& n : self->state.nodes) {
      if (n.handle && n.handle.address() == msg.source) {
        // Its keys stay mapped: they report lost until the node is back.
        n.handle = nullptr;
        n.live = 0;
        // What it was asked and did not answer fails now, not when each request times out.
        self->state.calls.fail_all(msg.source,
                                   make_error(corral_errc::sandbox_lost,
                                              "node " + n.name + " went down before it answered"));
      }
    }
  });

  return {
      [self](acquire_atom, std::string& key, sandbox_spec& spec) -> caf::result<sandbox_info> {
        auto rp = self->make_response_promise<sandbox_info>();
        when_ready(self, [self, rp, key = std::move(key), spec = std::move(spec)]() mutable {
          auto& st = self->state;
          std::size_t index = 0;
          if (auto it = st.key_node.find(key); it != st.key_node.end()) {
            if (!st.nodes[it->second].handle)
              return void(rp.deliver(node_down(st.nodes[it->second], key)));
            index = it->second;
          } else {
            const int chosen = place(self);
            if (chosen < 0) {
              return void(rp.deliver(make_error(corral_errc::capacity,
                                                "no node has room for a new sandbox (" +
                                                    std::to_string(st.nodes.size()) + " nodes)")));
            }
            index = static_cast<std::size_t>(chosen);
            st.key_node[key] = index;
            st.nodes[index].live++;
          }
          call<sandbox_info>(
              self, index, st.options.request_timeout,
              [rp](sandbox_info& info) mutable { rp.deliver(std::move(info)); },
              [self, rp, key, index](caf::error err) mutable {
                // A failed create leaves no sandbox: the key may go elsewhere next time.
                auto it = self->state.key_node.find(key);
                if (it != self->state.key_node.end() && it->second == index &&
                    err != corral_errc::sandbox_lost) {
                  self->state.key_node.erase(it);
                  if (self->state.nodes[index].live > 0) self->state.nodes[index].live--;
                }
                rp.deliver(std::move(err));
              },
              acquire_atom_v, key, spec);
        });
        return rp;
      },
      [self](lookup_atom, std::string& key) -> caf::result<sandbox_info> {
        auto rp = self->make_response_promise<sandbox_info>();
        when_ready(self, [self, rp, key = std::move(key)]() mutable {
          route(
              self, key, rp,
              [&](node_link&) {
                call<sandbox_info>(
                    self, self->state.key_node[key], self->state.options.request_timeout,
                    [rp](sandbox_info& info) mutable { rp.deliver(std::move(info)); },
                    [rp](caf::error err) mutable { rp.deliver(std::move(err)); }, lookup_atom_v,
                    key);
              },
              [&](node_link& n) { rp.deliver(lost_with(n, key)); });
        });
        return rp;
      },
      [self](exec_atom, std::string& key, exec_request& request) -> caf::result<exec_result> {
        auto rp = self->make_response_promise<exec_result>();
        when_ready(self, [self, rp, key = std::move(key), request = std::move(request)]() mutable {
          route(
              self, key, rp,
              [&](node_link&) {
                // As long as the exec may run, plus a margin (the node enforces its timeout).
                const auto runs = request.timeout.count() > 0
                                      ? request.timeout
                                      : caf::timespan{std::chrono::hours(24)};
                call<exec_result>(
                    self, self->state.key_node[key], runs + self->state.options.request_timeout,
                    [rp](exec_result& result) mutable { rp.deliver(std::move(result)); },
                    [rp](caf::error err) mutable { rp.deliver(std::move(err)); }, exec_atom_v, key,
                    std::move(request));
              },
              [&](node_link& n) { rp.deliver(node_down(n, key)); });
        });
        return rp;
      },
      [self](release_atom, std::string& key, release_mode mode) -> caf::result<sandbox_info> {
        auto rp = self->make_response_promise<sandbox_info>();
        when_ready(self, [self, rp, key = std::move(key), mode]() mutable {
          route(
              self, key, rp,
              [&](node_link&) {
                const auto index = self->state.key_node[key];
                call<sandbox_info>(
                    self, index, self->state.options.request_timeout,
                    [self, rp, key, index](sandbox_info& info) mutable {
                      self->state.key_node.erase(key);
                      if (self->state.nodes[index].live > 0) self->state.nodes[index].live--;
                      rp.deliver(std::move(info));
                    },
                    [rp](caf::error err) mutable { rp.deliver(std::move(err)); }, release_atom_v,
                    key, mode);
              },
              [&](node_link& n) {
                // The node is gone; what it held is its own to adopt or remove when it returns.
                self->state.key_node.erase(key);
                rp.deliver(lost_with(n, key));
              });
        });
        return rp;
      },
      [self](release_all_atom, release_mode mode) -> caf::result<uint64_t> {
        auto rp = self->make_response_promise<uint64_t>();
        when_ready(self, [self, rp, mode]() mutable {
          auto total = gather<uint64_t>([rp](uint64_t& n) mutable { rp.deliver(n); });
          for (std::size_t i = 0; i < self->state.nodes.size(); ++i) {
            auto& n = self->state.nodes[i];
            if (!n.handle) continue;
            total->expect();
            call<uint64_t>(
                self, i, self->state.options.request_timeout,
                [total, self, i](uint64_t count) {
                  total->value() += count;
                  for (auto it = self->state.key_node.begin(); it != self->state.key_node.end();) {
                    it = it->second == i ? self->state.key_node.erase(it) : std::next(it);
                  }
                  self->state.nodes[i].live = 0;
                  total->done();
                },
                [total](const caf::error&) { total->done(); }, release_all_atom_v, mode);
          }
          total->done();
        });
        return rp;
      },
      [self](list_atom) -> caf::result<std::vector<sandbox_info>> {
        auto rp = self->make_response_promise<std::vector<sandbox_info>>();
        when_ready(self, [self, rp]() mutable {
          auto all =
              gather<std::vector<sandbox_info>>([rp](std::vector<sandbox_info>& out) mutable {
                std::sort(out.begin(), out.end(),
                          [](const auto& a, const auto& b) { return a.key < b.key; });
                rp.deliver(std::move(out));
              });
          for (const auto& [key, index] : self->state.key_node) {
            const auto& n = self->state.nodes[index];
            if (n.handle) continue;
            all->value().push_back(lost_with(n, key));
          }
          for (std::size_t i = 0; i < self->state.nodes.size(); ++i) {
            if (!self->state.nodes[i].handle) continue;
            all->expect();
            call<std::vector<sandbox_info>>(
                self, i, self->state.options.request_timeout,
                [all](std::vector<sandbox_info>& infos) {
                  for (auto& info : infos) all->value().push_back(std::move(info));
                  all->done();
                },
                [all](const caf::error&) { all->done(); }, list_atom_v);
          }
          all->done();
        });
        return rp;
      },
      [self](stats_atom) -> caf::result<runtime_stats> {
        auto rp = self->make_response_promise<runtime_stats>();
        when_ready(self, [self, rp]() mutable {
          runtime_stats named;
          named.runtime_name = "router";
          auto all = gather<runtime_stats>(
              [rp](runtime_stats& total) mutable { rp.deliver(std::move(total)); }, named);
          for (std::size_t i = 0; i < self->state.nodes.size(); ++i) {
            if (!self->state.nodes[i].handle) continue;
            all->expect();
            call<runtime_stats>(
                self, i, self->state.options.request_timeout,
                [all](const runtime_stats& s) {
                  auto* total = &all->value();
                  total->live_sandboxes += s.live_sandboxes;
                  total->capacity += s.capacity;
                  total->created_total += s.created_total;
                  total->released_total += s.released_total;
                  total->pruned_total += s.pruned_total;
                  total->lost_total += s.lost_total;
                  total->adopted_total += s.adopted_total;
                  total->execs_total += s.execs_total;
                  total->execs_in_flight += s.execs_in_flight;
                  total->pool_ready += s.pool_ready;
                  total->pool_warming += s.pool_warming;
                  total->pool_target += s.pool_target;
                  total->pool_hits += s.pool_hits;
                  total->pool_misses += s.pool_misses;
                  total->pool_claim_us_total += s.pool_claim_us_total;
                  total->pool_refills += s.pool_refills;
                  total->pool_refill_us_total += s.pool_refill_us_total;
                  all->done();
                },
                [all](const caf::error&) { all->done(); }, stats_atom_v);
          }
          all->done();
        });
        return rp;
      },
      [self](prune_atom, caf::timespan idle,
             caf::timespan max_age) -> caf::result<std::vector<std::string>> {
        auto rp = self->make_response_promise<std::vector<std::string>>();
        when_ready(self, [self, rp, idle, max_age]() mutable {
          auto all = gather<std::vector<std::string>>(
              [rp](std::vector<std::string>& keys) mutable { rp.deliver(std::move(keys)); });
          for (std::size_t i = 0; i < self->state.nodes.size(); ++i) {
            if (!self->state.nodes[i].handle) continue;
            all->expect();
            call<std::vector<std::string>>(
                self, i, self->state.options.request_timeout,
                [all](std::vector<std::string>& keys) {
                  all->value().insert(all->value().end(), keys.begin(), keys.end());
                  all->done();
                },
                [all](const caf::error&) { all->done(); }, prune_atom_v, idle, max_age);
          }
          all->done();
        });
        return rp;
      },
      [](hello_atom, int32_t) -> caf::result<int32_t, std::string> {
        return caf::make_result(protocol_version, std::string(corral_version));
      },
      // The router's own callers are this process's: the nodes see the router's principal.
      [](hello_atom, int32_t, const std::string&) -> caf::result<int32_t, std::string> {
        return caf::make_result(protocol_version, std::string(corral_version));
      },
      [self](reconnect_atom) {
        // Reconnect whatever is down; its adopted sandboxes route to it again.
        for (std::size_t i = 0; i < self->state.nodes.size(); ++i) {
          if (!self->state.nodes[i].handle) connect(self, i);
        }
        self->delayed_send(self, self->state.options.reconnect_interval, reconnect_atom_v);
      },
  };
}

}  // namespace

messages::supervisor_actor spawn_router(caf::actor_system& sys, router_options options) {
  return sys.spawn(router_impl, std::move(options));
}

}  // namespace corral::actors
