#include "app/remote.hpp"

#include <pwd.h>
#include <unistd.h>
#include <cctype>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/supervisor.hpp"
#include "app/tls_material.hpp"
#include "messages/errors.hpp"

namespace corral::app {

using messages::corral_errc;
using messages::make_error;

caf::expected<node_address> parse_node_address(const std::string& text, bool allow_any_port) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    return make_error(corral_errc::invalid_request, "node address '" + text + "' is not HOST:PORT");
  }
  node_address out;
  out.host = text.substr(0, colon);
  if (out.host.size() > 2 && out.host.front() == '[' && out.host.back() == ']') {
    out.host = out.host.substr(1, out.host.size() - 2);
  }
  const std::string port = text.substr(colon + 1);
  char* end = nullptr;
  const long value = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || value < (allow_any_port ? 0 : 1) || value > 65535) {
    return make_error(corral_errc::invalid_request,
                      "node address '" + text + "': port must be 1-65535");
  }
  out.port = static_cast<uint16_t>(value);
  return out;
}

std::string default_principal(const std::string& certificate_path) {
  if (!certificate_path.empty()) {
    // A CN made by hand (an openssl recipe) may hold what a principal may not: made valid,
    // "corral test client" is "corral_test_client".
    auto cn = certificate_common_name(certificate_path);
    for (auto& c : cn) {
      const auto u = static_cast<unsigned char>(c);
      if (!std::isalnum(u) && c != '_' && c != '.' && c != '-' && c != '@') c = '_';
    }
    if (cn.size() > 64) cn.resize(64);
    if (!cn.empty() && std::isalnum(static_cast<unsigned char>(cn[0]))) return cn;
  }
  if (const auto* pw = ::getpwuid(::geteuid()); pw && pw->pw_name) return pw->pw_name;
  return "uid-" + std::to_string(::geteuid());
}

caf::expected<messages::supervisor_actor> connect_node(caf::scoped_actor& self,
                                                       const node_address& where,
                                                       std::chrono::milliseconds timeout,
                                                       const std::string& principal) {
  const std::string place = where.host + ":" + std::to_string(where.port);
  caf::expected<caf::strong_actor_ptr> found{caf::error{}};
  std::set<std::string> interface;
  // corral's mutual-TLS middleman (app/tls_listener.hpp) when the program runs one.
  auto& sys = self->system();
  auto tls = caf::actor_cast<caf::io::middleman_actor>(sys.registry().get(caf::atom("corral-tls")));
  auto mm = tls ? tls : sys.middleman().actor_handle();
  self->request(mm, timeout, caf::connect_atom_v, where.host, where.port)
      .receive(
          [&](const caf::node_id&, caf::strong_actor_ptr& ptr, std::set<std::string>& ifs) {
            found = std::move(ptr);
            interface = std::move(ifs);
          },
          [&](caf::error& err) { found = std::move(err); });
  if (!found) {
    return make_error(corral_errc::node_unavailable, "cannot reach corral node " + place + ": " +
                                                         self->system().render(found.error()));
  }
  if (!*found) return make_error(corral_errc::not_found, "nothing is published at " + place);

  // The handshake comes before the interface check: a node of another version still
  // answers hello, so the error can name both versions.
  const auto untyped = caf::actor_cast<caf::actor>(*found);
  caf::error failure;
  int32_t node_protocol = -1;
  std::string node_version;
  self->request(untyped, timeout, messages::hello_atom_v, messages::protocol_version, principal)
      .receive(
          [&](int32_t protocol, std::string& version) {
            node_protocol = protocol;
            node_version = std::move(version);
          },
          [&](caf::error& err) { failure = std::move(err); });
  // The node refused the principal: its own words.
  if (failure && failure.category() == caf::atom(messages::error_category_name)) return failure;
  if (failure) {
    // A node of protocol 2 knows only the version-only hello: ask it, to name both versions.
    caf::error again;
    self->request(untyped, timeout, messages::hello_atom_v, messages::protocol_version)
        .receive(
            [&](int32_t protocol, std::string& version) {
              node_protocol = protocol;
              node_version = std::move(version);
            },
            [&](caf::error& err) { again = std::move(err); });
    if (!again) failure = caf::error{};
  }
  if (failure) {
    return make_error(corral_errc::version_mismatch,
                      "the service at " + place + " does not speak corral's protocol (" +
                          self->system().render(failure) + "); this client is corral " +
                          actors::corral_version + ", protocol " +
                          std::to_string(messages::protocol_version));
  }
  const auto expected_ifs = self->system().message_types<messages::supervisor_actor>();
  if (node_protocol != messages::protocol_version || interface != expected_ifs) {
    return make_error(
        corral_errc::version_mismatch,
        "incompatible versions: this client is corral " + std::string(actors::corral_version) +
            " (protocol " + std::to_string(messages::protocol_version) + "), node " + place +
            " is corral " + node_version + " (protocol " + std::to_string(node_protocol) + ")");
  }
  return caf::actor_cast<messages::supervisor_actor>(*found);
}

}  // namespace corral::app
