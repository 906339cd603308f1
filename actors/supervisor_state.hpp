// PRIVATE to the supervisor actor: shared by its own .cpp files only (supervisor.cpp, the
// phases and the behavior; supervisor_sandboxes.cpp, the keyed sandboxes and the requests on
// them; supervisor_pool.cpp, the warm pools; supervisor_adoption.cpp, what a previous run left
// and the engine's events). Never include it elsewhere: the public interface is supervisor.hpp.
// It holds the supervisor's state (its phases drawn above supervisor_state) and declares the
// functions one of those files calls in another.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <caf/all.hpp>

#include "actors/actor_errors.hpp"
#include "actors/agent_link.hpp"
#include "actors/container.hpp"
#include "actors/internal_messages.hpp"
#include "actors/pending_calls.hpp"
#include "actors/plumbing.hpp"
#include "actors/policy.hpp"
#include "actors/spec_record.hpp"
#include "actors/supervisor.hpp"
#include "actors/supervisor_seams.hpp"
#include "docker/client.hpp"
#include "messages/errors.hpp"

namespace corral::actors::supervisor_detail {

// The supervisor's files all speak the protocol's vocabulary (messages/); the header is
// private, so the directive reaches them only.
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

// A warm pool member (actors/container_claim.cpp, "the warm pool"): a container actor with no key
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
  caf::error engine_down;  // set while no engine answers
  deferred_work deferred;  // requests that came before serving
  // Containers the start-up sweep found in `created` and spared (another process may still
  // be starting them): looked at again once their grace is over, and removed at a releasing
  // shutdown before then. Without this, one that a crashed run left behind was never adopted
  // nor removed (found by tests/crash_trial.sh).
  std::vector<std::string> spared;
  runtime_stats stats;
  // The one event subscription while it lives (0 when there is none).
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

inline uint64_t live_count(self_ptr self) {
  return self->state.live;
}

// -- supervisor.cpp: the phases ------------------------------------------------------------

void enter_serving(self_ptr self);
// Quits once the shutdown's reason is set and no release or cleanup is still on its way.
void quit_when_answered(self_ptr self);

// -- supervisor_sandboxes.cpp: the keyed sandboxes and the requests on them ----------------

void remove_in_background(self_ptr self, const std::string& container_id);
void container_gone(self_ptr self, const caf::actor_addr& source, const caf::error& reason);
container_args container_args_of(self_ptr self, std::string adopt_id);
void spawn_entry(self_ptr self, const std::string& key, sandbox_plan plan, std::string adopt_id);
caf::error unknown_key(const std::string& key);
void do_acquire(self_ptr self, caf::typed_response_promise<sandbox_info> rp, const std::string& key,
                const sandbox_spec& spec, int attempt = 1);
void retire(self_ptr self, const std::string& key, const caf::actor_addr& source,
            const sandbox_info& info);
std::vector<std::string> prune_where(self_ptr self,
                                     const std::function<bool(const entry&)>& expired);
void release_all(self_ptr self, release_mode mode, const std::function<void(uint64_t)>& done,
                 std::chrono::milliseconds patience = std::chrono::minutes(5));

// -- supervisor_pool.cpp: the warm pools ---------------------------------------------------

void warn(self_ptr self, const std::string& text);
int64_t plan_memory(const sandbox_plan& plan);
void spawn_member(self_ptr self, const std::string& hash, const sandbox_plan& plan,
                  std::string adopt_id);
void maybe_ready(self_ptr self);
void refill(self_ptr self);
void member_update(self_ptr self, const caf::actor_addr& addr, sandbox_info& info,
                   caf::actor& monitor);
void member_gone(self_ptr self, const caf::actor_addr& addr);
container_actor take_member(self_ptr self, const std::string& hash);
void make_room(self_ptr self, int64_t memory);
void recycle_members(self_ptr self);
void configure_pools(self_ptr self);

// -- supervisor_adoption.cpp: what a previous run left, and the engine's events ------------

void subscribe_events(self_ptr self);
void adopt_existing(self_ptr self);

// -- asking a container actor (a template: here for every file that asks) ------------------

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

}  // namespace corral::actors::supervisor_detail
