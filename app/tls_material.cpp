#include "app/tls_material.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <utility>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "actors/openssl_errors.hpp"
#include "actors/policy.hpp"
#include "messages/errors.hpp"

namespace corral::app {

namespace {

template <class T, void (*Free)(T*)>
struct openssl_deleter {
  void operator()(T* p) const { Free(p); }
};
using key_ptr = std::unique_ptr<EVP_PKEY, openssl_deleter<EVP_PKEY, EVP_PKEY_free>>;
using cert_ptr = std::unique_ptr<X509, openssl_deleter<X509, X509_free>>;
using ctx_ptr = std::unique_ptr<SSL_CTX, openssl_deleter<SSL_CTX, SSL_CTX_free>>;
using ssl_ptr = std::unique_ptr<SSL, openssl_deleter<SSL, SSL_free>>;

using actors::openssl_errors;

std::string errno_text(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

bool exists(const std::string& path) {
  return ::access(path.c_str(), F_OK) == 0;
}

class fd_guard {
 public:
  explicit fd_guard(int fd) : fd_(fd) {}
  ~fd_guard() {
    if (fd_ >= 0) ::close(fd_);
  }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// -- keys and certificates ------------------------------------------------------------------

enum class role { ca, server, client };

struct issued {
  key_ptr key;
  cert_ptr cert;
};

// A new P-256 key and its certificate for `cn`, signed by `issuer` (self-signed without one).
std::pair<issued, std::string> make_certificate(role r, const std::string& cn, int days,
                                                const std::vector<std::string>& sans,
                                                const issued* issuer) {
  issued out{key_ptr{EVP_EC_gen("P-256")}, cert_ptr{X509_new()}};
  if (!out.key || !out.cert) return {std::move(out), openssl_errors()};
  X509* x = out.cert.get();
  X509_set_version(x, 2);
  std::unique_ptr<BIGNUM, openssl_deleter<BIGNUM, BN_free>> serial{BN_new()};
  if (!serial || BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      !BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(x)))
    return {std::move(out), openssl_errors()};
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);  // clocks a little behind still accept it
  X509_gmtime_adj(X509_getm_notAfter(x), static_cast<long>(days) * 86400);
  X509_set_pubkey(x, out.key.get());
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("corral"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509* issuer_cert = issuer ? issuer->cert.get() : x;
  X509_set_issuer_name(x, X509_get_subject_name(issuer_cert));

  std::vector<std::pair<int, std::string>> extensions;
  if (r == role::ca) {
    extensions = {{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                  {NID_key_usage, "critical,keyCertSign,cRLSign"},
                  {NID_subject_key_identifier, "hash"}};
  } else {
    extensions = {{NID_basic_constraints, "critical,CA:FALSE"},
                  {NID_key_usage, "critical,digitalSignature"},
                  // OpenSSL checks the purpose on both sides: a client certificate cannot
                  // serve as a node's, nor a node's as a client's.
                  {NID_ext_key_usage, r == role::server ? "serverAuth" : "clientAuth"},
                  {NID_subject_key_identifier, "hash"},
                  {NID_authority_key_identifier, "keyid"}};
    if (!sans.empty()) {
      std::string alt;
      for (const auto& s : sans) {
        in6_addr ip6;
        in_addr ip4;
        const bool ip = ::inet_pton(AF_INET, s.c_str(), &ip4) == 1 ||
                        ::inet_pton(AF_INET6, s.c_str(), &ip6) == 1;
        alt += (alt.empty() ? "" : ",") + std::string(ip ? "IP:" : "DNS:") + s;
      }
      extensions.emplace_back(NID_subject_alt_name, alt);
    }
  }
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, issuer_cert, x, nullptr, nullptr, 0);
  for (const auto& [nid, value] : extensions) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value.c_str());
    if (!ext || X509_add_ext(x, ext, -1) != 1) {
      X509_EXTENSION_free(ext);
      return {std::move(out), openssl_errors()};
    }
    X509_EXTENSION_free(ext);
  }
  EVP_PKEY* signer = issuer ? issuer->key.get() : out.key.get();
  if (X509_sign(x, signer, EVP_sha256()) <= 0) return {std::move(out), openssl_errors()};
  return {std::move(out), std::string()};
}

// Writes `path` anew (never over an existing file) with `mode`, through `write`.
template <class Write>
std::string write_new(const std::string& path, mode_t mode, Write write) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return errno_text("cannot create " + path);
  FILE* f = ::fdopen(fd, "w");
  if (!f) {
    ::close(fd);
    return errno_text("cannot write " + path);
  }
  const bool ok = write(f) == 1;
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed) {
    ::unlink(path.c_str());
    return "cannot write " + path + ": " + (ok ? std::strerror(errno) : openssl_errors());
  }
  return {};
}

