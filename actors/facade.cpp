#include "actors/facade.hpp"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <utility>

#include <caf/all.hpp>

#include "actors/actor_errors.hpp"
#include "actors/policy.hpp"
#include "docker/json.hpp"
#include "messages/errors.hpp"

namespace corral::actors {

namespace {

using namespace messages;

// Who a client is: the principal it named in its hello, while one of the actors that said
// hello lives (the CLI's session actor, a router).
struct client_identity {
  std::string principal;
  bool admin = false;
  std::set<caf::actor_addr> greeters;
};

// What one principal holds and runs through this facade.
struct principal_load {
  std::set<std::string> sandboxes;  // scoped keys believed live (refreshed when at the limit)
  uint64_t acquiring = 0;           // acquires of new keys on their way
  uint64_t execs_running = 0;
  std::deque<std::function<void()>> queued_execs;
};

struct facade_state {
  static inline const char* name = "corral.facade";
  facade_state() = default;  // not an aggregate: CAF must not build it from the self pointer
  supervisor_actor inner;
  facade_options options;
  std::shared_ptr<facade_counters> counters;
  std::map<caf::node_id, client_identity> clients;
  std::map<std::string, principal_load> loads;
  // One-shot (`run-*`) sandboxes (scoped keys) by the client node that uses them: a client
  // whose connection closes leaves none behind.
  std::map<caf::node_id, std::set<std::string>> runs_by_client;
};

using self_ptr = supervisor_actor::stateful_pointer<facade_state>;

std::string utc_now() {
  const auto now = std::chrono::system_clock::now();
  const auto secs = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];  // room for any int the format could print
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

// Who sent the current message: the peer's node id (its own process for a local caller).
std::string peer_of(self_ptr self) {
  const auto& sender = self->current_sender();
  if (!sender) return "anonymous";
  return caf::to_string(sender->node());
}

// A refusal by the rules (the request never ran) as opposed to a failure while it ran.
bool refused(const caf::error& err) {
  return err == corral_errc::policy_violation || err == corral_errc::invalid_request ||
         err == corral_errc::capacity || err == corral_errc::not_found;
}

// One audit record; `what` is the operation's own field (e.g. the program an exec runs).
class audit_record {
 public:
  audit_record(self_ptr self, const char* op, const std::string& principal, const std::string& key)
      : self_(self), op_(op), principal_(principal), key_(key), peer_(peer_of(self)) {}

  audit_record& with(const char* field, const std::string& value) {
    extra_ += ",\"";
    extra_ += field;
    extra_ += "\":";
    docker::append_json_string(extra_, value);
    return *this;
  }

  void ok(const std::string& result) const { write("allowed", result); }

  void failed(const caf::error& err) const {
    auto text = describe(err);
    if (text.size() > 300) text.resize(300);
    write(refused(err) ? "denied" : "allowed", "error: " + text);
  }

 private:
  void write(const char* decision, const std::string& result) const {
    const auto& sink = self_->state.options.audit;
    if (!sink) return;
    std::string line = "{\"time\":";
    docker::append_json_string(line, utc_now());
    line += ",\"principal\":";
    docker::append_json_string(line, principal_);
    line += ",\"peer\":";
    docker::append_json_string(line, peer_);
    line += ",\"op\":";
    docker::append_json_string(line, op_);
    line += ",\"key\":";
    docker::append_json_string(line, key_);
    line += extra_;
    line += ",\"decision\":";
    docker::append_json_string(line, decision);
    line += ",\"result\":";
    docker::append_json_string(line, result);
    line += "}";
    sink(line);
  }

