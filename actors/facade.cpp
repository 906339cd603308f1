#include "actors/facade.hpp"

#include <chrono>
#include <ctime>
#include <map>
#include <set>
#include <utility>

#include <caf/all.hpp>

#include "actors/actor_errors.hpp"
#include "docker/json.hpp"
#include "messages/errors.hpp"

namespace corral::actors {

namespace {

using namespace messages;

struct facade_state {
  static inline const char* name = "corral.facade";
  facade_state() = default;  // not an aggregate: CAF must not build it from the self pointer
  supervisor_actor inner;
  facade_options options;
  std::shared_ptr<facade_counters> counters;
  // One-shot (`run-*`) sandboxes by the client node that uses them: a client whose
  // connection closes leaves none behind.
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
  audit_record(self_ptr self, const char* op, const std::string& key)
      : self_(self), op_(op), key_(key), peer_(peer_of(self)) {}

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
    // Principals come with the authenticated handshake; until then every caller is the node's.
    line += ",\"principal\":\"\",\"peer\":";
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
  return key.rfind("run-", 0) == 0;
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
    audit_record rec(self, "release", key);
    rec.with("mode", to_string(release_mode::cancel_execs)).with("why", "its client went away");
    self->request(self->state.inner, caf::infinite, release_atom_v, key, release_mode::cancel_execs)
        .then(
            [rec](const sandbox_info& info) {
              rec.ok("sandbox " + std::string(to_string(info.status)));
            },
            [rec](const caf::error& err) { rec.failed(err); });
  }
}

supervisor_actor::behavior_type facade_impl(self_ptr self, supervisor_actor inner,
                                            facade_options options,
                                            std::shared_ptr<facade_counters> counters) {
  auto& st = self->state;
  st.inner = std::move(inner);
  st.options = std::move(options);
  st.counters = std::move(counters);
  // Peers may link to or monitor the facade; their exit messages are ignored. Down messages
  // come from the clients it monitors (those holding one-shot sandboxes).
  self->set_exit_handler([](caf::exit_msg&) {});
  self->set_down_handler([self](caf::down_msg& msg) {
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
        audit_record rec(self, "acquire", key);
        rec.with("image", spec.image);
        track_run(self, key);  // before the answer: a client may die while it waits
        return forward<sandbox_info>(
            self,
            [self, rec, key](sandbox_info* info, const caf::error& err) {
              if (info) return rec.ok("sandbox " + std::string(to_string(info->status)));
              untrack_run(self, key);
              rec.failed(err);
            },
            acquire_atom_v, std::move(key), std::move(spec));
      },
      [self](lookup_atom, std::string& key) -> caf::result<sandbox_info> {
        return forward<sandbox_info>(self, no_record, lookup_atom_v, std::move(key));
      },
      [self](exec_atom, std::string& key, exec_request& request) -> caf::result<exec_result> {
        track_run(self, key);
        // The program only: arguments and environment may carry secrets.
        audit_record rec(self, "exec", key);
        rec.with("program", request.argv.empty() ? std::string() : request.argv.front());
        return forward<exec_result>(
            self,
            [rec](exec_result* result, const caf::error& err) {
              if (result)
                rec.ok(std::string(to_string(result->end)) + " " +
                       std::to_string(result->exit_code));
              else
                rec.failed(err);
            },
            exec_atom_v, std::move(key), std::move(request));
      },
      [self](release_atom, std::string& key, release_mode mode) -> caf::result<sandbox_info> {
        audit_record rec(self, "release", key);
        rec.with("mode", to_string(mode));
        untrack_run(self, key);
        return forward<sandbox_info>(
            self,
            [rec](sandbox_info* info, const caf::error& err) {
              if (info)
                rec.ok("sandbox " + std::string(to_string(info->status)));
              else
                rec.failed(err);
            },
            release_atom_v, std::move(key), mode);
      },
      [self](release_all_atom, release_mode mode) -> caf::result<uint64_t> {
        audit_record rec(self, "release_all", "");
        rec.with("mode", to_string(mode));
        return forward<uint64_t>(
            self,
            [rec](uint64_t* n, const caf::error& err) {
              if (n)
                rec.ok(std::to_string(*n) + " released");
              else
                rec.failed(err);
            },
            release_all_atom_v, mode);
      },
      [self](list_atom) -> caf::result<std::vector<sandbox_info>> {
        return forward<std::vector<sandbox_info>>(self, no_record, list_atom_v);
      },
      [self](stats_atom) -> caf::result<runtime_stats> {
        return forward<runtime_stats>(self, no_record, stats_atom_v);
      },
      [self](prune_atom, caf::timespan idle,
             caf::timespan max_age) -> caf::result<std::vector<std::string>> {
        audit_record rec(self, "prune", "");
        rec.with("idle", caf::deep_to_string(idle)).with("max_age", caf::deep_to_string(max_age));
        return forward<std::vector<std::string>>(
            self,
            [rec](std::vector<std::string>* keys, const caf::error& err) {
              if (keys)
                rec.ok(std::to_string(keys->size()) + " pruned");
              else
                rec.failed(err);
            },
            prune_atom_v, idle, max_age);
      },
      [self](hello_atom, int32_t version) -> caf::result<int32_t, std::string> {
        auto rp = self->make_response_promise<int32_t, std::string>();
        self->request(self->state.inner, std::chrono::seconds(30), hello_atom_v, version)
            .then([rp](int32_t v, std::string& s) mutable { rp.deliver(v, std::move(s)); },
                  [rp](caf::error& err) mutable {
                    rp.deliver(from_actor(err, corral_errc::shutting_down, "hello"));
                  });
        return rp;
      },
  };
}

}  // namespace

supervisor_actor spawn_facade(caf::actor_system& sys, supervisor_actor inner,
                              facade_options options, std::shared_ptr<facade_counters> counters) {
  return sys.spawn(facade_impl, std::move(inner), std::move(options), std::move(counters));
}

}  // namespace corral::actors
