// Turns an actor-side handler into a docker/ callback. The callback runs on the adapter's I/O
// thread and does nothing but send a continuation to the actor (through a weak reference:
// a pending engine call never keeps an actor alive); the handler then runs in the actor.
#pragma once

#include <utility>

#include <caf/actor.hpp>
#include <caf/actor_cast.hpp>
#include <caf/actor_control_block.hpp>
#include <caf/send.hpp>

#include "actors/internal_messages.hpp"
#include "docker/error.hpp"

namespace corral::actors {

template <class T, class Self, class Handler>
std::function<void(docker::result<T>)> back_to(Self* self, Handler handler) {
  caf::weak_actor_ptr weak = self->ctrl();
  return [weak, handler = std::move(handler)](docker::result<T> r) mutable {
    if (auto strong = weak.lock()) {
      caf::anon_send(
          caf::actor_cast<caf::actor>(strong), resume_atom_v,
          continuation{[handler, r = std::move(r)]() mutable { handler(std::move(r)); }});
    }
  };
}

}  // namespace corral::actors
