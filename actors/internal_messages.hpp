// Messages the runtime's actors send each other and themselves; never seen by callers.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/type_id.hpp>

CAF_ADD_ATOM(corral_internal, corral::actors, resume_atom, "resume")
CAF_ADD_ATOM(corral_internal, corral::actors, update_atom, "update")
CAF_ADD_ATOM(corral_internal, corral::actors, watch_atom, "watch")
CAF_ADD_ATOM(corral_internal, corral::actors, unwatch_atom, "unwatch")
CAF_ADD_ATOM(corral_internal, corral::actors, deadline_atom, "deadline")
CAF_ADD_ATOM(corral_internal, corral::actors, exec_timeout_atom, "exectimeo")
CAF_ADD_ATOM(corral_internal, corral::actors, lifetime_atom, "lifetime")
CAF_ADD_ATOM(corral_internal, corral::actors, stopping_atom, "stopping")
CAF_ADD_ATOM(corral_internal, corral::actors, engine_event_atom, "engevent")
CAF_ADD_ATOM(corral_internal, corral::actors, mark_atom, "mark")
CAF_ADD_ATOM(corral_internal, corral::actors, oom_atom, "oom")
CAF_ADD_ATOM(corral_internal, corral::actors, finalize_atom, "finalize")
CAF_ADD_ATOM(corral_internal, corral::actors, fallback_atom, "fallback")
CAF_ADD_ATOM(corral_internal, corral::actors, prune_tick_atom, "prunetick")
CAF_ADD_ATOM(corral_internal, corral::actors, resubscribe_atom, "resub")
CAF_ADD_ATOM(corral_internal, corral::actors, reconnect_atom, "reconnect")
CAF_ADD_ATOM(corral_internal, corral::actors, claim_atom, "claim")

namespace corral::actors {

// A step to run inside an actor: how adapter completions come home. The adapter's I/O thread
// only sends it; the actor runs it in its own handler, where touching state is safe.
struct continuation {
  std::function<void()> run;
};

struct sandbox_plan;

// The supervisor gives a warm pool member to a key: the member binds it
// (actors/container_claim.cpp, "the warm pool").
struct pool_claim {
  std::string key;
  std::shared_ptr<const sandbox_plan> plan;
};

}  // namespace corral::actors

// Local only: a continuation never crosses the network.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(corral::actors::continuation)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(corral::actors::pool_claim)
