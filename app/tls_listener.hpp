// corral's network transport: CAF 0.17's BASP behind mutual TLS, for a node's listener (with
// the cost of unauthenticated connections bounded) and for clients' connections.
//
// Why not caf::openssl's own listener: it makes a new SSL_CTX for every accepted connection
// (reading the certificate, key and CA files from disk each time, in the one I/O thread),
// leaves a connection that never finishes its handshake open forever, and does not bound
// their number or the size of a client's certificate chain (OpenSSL's default: 100 KiB).
// Its client side leaves OpenSSL's error queue dirty after a failed connection, which then
// fails a healthy one on the same thread (see tls_session in the .cpp).
// This one is CAF's (libcaf_openssl/src/openssl/middleman_actor.cpp, 0.17.6) with:
//   - one SSL_CTX, loaded once: TLS 1.2+, a client certificate of the CA required and
//     verified (SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT), its chain at most
//     max_cert_list bytes, buffers released when idle, no session resumption;
//   - a handshake budget: at most max_handshakes connections between accept and a verified
//     certificate. At each accept, handshakes older than handshake_deadline are cut; if the
//     budget is still full, the oldest gives way if older than evict_after (default: always),
//     else the new connection is closed at once.
// BASP reads no byte before the handshake is done (every read goes through SSL_read), so a
// peer without a certificate never reaches its allocations.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include <caf/atom.hpp>
#include <caf/expected.hpp>
#include <caf/fwd.hpp>
#include <caf/io/middleman_actor.hpp>

#include "app/system_config.hpp"

namespace corral::app {

struct tls_listener_options {
  std::size_t max_handshakes = 64;
  std::chrono::milliseconds handshake_deadline{std::chrono::seconds(10)};
  // 0: a new connection always gets a place (a pile of idle connections never locks clients
  // out; a flood of new ones is the limit of what a listener can do).
  std::chrono::milliseconds evict_after{0};
  long max_cert_list = long{16} * 1024;  // bytes of a peer's certificate chain
};

// What the listener did, for logs and tests (written by CAF's I/O thread).
struct tls_listener_stats {
  std::atomic<uint64_t> accepted{0};       // TCP connections accepted
  std::atomic<uint64_t> authenticated{0};  // handshakes done with a verified certificate
  std::atomic<uint64_t> refused{0};        // closed at accept: the budget was full
  std::atomic<uint64_t> cut{0};            // handshakes cut: too old, or evicted
  std::atomic<uint64_t> in_handshake{0};   // now between accept and a verified certificate
};

// A middleman actor whose listeners and connections speak mutual TLS, registered in its
// actor system as `registry_name` (connect_node and the router connect through it when it
// is there). Unregistered and stopped on destruction (before the actor system goes).
struct tls_middleman {
  static constexpr caf::atom_value registry_name = caf::atom("corral-tls");
  caf::io::middleman_actor actor;  // publish (publish_tls) and connect through it
  std::shared_ptr<tls_listener_stats> stats;
  tls_middleman() = default;
  tls_middleman(const tls_middleman&) = delete;
  tls_middleman& operator=(const tls_middleman&) = delete;
  ~tls_middleman();
};

// Loads `tls` (all three files) into one server and one client context and spawns the
// middleman actor. An error names the file that failed.
caf::expected<std::shared_ptr<tls_middleman>> spawn_tls_middleman(
    caf::actor_system& sys, const tls_options& tls, const tls_listener_options& options = {});

// Publishes `whom` (with its message types `sigs`) on host:port through `mm` (like
// caf::io::publish, `reuse` on); returns the port bound. Blocks until the port is bound (the
// listener joins CAF's I/O loop a moment later). Stop it with unpublish_tls, and `mm.actor`
// with an exit message.
caf::expected<uint16_t> publish_tls(const caf::strong_actor_ptr& whom, std::set<std::string> sigs,
                                    uint16_t port, const std::string& host,
                                    const tls_middleman& mm);

// Closes the listener publish_tls opened for `whom` on `port`. Through `mm`, not the default
// middleman: `mm` handed the listener to CAF's I/O loop in a message, and only a message from
// `mm` is sure to arrive after it (an unpublish sent another way could overtake it, find
// nothing to close and leave the listener open, which leaks it at exit).
caf::expected<void> unpublish_tls(const caf::actor_addr& whom, uint16_t port,
                                  const tls_middleman& mm);

template <class Handle>
caf::expected<uint16_t> publish_tls(const Handle& whom, uint16_t port, const std::string& host,
                                    const tls_middleman& mm) {
  auto& sys = whom.home_system();
  return publish_tls(caf::actor_cast<caf::strong_actor_ptr>(whom), sys.message_types(whom), port,
                     host, mm);
}

}  // namespace corral::app