  self_ptr self_;
  const char* op_;
  std::string principal_;
  std::string key_;
  std::string peer_;
  std::string extra_;
};

// Asks the supervisor and answers the caller with what it said; `record` sees the outcome
// first (an audit line, or nothing).
template <class T, class Record, class... Ts>
caf::result<T> forward(self_ptr self, Record record, Ts&&... xs) {
  auto rp = self->make_response_promise<T>();
  self->request(self->state.inner, caf::infinite, std::forward<Ts>(xs)...)
      .then(
          [rp, record](T& value) mutable {
            record(&value, caf::error{});
            rp.deliver(std::move(value));
          },
          [rp, record](caf::error& err) mutable {
            auto typed = from_actor(err, corral_errc::shutting_down, "asking the node's runtime");
            record(static_cast<T*>(nullptr), typed);
            rp.deliver(std::move(typed));
          });
  return rp;
}

constexpr auto no_record = [](auto*, const caf::error&) {};

bool is_run_key(const std::string& key) {
  const auto slash = key.find('/');
  return key.compare(slash == std::string::npos ? 0 : slash + 1, 4, "run-") == 0;
}

// -- principals --------------------------------------------------------------------------------

// The client the current message comes from, or nothing if it never said hello.
const client_identity* caller(self_ptr self) {
  const auto& sender = self->current_sender();
  if (!sender) return nullptr;
  auto it = self->state.clients.find(sender->node());
  return it == self->state.clients.end() ? nullptr : &it->second;
}

caf::error no_hello() {
  return make_error(corral_errc::invalid_request,
                    "this client has not said who it is: send hello with the protocol version (" +
                        std::to_string(protocol_version) + ") and a principal first");
}

// The supervisor's key for a caller's key: the caller's own namespace, or for an admin an
// explicit PRINCIPAL/KEY.
caf::expected<std::string> scoped(const client_identity& who, const std::string& key) {
  if (key.find('/') == std::string::npos) return who.principal + "/" + key;
  if (!who.admin) {
    return make_error(corral_errc::invalid_request,
                      "sandbox key '" + key.substr(0, 140) +
                          "' is invalid: PRINCIPAL/KEY names another principal's sandbox, which "
                          "only the policy's admins may do");
  }
  return key;
}

std::string unscoped(const client_identity& who, const std::string& key) {
  const auto prefix = who.principal + "/";
  return key.rfind(prefix, 0) == 0 ? key.substr(prefix.size()) : key;
}

bool owns(const client_identity& who, const std::string& scoped_key) {
  return who.admin || scoped_key.rfind(who.principal + "/", 0) == 0;
}

// The caller of the current request uses a `run-*` sandbox. Its requests come from short-lived
// helper actors (one per request, app/session.hpp), so the facade watches each request's
// sender: one that ends normally says nothing, one whose connection is lost (the client
// process died mid-command) releases everything its node was running.
void track_run(self_ptr self, const std::string& key) {
  const auto& sender = self->current_sender();
  if (!sender || !is_run_key(key) || sender->node() == self->node()) return;
  self->state.runs_by_client[sender->node()].insert(key);
  self->monitor(sender);
}

void untrack_run(self_ptr self, const std::string& key) {
  if (!is_run_key(key)) return;
  auto& runs = self->state.runs_by_client;
  for (auto it = runs.begin(); it != runs.end(); ++it) {
    if (it->second.erase(key) > 0) {
      if (it->second.empty()) runs.erase(it);
      return;
    }
  }
}

// A client went away holding one-shot sandboxes: release them as it would have.
void client_gone(self_ptr self, const caf::node_id& client) {
  auto it = self->state.runs_by_client.find(client);
  if (it == self->state.runs_by_client.end()) return;
  auto keys = std::move(it->second);
  self->state.runs_by_client.erase(it);
  for (const auto& key : keys) {
    const auto slash = key.find('/');
    audit_record rec(self, "release", key.substr(0, slash),
                     slash == std::string::npos ? key : key.substr(slash + 1));
    rec.with("mode", to_string(release_mode::cancel_execs)).with("why", "its client went away");
    self->request(self->state.inner, caf::infinite, release_atom_v, key, release_mode::cancel_execs)
        .then(
            [rec](const sandbox_info& info) {
              rec.ok("sandbox " + std::string(to_string(info.status)));
            },
            [rec](const caf::error& err) { rec.failed(err); });
  }
}

// A greeter went away: the client's identity lives while one of its greeters does.
void greeter_gone(self_ptr self, const caf::actor_addr& source) {
  auto& clients = self->state.clients;
  auto it = clients.find(source.node());
  if (it == clients.end()) return;
  it->second.greeters.erase(source);
  if (it->second.greeters.empty()) clients.erase(it);
}

// The caller's sandboxes, from the supervisor's list (an admin's: everyone's).
void list_owned(self_ptr self, const client_identity& who,
                const std::function<void(caf::expected<std::vector<sandbox_info>>)>& done) {
  self->request(self->state.inner, caf::infinite, list_atom_v)
      .then(
          [who, done](std::vector<sandbox_info>& all) {
            std::vector<sandbox_info> mine;
            for (auto& info : all) {
              if (!owns(who, info.key)) continue;
              info.key = unscoped(who, info.key);
              mine.push_back(std::move(info));
            }
            done(std::move(mine));
          },
          [done](caf::error& err) {
            done(from_actor(err, corral_errc::shutting_down, "listing the sandboxes"));
          });
}

// Releases `keys` (scoped) one by one through the supervisor; `done` gets those released.
void release_each(self_ptr self, const std::vector<std::string>& keys, release_mode mode,
                  const std::function<void(std::vector<std::string>)>& done) {
  if (keys.empty()) return done({});
  auto left = std::make_shared<std::size_t>(keys.size());
  auto released = std::make_shared<std::vector<std::string>>();
  for (auto& key : keys) {
    self->request(self->state.inner, caf::infinite, release_atom_v, key, mode)
        .then(
            [left, released, done, key](const sandbox_info&) {
              released->push_back(key);
              if (--*left == 0) done(std::move(*released));
            },
            [left, released, done](const caf::error&) {
              if (--*left == 0) done(std::move(*released));
            });
  }
}

// Re-learns every principal's live sandboxes from the supervisor (their own ends, releases by
// lifetime or prune, are not seen otherwise), then runs `then`.
void refresh_loads(self_ptr self, const std::function<void()>& then) {
  self->request(self->state.inner, caf::infinite, list_atom_v)
      .then(
          [self, then](const std::vector<sandbox_info>& all) {
            for (auto& [p, load] : self->state.loads) load.sandboxes.clear();
            for (const auto& info : all) {
              const auto slash = info.key.find('/');
              if (slash == std::string::npos || is_terminal(info.status)) continue;
              self->state.loads[info.key.substr(0, slash)].sandboxes.insert(info.key);
            }
            then();
          },
          [then](const caf::error&) { then(); });
}

// An exec slot of the principal's came free: the next queued exec of it starts.
void exec_done(self_ptr self, const std::string& principal) {
  auto& load = self->state.loads[principal];
  if (load.execs_running > 0) --load.execs_running;
  if (!load.queued_execs.empty()) {
    auto next = std::move(load.queued_execs.front());
    load.queued_execs.pop_front();
    ++load.execs_running;
    next();
  }
}

// The node's protocol and corral version, as the supervisor states them, for a hello.
caf::result<int32_t, std::string> node_version(self_ptr self, int32_t version) {
  auto rp = self->make_response_promise<int32_t, std::string>();
  self->request(self->state.inner, std::chrono::seconds(30), hello_atom_v, version)
      .then([rp](int32_t v, std::string& s) mutable { rp.deliver(v, std::move(s)); },
            [rp](caf::error& err) mutable {
              rp.deliver(from_actor(err, corral_errc::shutting_down, "hello"));
            });
  return rp;
}

supervisor_actor::behavior_type facade_impl(self_ptr self, supervisor_actor inner,
                                            facade_options options,
                                            std::shared_ptr<facade_counters> counters) {
  auto& st = self->state;
  st.inner = std::move(inner);
  st.options = std::move(options);
  st.counters = std::move(counters);
  // Peers may link to or monitor the facade; their exit messages are ignored. Down messages
  // come from the clients it monitors (greeters, and those holding one-shot sandboxes).
  self->set_exit_handler([](caf::exit_msg&) {});
  self->set_down_handler([self](caf::down_msg& msg) {
    greeter_gone(self, msg.source);
    if (msg.reason) client_gone(self, msg.source.node());  // a normal end says nothing
  });
  // An unrequested error message would make CAF's default handler quit the actor.
  self->set_error_handler([](caf::error&) {});
  self->set_default_handler(
      [self](caf::scheduled_actor*, caf::message_view& view) -> caf::result<caf::message> {
        auto& st = self->state;
        if (st.counters) ++st.counters->dropped;
        if (st.options.dropped) {
          auto text = view.content().stringify();
          if (text.size() > 200) text.resize(200);
          st.options.dropped("dropped a message outside the interface from " + peer_of(self) +
                             ": " + text);
        }
        return caf::sec::unexpected_message;
      });

  return {
      [self](acquire_atom, std::string& key, sandbox_spec& spec) -> caf::result<sandbox_info> {
        const auto* who = caller(self);
        if (!who) return no_hello();
        const auto me = *who;
        audit_record rec(self, "acquire", me.principal, key);
        rec.with("image", spec.image);
        auto inner_key = scoped(me, key);
        if (!inner_key) {
          rec.failed(inner_key.error());
          return inner_key.error();
        }
        track_run(self, *inner_key);  // before the answer: a client may die while it waits
        auto rp = self->make_response_promise<sandbox_info>();
        auto go = [self, rp, rec, me, k = *inner_key, spec = std::move(spec)]() mutable {
          const auto owner = k.substr(0, k.find('/'));
          auto& load = self->state.loads[owner];
          const bool fresh = load.sandboxes.count(k) == 0;
          if (fresh) ++load.acquiring;
          self->request(self->state.inner, caf::infinite, acquire_atom_v, k, std::move(spec))
              .then(
                  [self, rp, rec, me, k, owner, fresh](sandbox_info& info) mutable {
                    auto& load = self->state.loads[owner];
                    if (fresh) --load.acquiring;
                    load.sandboxes.insert(k);
                    rec.ok("sandbox " + std::string(to_string(info.status)));
                    info.key = unscoped(me, info.key);
                    rp.deliver(std::move(info));
                  },
                  [self, rp, rec, k, owner, fresh](caf::error& err) mutable {
                    if (fresh) --self->state.loads[owner].acquiring;
                    untrack_run(self, k);
                    auto typed =
                        from_actor(err, corral_errc::shutting_down, "asking the node's runtime");
                    rec.failed(typed);
                    rp.deliver(std::move(typed));
                  });
        };
        // A new key beyond the principal's share: what it holds is re-learned before refusing.
        const auto limit = self->state.options.per_principal.sandboxes;
        auto over = [self, limit, k = *inner_key, owner = me.principal] {
          auto& load = self->state.loads[owner];
          return load.sandboxes.count(k) == 0 && load.sandboxes.size() + load.acquiring >= limit;
        };
        if (!over()) {
          go();
          return rp;
        }
        refresh_loads(self, [self, rp, rec, over, go, limit, me, k = *inner_key]() mutable {
          if (!over()) return go();
          untrack_run(self, k);
          auto err = make_error(corral_errc::capacity,
                                "principal " + me.principal + " holds its maximum of " +
                                    std::to_string(limit) +
                                    " sandboxes (policy key per_principal.sandboxes); release "
                                    "one first");
          rec.failed(err);
          rp.deliver(std::move(err));
        });
        return rp;
      },
      [self](lookup_atom, std::string& key) -> caf::result<sandbox_info> {
        const auto* who = caller(self);
        if (!who) return no_hello();
        const auto me = *who;
        auto inner_key = scoped(me, key);
        if (!inner_key) return inner_key.error();
        return forward<sandbox_info>(
            self,
            [me](sandbox_info* info, const caf::error&) {
              if (info) info->key = unscoped(me, info->key);
            },
            lookup_atom_v, std::move(*inner_key));
      },
      [self](exec_atom, std::string& key, exec_request& request) -> caf::result<exec_result> {
        const auto* who = caller(self);
        if (!who) return no_hello();
        const auto me = *who;
        // The program only: arguments and environment may carry secrets.
        audit_record rec(self, "exec", me.principal, key);
        rec.with("program", request.argv.empty() ? std::string() : request.argv.front());
        auto inner_key = scoped(me, key);
        if (!inner_key) {
          rec.failed(inner_key.error());
          return inner_key.error();
        }
        track_run(self, *inner_key);
        const auto owner = inner_key->substr(0, inner_key->find('/'));
        auto rp = self->make_response_promise<exec_result>();
        auto run = [self, rp, rec, owner, k = *inner_key, request = std::move(request)]() mutable {
          self->request(self->state.inner, caf::infinite, exec_atom_v, k, std::move(request))
              .then(
                  [self, rp, rec, owner](exec_result& result) mutable {
                    rec.ok(std::string(to_string(result.end)) + " " +
                           std::to_string(result.exit_code));
                    rp.deliver(std::move(result));
                    exec_done(self, owner);
                  },
                  [self, rp, rec, owner](caf::error& err) mutable {
                    auto typed =
                        from_actor(err, corral_errc::shutting_down, "asking the node's runtime");
                    rec.failed(typed);
                    rp.deliver(std::move(typed));
                    exec_done(self, owner);
                  });
        };
        const auto& share = self->state.options.per_principal;
        auto& load = self->state.loads[owner];
        if (load.execs_running < share.execs) {
          ++load.execs_running;
          run();
        } else if (load.queued_execs.size() < share.queued_execs) {
          load.queued_execs.emplace_back(std::move(run));
        } else {
          auto err = make_error(
              corral_errc::capacity,
              "principal " + owner + " runs its maximum of " + std::to_string(share.execs) +
                  " commands (policy key per_principal.execs) with " +
                  std::to_string(share.queued_execs) +
                  " more queued (per_principal.queued_execs); try again when one ends");
          rec.failed(err);
          rp.deliver(std::move(err));
        }
        return rp;
      },
      [self](release_atom, std::string& key, release_mode mode) -> caf::result<sandbox_info> {
        const auto* who = caller(self);
        if (!who) return no_hello();
        const auto me = *who;
        audit_record rec(self, "release", me.principal, key);
        rec.with("mode", to_string(mode));
        auto inner_key = scoped(me, key);
        if (!inner_key) {
          rec.failed(inner_key.error());
          return inner_key.error();
        }
        untrack_run(self, *inner_key);
        return forward<sandbox_info>(
            self,
            [self, rec, me, k = *inner_key](sandbox_info* info, const caf::error& err) {
              if (info) {
                self->state.loads[k.substr(0, k.find('/'))].sandboxes.erase(k);
                info->key = unscoped(me, info->key);
                return rec.ok("sandbox " + std::string(to_string(info->status)));
              }
              rec.failed(err);
            },
            release_atom_v, std::move(*inner_key), mode);
      },
      [self](release_all_atom, release_mode mode) -> caf::result<uint64_t> {
        const auto* who = caller(self);
        if (!who) return no_hello();
        const auto me = *who;
        audit_record rec(self, "release_all", me.principal, "");
        rec.with("mode", to_string(mode));
        if (me.admin) {
          return forward<uint64_t>(
              self,
              [rec](uint64_t* n, const caf::error& err) {
                if (n)
                  rec.ok(std::to_string(*n) + " released");
                else
                  rec.failed(err);
              },
              release_all_atom_v, mode);
        }
        // Everyone else's stay: only the caller's own are released.
        auto rp = self->make_response_promise<uint64_t>();
        list_owned(self, me, [self, rp, rec, me, mode](auto listed) mutable {
          if (!listed) {
            rec.failed(listed.error());
            rp.deliver(listed.error());
            return;
          }
          std::vector<std::string> keys;
          for (const auto& info : *listed) keys.push_back(me.principal + "/" + info.key);
          release_each(self, keys, mode,
                       [self, rp, rec](const std::vector<std::string>& released) mutable {
                         for (const auto& k : released) {
                           untrack_run(self, k);
                           self->state.loads[k.substr(0, k.find('/'))].sandboxes.erase(k);
                         }
                         rec.ok(std::to_string(released.size()) + " released");
                         rp.deliver(static_cast<uint64_t>(released.size()));
                       });
        });
        return rp;
      },
      [self](list_atom) -> caf::result<std::vector<sandbox_info>> {
        const auto* who = caller(self);
        if (!who) return no_hello();
        auto rp = self->make_response_promise<std::vector<sandbox_info>>();
        list_owned(self, *who, [rp](auto listed) mutable {
          if (!listed) {
            rp.deliver(listed.error());
            return;
          }
          rp.deliver(std::move(*listed));
        });
        return rp;
      },
      [self](stats_atom) -> caf::result<runtime_stats> {
        if (!caller(self)) return no_hello();
        return forward<runtime_stats>(self, no_record, stats_atom_v);
      },
      [self](prune_atom, caf::timespan idle,
             caf::timespan max_age) -> caf::result<std::vector<std::string>> {
        const auto* who = caller(self);
        if (!who) return no_hello();
        const auto me = *who;
        audit_record rec(self, "prune", me.principal, "");
        rec.with("idle", caf::deep_to_string(idle)).with("max_age", caf::deep_to_string(max_age));
        if (idle.count() < 0 || max_age.count() < 0) {
          auto err = make_error(corral_errc::invalid_request,
                                "prune: idle and max-age must not be negative");
          rec.failed(err);
          return err;
        }
        if (me.admin) {
          return forward<std::vector<std::string>>(
              self,
              [rec](std::vector<std::string>* keys, const caf::error& err) {
                if (keys)
                  rec.ok(std::to_string(keys->size()) + " pruned");
                else
                  rec.failed(err);
              },
              prune_atom_v, idle, max_age);
        }
        // The supervisor's prune is everyone's: a principal's is its own sandboxes, chosen here
        // by the same rule (idle at least `idle`, or older than `max_age`; zero: no limit).
        auto rp = self->make_response_promise<std::vector<std::string>>();
        list_owned(self, me, [self, rp, rec, me, idle, max_age](auto listed) mutable {
          if (!listed) {
            rec.failed(listed.error());
            rp.deliver(listed.error());
            return;
          }
          const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
          const auto idle_ms = std::chrono::duration_cast<std::chrono::milliseconds>(idle).count();
          const auto age_ms =
              std::chrono::duration_cast<std::chrono::milliseconds>(max_age).count();
          std::vector<std::string> keys;
          for (const auto& info : *listed) {
            if (is_terminal(info.status) || info.execs_in_flight > 0) continue;
            if ((idle_ms > 0 && now - info.last_used_ms >= idle_ms) ||
                (age_ms > 0 && now - info.created_ms >= age_ms))
              keys.push_back(me.principal + "/" + info.key);
          }
          release_each(self, keys, release_mode::cancel_execs,
                       [self, rp, rec, me](const std::vector<std::string>& released) mutable {
                         std::vector<std::string> shown;
                         for (const auto& k : released) {
                           self->state.loads[me.principal].sandboxes.erase(k);
                           shown.push_back(unscoped(me, k));
                         }
                         rec.ok(std::to_string(shown.size()) + " pruned");
                         rp.deliver(std::move(shown));
                       });
        });
        return rp;
      },
      // The version-only hello of protocol 2 clients: answered, so they can name both versions.
      [self](hello_atom, int32_t version) -> caf::result<int32_t, std::string> {
        return node_version(self, version);
      },
      [self](hello_atom, int32_t version,
             std::string& principal) -> caf::result<int32_t, std::string> {
        const auto& sender = self->current_sender();
        if (version == protocol_version && sender) {
          if (auto err = check_principal_name(principal)) return err;
          auto& st = self->state;
          auto [it, fresh] = st.clients.try_emplace(sender->node());
          auto& who = it->second;
          if (!fresh && who.principal != principal) {
            return make_error(corral_errc::invalid_request,
                              "this client already said it is principal " + who.principal +
                                  "; one client process speaks for one principal");
          }
          who.principal = principal;
          who.admin = std::find(st.options.admins.begin(), st.options.admins.end(), principal) !=
                      st.options.admins.end();
          const auto addr = caf::actor_cast<caf::actor_addr>(sender);
          if (who.greeters.insert(addr).second) self->monitor(sender);
        }
        return node_version(self, version);
      },
  };
}

}  // namespace

supervisor_actor spawn_facade(caf::actor_system& sys, supervisor_actor inner,
                              facade_options options, std::shared_ptr<facade_counters> counters) {
  return sys.spawn(facade_impl, std::move(inner), std::move(options), std::move(counters));
}

}  // namespace corral::actors
