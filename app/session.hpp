// Where the CLI's requests go: an embedded runtime (a supervisor in this process), one
// `corral node`, or several nodes behind a router; and the blocking `ask` that waits for an
// answer without outliving a node that dies.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <caf/all.hpp>

#include "actors/policy_file.hpp"
#include "app/remote.hpp"
#include "app/system_config.hpp"
#include "messages/ask.hpp"
#include "messages/errors.hpp"
#include "messages/interfaces.hpp"

namespace corral::app {

struct runtime_target {
  std::string runtime = "local";  // runtime name in the labels of an embedded runtime
  std::string nodes;              // "HOST:PORT[,HOST:PORT...]"; empty: embedded
  tls_options tls;                // --tls-*: for the connections to the nodes
  // Who this client speaks for at the nodes (--principal); empty: default_principal().
  std::string principal;
  // What the embedded runtime allows (app/commands.cpp reads it); a node has its own.
  actors::policy policy = actors::policy::embedded_default();
};

struct session {
  caf::scoped_actor& self;
  messages::supervisor_actor sup;
  std::string node;  // HOST:PORT when `sup` is one node's (a proxy); empty otherwise
};

// Reports `err` on stderr (with a hint of what to do) and returns exit_code::error.
int fail(const caf::error& err);

// The TLS files for connections to `nodes`: the flags, --tls-dir, or (root) the node's
// default directory (app/tls_material.hpp). Every node requires a client certificate: with
// none, this reports on stderr (as `program`) what the node answers to a handshake without
// one (probed on loopback only; elsewhere nothing is sent) and which flags to give, and
// returns nothing (exit_code::error).
std::optional<tls_options> client_credentials(const tls_options& given,
                                              const std::vector<node_address>& nodes,
                                              const char* program = "corral");

// Starts an actor system for `target`, runs `body` on a session with it, and stops what it
// started. Returns body's code, or exit_code::error (reported) if the target is unreachable.
int with_session(const runtime_target& target, const std::function<int(session&)>& body);

// One request to a node, made by a helper actor that watches the node's proxy: a node that
// dies never answers (CAF 0.17 has no error for a request to a dead proxy), so without the
// watch the caller would wait out the whole timeout (a day, for an exec without --timeout).
template <class T, class... Ts>
caf::behavior node_request(caf::event_based_actor* self, messages::supervisor_actor node,
                           const std::string& where, caf::timespan timeout,
                           std::tuple<Ts...> args) {
  return {
      [=](caf::get_atom) mutable -> caf::result<T> {
        auto rp =
            std::make_shared<caf::typed_response_promise<T>>(self->make_response_promise<T>());
        self->monitor(node);
        self->set_down_handler([self, rp, where](caf::down_msg& msg) {
          rp->deliver(messages::make_error(messages::corral_errc::node_unavailable,
                                           "lost corral node " + where +
                                               " while waiting for its answer (" +
                                               caf::to_string(msg.reason) + ")"));
          self->quit();
        });
        std::apply(
            [&](auto&... xs) {
              self->request(node, timeout, std::move(xs)...)
                  .then(
                      [self, rp](T& value) {
                        rp->deliver(std::move(value));
                        self->quit();
                      },
                      [self, rp](caf::error& err) {
                        rp->deliver(std::move(err));
                        self->quit();
                      });
            },
            args);
        return *rp;
      },
  };
}

// Asks the session's runtime and blocks for the answer (or an error) of type T.
template <class T, class... Ts>
caf::expected<T> ask(session& s, caf::timespan timeout, Ts&&... xs) {
  if (s.node.empty()) return messages::ask<T>(s.self, s.sup, timeout, std::forward<Ts>(xs)...);
  auto helper = s.self->spawn(node_request<T, std::decay_t<Ts>...>, s.sup, s.node, timeout,
                              std::make_tuple(std::forward<Ts>(xs)...));
  return messages::ask<T>(s.self, helper, timeout + caf::timespan{std::chrono::seconds(10)},
                          caf::get_atom_v);
}

}  // namespace corral::app