std::string write_pair(const std::string& dir, const std::string& stem, const issued& x) {
  if (auto e = write_new(dir + "/" + stem + ".key", 0600,
                         [&](FILE* f) {
                           return PEM_write_PrivateKey(f, x.key.get(), nullptr, nullptr, 0, nullptr,
                                                       nullptr);
                         });
      !e.empty())
    return e;
  return write_new(dir + "/" + stem + ".pem", 0644,
                   [&](FILE* f) { return PEM_write_X509(f, x.cert.get()); });
}

std::pair<issued, std::string> read_ca(const std::string& dir) {
  issued ca;
  for (auto [stem, is_key] : {std::pair{"ca.pem", false}, std::pair{"ca.key", true}}) {
    const std::string path = dir + "/" + stem;
    FILE* f = std::fopen(path.c_str(), "r");
    if (!f) return {std::move(ca), errno_text("cannot read " + path)};
    if (is_key)
      ca.key.reset(PEM_read_PrivateKey(f, nullptr, nullptr, nullptr));
    else
      ca.cert.reset(PEM_read_X509(f, nullptr, nullptr, nullptr));
    std::fclose(f);
    if (is_key ? !ca.key : !ca.cert) return {std::move(ca), path + ": " + openssl_errors()};
  }
  return {std::move(ca), std::string()};
}

// Makes `dir` (its parent 0755 if missing) 0700, or checks that it is private to this user.
std::string private_dir(const std::string& dir) {
  const auto slash = dir.find_last_of('/');
  if (slash != std::string::npos && slash > 0) {
    const auto parent = dir.substr(0, slash);
    if (!exists(parent) && ::mkdir(parent.c_str(), 0755) != 0 && errno != EEXIST)
      return errno_text("cannot create " + parent);
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return errno_text("cannot create " + dir);
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) return errno_text("cannot stat " + dir);
  if (!S_ISDIR(st.st_mode)) return dir + " is not a directory";
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0)
    return dir + " must be a directory of this user (uid " + std::to_string(::geteuid()) +
           ") that no one else can read (mode 0700): it holds the CA's key";
  return {};
}

