// The CAF actor system's set-up, shared by corral's programs (the CLI, `corral node`,
// `corral-stress`): message types, a quiet logger, the scheduler, and for the network the
// middleman (corral peers only). Mutual TLS runs on it through app/tls_listener.hpp.
#pragma once

#include <string>

#include <caf/fwd.hpp>

namespace corral::app {

struct tls_options {
  std::string certificate;  // PEM chain of this side
  std::string key;          // its private key
  std::string ca;           // the CA the peer's certificate must chain to
  std::string dir;          // --tls-dir: where the three are when not given (app/tls_material.hpp)
  // The three files are given.
  bool enabled() const { return !certificate.empty() || !key.empty() || !ca.empty(); }
};

// Empty when TLS is off, or on with all three files readable PEM; otherwise what is wrong.
// (CAF loads them only per connection: a bad file would fail every connection, silently.)
std::string check_tls(const tls_options& tls);

struct system_options {
  // Load the middleman (for `corral node` or clients of one); only corral peers are accepted.
  bool network = false;
  // corral's actors mostly wait on the engine: sleeping workers (sharing) cost far less CPU
  // per request than CAF's default polling work stealing (measured: 0.9 ms vs 8.5 ms).
  bool sharing_scheduler = true;
  // A short-lived client (the CLI talking to a node): one scheduler thread and no BASP
  // workers. It sends a few requests and waits; starting threads it never uses is most of
  // what it would spend.
  bool lean = false;
};

// Fills `cfg` for an actor system of one of corral's programs.
void configure_system(caf::actor_system_config& cfg, const system_options& options);

}  // namespace corral::app
