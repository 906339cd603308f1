// The egress proxy's certificate authority (internal to actors/egress_*.cpp): corral's CA,
// loaded from or made in its directory, and the leaves it signs for the hosts whose TLS the
// proxy terminates. Apart from the proxy because it is the one part that writes key material
// to disk; OpenSSL's types are only declared here, so its users need no OpenSSL headers.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>

// OpenSSL's own names for EVP_PKEY, X509 and BIO (<openssl/types.h>).
struct evp_pkey_st;
struct x509_st;
struct bio_st;

namespace corral::egress_detail {

// -- OpenSSL helpers ---------------------------------------------------------------------

struct openssl_free {
  void operator()(evp_pkey_st* p) const;
  void operator()(x509_st* p) const;
  void operator()(bio_st* p) const;
};
using key_ptr = std::unique_ptr<evp_pkey_st, openssl_free>;
using cert_ptr = std::unique_ptr<x509_st, openssl_free>;
using bio_ptr = std::unique_ptr<bio_st, openssl_free>;

// Throws std::runtime_error: what, then OpenSSL's error.
[[noreturn]] void fail_tls(const std::string& what);

// A file's whole text, or nothing if it cannot be read.
std::optional<std::string> read_file(const std::string& path);

// -- corral's CA and its leaves ------------------------------------------------------------

class certificate_authority {
 public:
  // Loads ca.pem and ca.key from `dir` (made 0700), or makes and writes both; throws
  // std::runtime_error saying why it cannot.
  explicit certificate_authority(const std::string& dir);

  std::string cert_path() const;
  const std::string& cert_pem() const;

  // A fresh leaf for `host`, valid a day back to 30 days ahead, with SAN DNS:host (IP:host
  // for an address).
  std::pair<key_ptr, cert_ptr> leaf(const std::string& host) const;

 private:
  bool load();
  void make();

  std::string dir_;
  key_ptr key_;
  cert_ptr cert_;
  std::string cert_pem_;
};

}  // namespace corral::egress_detail
