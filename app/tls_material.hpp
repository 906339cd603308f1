// Mutual TLS material: a node's CA, its own certificate and client certificates, made with
// OpenSSL's C API (EC P-256 keys, SHA-256 signatures) in a directory only its owner reads;
// which files a node and a client use; and a handshake probe that tells a client without a
// certificate what the node answers.
//
// A TLS directory holds:
//   ca.pem, ca.key         the node's CA (the key never leaves the node's directory)
//   node.pem, node.key     the node's certificate (serverAuth; SAN: localhost, loopback and
//                          the listen host)
//   client.pem, client.key a client certificate (clientAuth); in the node's directory, local
//                          root's
// A client's directory (from `corral node issue-cert`) holds ca.pem, client.pem, client.key.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "app/system_config.hpp"

namespace corral::app {

// Where a node keeps its material, and where a client run by root looks for it.
inline constexpr const char* default_tls_dir = "/var/lib/corral/tls";

// The files of `dir` a side presents: "node" or "client" certificate and key, and ca.pem.
tls_options tls_files(const std::string& dir, const std::string& side);

// The node's files: the --tls-* flags as given; otherwise those of --tls-dir (default
// default_tls_dir), made on first use: the directory (0700, owned by this user; a looser or
// foreign one is refused), the CA, the node's certificate (SAN: `listen_host` besides
// localhost, 127.0.0.1 and ::1) and local root's client certificate. Under a lock, so two
// nodes starting on one directory make one CA. Returns the files, or what is wrong in `error`.
tls_options node_tls(const tls_options& given, const std::string& listen_host, std::string& error);

// The client's files: the --tls-* flags as given; otherwise those of --tls-dir, or when run
// by root with no TLS flag, of default_tls_dir. Nothing enabled() when there are none or
// they cannot be read; `why` then says what was looked for (empty if nothing was).
tls_options client_tls(const tls_options& given, std::string& why);

// The subject's CN of the PEM certificate at `cert_path`; empty if it cannot be read.
std::string certificate_common_name(const std::string& cert_path);

// Writes a client certificate for NAME (the subject's CN), signed by the CA of `ca_dir`,
// into `out_dir` (made 0700 if missing) as client.pem, client.key (0600) and ca.pem, valid
// for `days`. Refuses to overwrite. Returns what is wrong, or empty.
std::string issue_client_certificate(const std::string& ca_dir, const std::string& name,
                                     const std::string& out_dir, int days);

// What a TLS handshake without a client certificate gets from a listener.
enum class probe_answer {
  certificate_required,  // the listener requires a client certificate (a corral node)
  unreachable,           // no connection (nothing listens, or no route)
  not_tls,               // something answered that does not speak TLS
  accepted,              // the handshake went through without a certificate
};

struct probe_result {
  probe_answer answer;
  std::string detail;  // OpenSSL's or the system's words
};

// Connects to HOST:PORT, shakes hands without a certificate (verifying nothing: it sends no
// application data) and reports the answer. Each step is bounded by `timeout`.
probe_result probe_without_certificate(const std::string& host, uint16_t port,
                                       std::chrono::milliseconds timeout);

// True when every address `host` resolves to is loopback (127.0.0.0/8 or ::1); a name that
// does not resolve is not loopback. "127.evil.example" is whatever its DNS says.
bool resolves_to_loopback(const std::string& host);

}  // namespace corral::app
