#include "app/session.hpp"

#include <cstdio>
#include <vector>

#include "actors/agent_link.hpp"
#include "actors/router.hpp"
#include "actors/supervisor.hpp"
#include "app/exit_codes.hpp"
#include "app/remote.hpp"
#include "app/tls_listener.hpp"
#include "app/tls_material.hpp"

namespace corral::app {

using messages::corral_errc;

int fail(const caf::error& err) {
  std::string hint;
  if (err == corral_errc::engine_unavailable)
    hint = " (is the Docker engine running? see app/setup.sh)";
  else if (err == corral_errc::policy_violation)
    hint = " (see `corral run --help` for what may be loosened)";
  else if (err == corral_errc::not_found)
    hint = " (see `corral ls`)";
  else if (err == corral_errc::node_unavailable)
    hint = " (is `corral node` running there?)";
  else if (err == caf::sec::request_timeout)
    hint = " (the runtime did not answer in time)";
  std::fprintf(stderr, "corral: %s%s\n", messages::describe(err).c_str(), hint.c_str());
  return exit_code::error;
}

std::optional<tls_options> client_credentials(const tls_options& given,
                                              const std::vector<node_address>& nodes,
                                              const char* program) {
  std::string why;
  auto tls = client_tls(given, why);
  if (tls.enabled()) {
    if (auto problem = check_tls(tls); !problem.empty()) {
      std::fprintf(stderr, "%s: %s\n", program, problem.c_str());
      return std::nullopt;
    }
    return tls;
  }
  const auto& where = nodes.front();
  const std::string place = where.host + ":" + std::to_string(where.port);
  std::string what;
  if (!resolves_to_loopback(where.host)) {
    // Nothing goes to a node beyond loopback without a certificate: not even a probe.
    what = "refusing to connect to corral node " + place +
           " without a client certificate (corral never speaks plain text to a node)";
  } else {
    const auto probe = probe_without_certificate(where.host, where.port, std::chrono::seconds(2));
    switch (probe.answer) {
      case probe_answer::certificate_required:
        what = "corral node " + place + " requires a client certificate; its TLS handshake " +
               "refused this client, which has none (" + probe.detail + ")";
        break;
      case probe_answer::unreachable:
        what = "cannot reach corral node " + place + " (" + probe.detail +
               "), and this client has no certificate for it";
        break;
      case probe_answer::not_tls:
      case probe_answer::accepted:
        what = "the service at " + place +
               " is not a corral node with mutual TLS, and this client has no certificate "
               "(" +
               probe.detail + ")";
        break;
    }
  }
  std::fprintf(stderr,
               "%s: %s%s. Give --tls-cert FILE --tls-key FILE --tls-ca FILE, or --tls-dir DIR "
               "(with ca.pem, client.pem, client.key; root's default: %s); the node's operator "
               "makes them with `corral node issue-cert NAME --out DIR`.\n",
               program, what.c_str(), why.empty() ? "" : ("; " + why).c_str(), default_tls_dir);
  return std::nullopt;
}

int with_session(const runtime_target& target, const std::function<int(session&)>& body) {
  // --node A[,B,...]: one node directly, several through a router.
  std::vector<node_address> nodes;
  for (std::size_t start = 0; !target.nodes.empty() && start <= target.nodes.size();) {
    auto end = target.nodes.find(',', start);
    if (end == std::string::npos) end = target.nodes.size();
    auto where = parse_node_address(target.nodes.substr(start, end - start));
    if (!where) {
      std::fprintf(stderr, "corral: --node: %s\n", messages::describe(where.error()).c_str());
      return exit_code::error;
    }
    nodes.push_back(*where);
    start = end + 1;
  }
  const bool remote = !nodes.empty();
  tls_options tls;
  if (remote) {
    auto credentials = client_credentials(target.tls, nodes);
    if (!credentials) return exit_code::error;
    tls = *credentials;
  }
  caf::actor_system_config cfg;
  configure_system(cfg, {.network = remote, .lean = remote});
  caf::actor_system sys{cfg};
  std::shared_ptr<tls_middleman> transport;  // connect_node and the router use it
  if (remote) {
    auto spawned = spawn_tls_middleman(sys, tls);
    if (!spawned) {
      std::fprintf(stderr, "corral: %s\n", sys.render(spawned.error()).c_str());
      return exit_code::error;
    }
    transport = *spawned;
  }
  const auto principal =
      target.principal.empty() ? default_principal(tls.certificate) : target.principal;
  caf::scoped_actor self{sys};
  messages::supervisor_actor sup;
  if (nodes.size() == 1) {
    auto connected = connect_node(self, nodes.front(), std::chrono::seconds(2), principal);
    if (!connected) return fail(connected.error());
    sup = *connected;
  } else if (remote) {
    actors::router_options options;
    for (const auto& n : nodes) options.nodes.push_back({n.host, n.port});
    options.principal = principal;
    sup = actors::spawn_router(sys, options);
  } else {
    actors::runtime_config runtime;
    runtime.name = target.runtime;
    runtime.policy = target.policy;
    // State lives in the engine: what this process does not release stays for the next one.
    runtime.keep_sandboxes_on_shutdown = true;
    runtime.agent_path = actors::default_agent_path();
    sup = actors::spawn_supervisor(sys, runtime);
  }
  // Stops our own supervisor or router (never a node's): the actor system waits for it.
  auto stop = [&] {
    if (nodes.size() == 1) return;
    self->send_exit(sup, caf::exit_reason::user_shutdown);
    self->wait_for(sup);
  };
  session s{self, sup, nodes.size() == 1 ? target.nodes : std::string()};
  int code = exit_code::error;
  try {
    code = body(s);
  } catch (...) {
    stop();
    throw;
  }
  stop();
  return code;
}

}  // namespace corral::app
