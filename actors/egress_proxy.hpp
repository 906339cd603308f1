// The egress proxy: every sandbox reaches the network only through a unix socket of its own
// here, and the socket it came in on is its whole identity (no token). Each connection
// carries one HTTP/1.1 proxy request: CONNECT host:port (a TLS tunnel whose SNI must name the
// host; for a host with a credential, TLS is terminated with a leaf of corral's CA so the
// credential header can be set) or an absolute-form plain-HTTP request. Names are decided by
// egress_rules before any DNS, addresses after it. Runs on its own io_context thread(s).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "actors/egress_rules.hpp"

namespace corral {

struct egress_proxy_options {
  std::string ca_dir;            // corral's egress CA: ca.pem, ca.key (made if missing; 0700/0600)
  std::string upstream_ca_file;  // empty: upstream TLS is verified against /etc/ssl/certs
  std::string log_path;          // JSON lines, one per decision or connection end; empty: none
  std::size_t threads = 1;
};

class egress_proxy {
 public:
  // Starts the I/O thread(s) and loads or makes the CA; throws std::runtime_error saying why
  // it cannot (CA directory, log file, upstream CA file).
  explicit egress_proxy(egress_proxy_options options);
  // Closes every listener and connection, then joins the threads.
  ~egress_proxy();
  egress_proxy(const egress_proxy&) = delete;
  egress_proxy& operator=(const egress_proxy&) = delete;

  // Listens for sandbox `sandbox_id` on a unix socket at `socket_path`, made mode 0600 and
  // owned by uid:gid before it accepts anything. Returns why not, empty on success: invalid
  // rules, an id already open, a path in use by another sandbox or not a socket, bind errors.
  // A stale socket file at the path is replaced.
  std::string open(const std::string& sandbox_id, const std::string& socket_path,
                   egress_rules rules, uint32_t uid, uint32_t gid);

  // Closes the sandbox's listener and connections and unlinks its socket. Idempotent, from
  // any thread. The socket is gone on return; with `wait`, off the proxy's threads, so are the
  // listener and the connections (up to 5 s); without, they close on the proxy's thread (an
  // actor must not block).
  void close(const std::string& sandbox_id, bool wait = true);

  // ca_dir + "/ca.pem".
  std::string ca_cert_path() const;

  // What a sandbox trusts: the system roots (/etc/ssl/certs/ca-certificates.crt, if present)
  // followed by corral's CA, as one PEM text.
  std::string trust_bundle() const;

  // Totals of an open sandbox (zero for an unknown or closed one): connections accepted,
  // requests denied (by policy, protocol or limits), bytes between sandbox and proxy.
  struct counters {
    uint64_t connections = 0, denied = 0, bytes = 0;
  };
  counters counters_of(const std::string& sandbox_id) const;

  class impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace corral
