// The blocking client: one request from a scoped actor, and its answer or its error as one
// value. The CLI (app/session.hpp, which adds a watch on a node's proxy), the benchmarks and
// the tests all ask through it, so a change to how a blocking caller waits is made once.
#pragma once

#include <utility>

#include <caf/blocking_actor.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/timespan.hpp>

namespace corral::messages {

// Sends `xs...` to `dest` and blocks until its answer of type T, its error, or `timeout`
// (CAF's request_timeout error).
template <class T, class Handle, class... Ts>
caf::expected<T> ask(caf::scoped_actor& self, const Handle& dest, caf::timespan timeout,
                     Ts&&... xs) {
  caf::expected<T> out{caf::error{}};
  self->request(dest, timeout, std::forward<Ts>(xs)...)
      .receive([&](T& value) { out = std::move(value); },
               [&](caf::error& err) { out = std::move(err); });
  return out;
}

}  // namespace corral::messages