// An exclusive lock on DIR/.lock while it lives.
class dir_lock {
 public:
  explicit dir_lock(const std::string& dir)
      : fd_(::open((dir + "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
    if (fd_ >= 0 && ::flock(fd_, LOCK_EX) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~dir_lock() {
    if (fd_ >= 0) ::close(fd_);
  }
  dir_lock(const dir_lock&) = delete;
  dir_lock& operator=(const dir_lock&) = delete;
  bool held() const { return fd_ >= 0; }

 private:
  int fd_;
};

constexpr int ca_days = 3650;
constexpr int node_days = 3650;

// Makes in `dir` what it lacks: the CA, the node's certificate, local root's.
std::string ensure_node_material(const std::string& dir, const std::string& listen_host) {
  if (auto e = private_dir(dir); !e.empty()) return e;
  dir_lock lock{dir};
  if (!lock.held()) return errno_text("cannot lock " + dir + "/.lock");
  if (!exists(dir + "/ca.pem")) {
    auto [ca, e] = make_certificate(role::ca, "corral node CA", ca_days, {}, nullptr);
    if (!e.empty()) return "cannot make a CA: " + e;
    if (auto w = write_pair(dir, "ca", ca); !w.empty()) return w;
  }
  const bool need_node = !exists(dir + "/node.pem");
  const bool need_client = !exists(dir + "/client.pem");
  if (!need_node && !need_client) return {};
  auto [ca, e] = read_ca(dir);
  if (!e.empty()) return e;
  if (need_node) {
    std::vector<std::string> sans = {"localhost", "127.0.0.1", "::1"};
    if (!listen_host.empty() && listen_host != "localhost" && listen_host != "127.0.0.1" &&
        listen_host != "::1")
      sans.push_back(listen_host);
    auto [node, ne] = make_certificate(role::server, "corral node", node_days, sans, &ca);
    if (!ne.empty()) return "cannot make the node's certificate: " + ne;
    if (auto w = write_pair(dir, "node", node); !w.empty()) return w;
  }
  if (need_client) {
    auto [client, ce] = make_certificate(role::client, "root", node_days, {}, &ca);
    if (!ce.empty()) return "cannot make local root's certificate: " + ce;
    if (auto w = write_pair(dir, "client", client); !w.empty()) return w;
  }
  return {};
}

bool readable(const std::string& path, std::string& why) {
  if (::access(path.c_str(), R_OK) == 0) return true;
  why = errno_text("cannot read " + path);
  return false;
}

}  // namespace

tls_options tls_files(const std::string& dir, const std::string& side) {
  tls_options out;
  out.certificate = dir + "/" + side + ".pem";
  out.key = dir + "/" + side + ".key";
  out.ca = dir + "/ca.pem";
  return out;
}

tls_options node_tls(const tls_options& given, const std::string& listen_host, std::string& error) {
  if (given.enabled()) {
    error = check_tls(given);
    return given;
  }
  const std::string dir = given.dir.empty() ? default_tls_dir : given.dir;
  error = ensure_node_material(dir, listen_host);
  if (!error.empty()) {
    if (given.dir.empty())
      error += " (a node keeps its TLS material in " + dir +
               ": run it as root, or give --tls-dir DIR or --tls-cert/--tls-key/--tls-ca)";
    return {};
  }
  auto files = tls_files(dir, "node");
  error = check_tls(files);
  return files;
}

tls_options client_tls(const tls_options& given, std::string& why) {
  why.clear();
  if (given.enabled()) return given;
  std::string dir = given.dir;
  if (dir.empty() && ::geteuid() == 0) dir = default_tls_dir;
  if (dir.empty()) return {};
  auto files = tls_files(dir, "client");
  if (!readable(files.certificate, why) || !readable(files.key, why) || !readable(files.ca, why))
    return {};
  return files;
}

std::string certificate_common_name(const std::string& cert_path) {
  auto* file = std::fopen(cert_path.c_str(), "r");
  if (!file) return {};
  X509* cert = PEM_read_X509(file, nullptr, nullptr, nullptr);
  std::fclose(file);
  if (!cert) return {};
  char cn[256] = {};
  const int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn,
                                          static_cast<int>(sizeof cn));
  X509_free(cert);
  return n > 0 ? std::string(cn, static_cast<std::size_t>(n)) : std::string();
}

std::string issue_client_certificate(const std::string& ca_dir, const std::string& name,
                                     const std::string& out_dir, int days) {
  // The CN is the holder's principal by default (app/session.cpp): a valid principal's name.
  if (auto err = actors::check_principal_name(name)) return "NAME: " + messages::describe(err);
  // Not a structured binding: the lambda below captures `ca` (clang refuses a captured binding).
  auto ca_read = read_ca(ca_dir);
  auto& ca = ca_read.first;
  const auto& e = ca_read.second;
  if (!e.empty())
    return e + " (the CA lives in the node's --tls-dir, default " + std::string(default_tls_dir) +
           ")";
  for (const char* f : {"client.pem", "client.key", "ca.pem"})
    if (exists(out_dir + "/" + f))
      return out_dir + "/" + f + " exists: give another --out directory";
  if (::mkdir(out_dir.c_str(), 0700) != 0 && errno != EEXIST)
    return errno_text("cannot create " + out_dir);
  auto [client, ce] = make_certificate(role::client, name, days, {}, &ca);
  if (!ce.empty()) return "cannot make the certificate: " + ce;
  if (auto w = write_pair(out_dir, "client", client); !w.empty()) return w;
  return write_new(out_dir + "/ca.pem", 0644,
                   [&](FILE* f) { return PEM_write_X509(f, ca.cert.get()); });
}

bool resolves_to_loopback(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || !found) return false;
  bool all = true;
  for (auto* a = found; a; a = a->ai_next) {
    if (a->ai_family == AF_INET) {
      const auto ip = ntohl(reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr.s_addr);
      all = all && (ip >> 24) == 127;
    } else if (a->ai_family == AF_INET6) {
      const auto& ip6 = reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr;
      all = all && IN6_IS_ADDR_LOOPBACK(&ip6);
    } else {
      all = false;
    }
  }
  ::freeaddrinfo(found);
  return all;
}

probe_result probe_without_certificate(const std::string& host, uint16_t port,
                                       std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0)
    return {probe_answer::unreachable, ::gai_strerror(rc)};
  std::unique_ptr<addrinfo, openssl_deleter<addrinfo, freeaddrinfo>> addresses{found};
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  int fd = -1;
  std::string failure = "no address";
  for (auto* a = found; a && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    // Linux bounds a blocking connect by the send timeout.
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      failure = std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  if (fd < 0) return {probe_answer::unreachable, failure};
  fd_guard guard{fd};
  ERR_clear_error();
  ctx_ptr ctx{SSL_CTX_new(TLS_client_method())};
  if (!ctx) return {probe_answer::unreachable, openssl_errors()};
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  ssl_ptr ssl{SSL_new(ctx.get())};
  if (!ssl || SSL_set_fd(ssl.get(), fd) != 1) return {probe_answer::unreachable, openssl_errors()};
  // TLS 1.3: the client's handshake ends before the server has seen its (empty) certificate;
  // the server's verdict comes as the first record after it.
  char byte = 0;
  const bool connected = SSL_connect(ssl.get()) == 1;
  const int read = connected ? SSL_read(ssl.get(), &byte, 1) : 0;
  const auto reason = ERR_GET_REASON(ERR_peek_error());
  const std::string detail = ERR_peek_error() != 0 ? openssl_errors() : "connection closed";
  if (reason == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED ||
      reason == SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE ||
      reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
    return {probe_answer::certificate_required, detail};
  if (!connected) return {probe_answer::not_tls, detail};
  if (read > 0) return {probe_answer::accepted, "the listener sent data"};
  return {probe_answer::accepted, "no verdict within " + std::to_string(timeout.count()) + " ms"};
}

}  // namespace corral::app
