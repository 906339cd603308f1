// One session per accepted connection, each async step its own handler, on a strand:
//
//   read_head ─► on_head ─► resolve ─► on_addresses ─► on_connect ─┬─ plain ─► exchange ─► end
//      │400        │400/403    │502       │403            │502     │
//      ▼           ▼           ▼          ▼               ▼        └─ CONNECT ─► on_established
//     end ◄────── refuse ◄─────┴──────────┴───────────────┘                        │ (200 sent)
//                                                                                 read_hello
//   SNI ≠ host, not TLS: end                                                   on_hello_bytes
//      tunnel:      forward hello ─► on_hello_forwarded ─► splice (both ways) ─► end
//      credential:  on_sandbox_handshake ─► on_upstream_handshake ─► exchange ─► end
//
// A watchdog timer ends the session on the head timeout, idleness or the connection's age.
// Bytes are metered where the sandbox's stream is read and written (metered_stream), so one
// budget covers tunnels, terminated TLS and plain HTTP alike.
#include "actors/egress_proxy.hpp"

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace corral {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using unix_socket = asio::local::stream_protocol::socket;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr std::size_t head_limit = 16 * 1024;            // a request head from the sandbox
constexpr std::size_t upstream_head_limit = 64 * 1024;   // a response head (cookies are long)
constexpr std::size_t hello_limit = 64 * 1024;           // bytes read to find the SNI
constexpr std::size_t chunk_size = 64 * 1024;            // one body or tunnel chunk
constexpr auto head_timeout = std::chrono::seconds(30);  // until the request head is in
constexpr auto idle_timeout = std::chrono::seconds(60);  // no byte either way

// -- OpenSSL helpers ---------------------------------------------------------------------

struct openssl_free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
};
using key_ptr = std::unique_ptr<EVP_PKEY, openssl_free>;
using cert_ptr = std::unique_ptr<X509, openssl_free>;
using bio_ptr = std::unique_ptr<BIO, openssl_free>;

std::string openssl_error() {
  const unsigned long e = ERR_get_error();
  if (e == 0) return "unknown OpenSSL error";
  std::array<char, 256> text{};
  ERR_error_string_n(e, text.data(), text.size());
  ERR_clear_error();
  return text.data();
}

[[noreturn]] void fail_tls(const std::string& what) {
  throw std::runtime_error(what + ": " + openssl_error());
}

key_ptr make_p256_key() {
  key_ptr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) fail_tls("cannot make an EC P-256 key");
  return key;
}

void add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext) fail_tls("cannot make certificate extension " + value);
  const int added = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (!added) fail_tls("cannot add certificate extension " + value);
}

// A v3 certificate for `key` named `cn`, signed by issuer (self-signed when issuer is null).
cert_ptr make_certificate(EVP_PKEY* key, const std::string& cn, X509* issuer, EVP_PKEY* issuer_key,
                          long days_back, long days_ahead,
                          const std::vector<std::pair<int, std::string>>& extensions) {
  cert_ptr cert(X509_new());
  if (!cert) fail_tls("cannot allocate a certificate");
  X509_set_version(cert.get(), 2);
  // A random positive 127-bit serial: browsers reject reused serials from one issuer.
  std::array<unsigned char, 16> serial{};
  if (RAND_bytes(serial.data(), static_cast<int>(serial.size())) != 1) fail_tls("no random serial");
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial.data(), static_cast<int>(serial.size()), nullptr);
  const bool serial_set = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  if (!serial_set) fail_tls("cannot set a serial");
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -days_back * 86400);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), days_ahead * 86400);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name);
  X509* signer = issuer ? issuer : cert.get();
  for (const auto& [nid, value] : extensions) add_extension(cert.get(), signer, nid, value);
  if (!X509_sign(cert.get(), issuer ? issuer_key : key, EVP_sha256()))
    fail_tls("cannot sign the certificate for " + cn);
  return cert;
}

std::string pem_of(X509* cert) {
  bio_ptr bio(BIO_new(BIO_s_mem()));
  if (!bio || !PEM_write_bio_X509(bio.get(), cert)) fail_tls("cannot write a certificate");
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

std::string pem_of(EVP_PKEY* key) {
  bio_ptr bio(BIO_new(BIO_s_mem()));
  if (!bio || !PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr))
    fail_tls("cannot write a private key");
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Written beside, then renamed: a crash leaves the old file or the new, never half of one.
void write_file(const std::string& path, const std::string& text, mode_t mode) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) throw std::runtime_error("cannot write " + tmp + ": " + std::strerror(errno));
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                       ::fchmod(fd, mode) == 0 && ::fsync(fd) == 0;
  ::close(fd);
  if (!written || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot write " + path + ": " + why);
  }
}

// -- corral's CA and its leaves ------------------------------------------------------------

class certificate_authority {
 public:
  explicit certificate_authority(const std::string& dir) : dir_(dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw std::runtime_error("cannot make the CA directory " + dir + ": " + ec.message());
    if (::chmod(dir.c_str(), 0700) != 0)
      throw std::runtime_error("cannot make " + dir + " private: " + std::strerror(errno));
    if (!load()) make();
  }

  std::string cert_path() const { return dir_ + "/ca.pem"; }
  const std::string& cert_pem() const { return cert_pem_; }

  // A fresh leaf for `host`, valid a day back to 30 days ahead, with SAN DNS:host (IP:host
  // for an address).
  std::pair<key_ptr, cert_ptr> leaf(const std::string& host) const {
    auto key = make_p256_key();
    boost::system::error_code ec;
    asio::ip::make_address(host, ec);
    const std::string san = (ec ? "DNS:" : "IP:") + host;
    auto cert = make_certificate(key.get(), host, cert_.get(), key_.get(), 1, 30,
                                 {{NID_basic_constraints, "critical,CA:FALSE"},
                                  {NID_key_usage, "critical,digitalSignature"},
                                  {NID_ext_key_usage, "serverAuth"},
                                  {NID_subject_alt_name, san},
                                  {NID_subject_key_identifier, "hash"},
                                  {NID_authority_key_identifier, "keyid:always"}});
    return {std::move(key), std::move(cert)};
  }

 private:
  bool load() {
    auto cert_text = read_file(dir_ + "/ca.pem");
    auto key_text = read_file(dir_ + "/ca.key");
    if (!cert_text || !key_text) return false;
    bio_ptr cert_bio(BIO_new_mem_buf(cert_text->data(), static_cast<int>(cert_text->size())));
    bio_ptr key_bio(BIO_new_mem_buf(key_text->data(), static_cast<int>(key_text->size())));
    cert_.reset(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
    key_.reset(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
    if (!cert_ || !key_ || X509_check_private_key(cert_.get(), key_.get()) != 1)
      throw std::runtime_error("the egress CA in " + dir_ +
                               " is unreadable or its key does not match: remove both files to "
                               "make a new one");
    cert_pem_ = *cert_text;
    return true;
  }

  void make() {
    key_ = make_p256_key();
    cert_ = make_certificate(key_.get(), "corral egress CA", nullptr, nullptr, 1, 3650,
                             {{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                              {NID_key_usage, "critical,keyCertSign,cRLSign"},
                              {NID_subject_key_identifier, "hash"},
                              {NID_authority_key_identifier, "keyid:always"}});
    // The key first: a crash between the two leaves no certificate without its key.
    write_file(dir_ + "/ca.key", pem_of(key_.get()), 0600);
    cert_pem_ = pem_of(cert_.get());
    write_file(dir_ + "/ca.pem", cert_pem_, 0644);
  }

  std::string dir_;
  key_ptr key_;
  cert_ptr cert_;
  std::string cert_pem_;
};

// ALPN toward the sandbox: only http/1.1 is relayed, so only it is chosen; a client offering
// nothing else gets no ALPN and falls back or gives up.
int select_http11(SSL*, const unsigned char** out, unsigned char* out_len, const unsigned char* in,
                  unsigned int in_len, void*) {
  static constexpr unsigned char proto[] = {'h', 't', 't', 'p', '/', '1', '.', '1'};
  for (unsigned int i = 0; i < in_len;) {
    const unsigned int len = in[i];
    if (i + 1 + len > in_len) break;
    if (len == sizeof proto && std::memcmp(in + i + 1, proto, sizeof proto) == 0) {
      *out = in + i + 1;
      *out_len = static_cast<unsigned char>(len);
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + len;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

// -- the decision log ----------------------------------------------------------------------

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      // Bytes beyond ASCII are escaped one by one: the line stays valid JSON whatever a
      // peer or an error message holds.
      std::array<char, 8> esc{};
      std::snprintf(esc.data(), esc.size(), "\\u%04x", c);
      out += esc.data();
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

struct log_entry {
  std::string sandbox, host, method, decision, why;
  uint16_t port = 0;
  uint64_t bytes_up = 0, bytes_down = 0;
};

class decision_log {
 public:
  explicit decision_log(const std::string& path) {
    if (path.empty()) return;
    const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || !(file_ = ::fdopen(fd, "a"))) {
      if (fd >= 0) ::close(fd);
      throw std::runtime_error("cannot open the egress log " + path + ": " + std::strerror(errno));
    }
  }
  ~decision_log() {
    if (file_) std::fclose(file_);
  }
  decision_log(const decision_log&) = delete;
  decision_log& operator=(const decision_log&) = delete;

  // Never given a header value: entries hold names, reasons and counts only.
  void write(const log_entry& e) {
    if (!file_) return;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
    // What a sandbox chose (its host, method, the reason quoting them) is cut to 256 bytes:
    // a line's size is never the sandbox's to pick.
    const auto cut = [](std::string_view v) { return json_string(v.substr(0, 256)); };
    std::string line = "{\"ts\":" + std::to_string(ms) + ",\"sandbox\":" + json_string(e.sandbox) +
                       ",\"host\":" + cut(e.host) + ",\"port\":" + std::to_string(e.port) +
                       ",\"method\":" + cut(e.method) + ",\"decision\":" + json_string(e.decision) +
                       ",\"why\":" + cut(e.why) + ",\"bytes_up\":" + std::to_string(e.bytes_up) +
                       ",\"bytes_down\":" + std::to_string(e.bytes_down) + "}\n";
    std::lock_guard lock(mutex_);
    std::fwrite(line.data(), 1, line.size(), file_);
    std::fflush(file_);
  }

 private:
  std::mutex mutex_;
  std::FILE* file_ = nullptr;
};

// -- what sessions share -------------------------------------------------------------------

struct services {
  explicit services(const egress_proxy_options& o)
      : options(o), ca(o.ca_dir), log(o.log_path), upstream_tls(ssl::context::tls_client) {
    upstream_tls.set_verify_mode(ssl::verify_peer);
    SSL_CTX_set_min_proto_version(upstream_tls.native_handle(), TLS1_2_VERSION);
    boost::system::error_code ec;
    if (o.upstream_ca_file.empty()) {
      const char* bundle = "/etc/ssl/certs/ca-certificates.crt";
      if (::access(bundle, R_OK) == 0) upstream_tls.load_verify_file(bundle, ec);
      if (!ec) upstream_tls.add_verify_path("/etc/ssl/certs", ec);
    } else {
      upstream_tls.load_verify_file(o.upstream_ca_file, ec);
    }
    if (ec) throw std::runtime_error("cannot load the upstream trust store: " + ec.message());
    // Only HTTP/1.1 is relayed upstream too (SSL_CTX_set_alpn_protos returns 0 on success).
    static constexpr unsigned char alpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    if (SSL_CTX_set_alpn_protos(upstream_tls.native_handle(), alpn, sizeof alpn) != 0)
      fail_tls("cannot set ALPN");
  }

  // The server context presenting a leaf for `host`, made on first use, remade after a week
  // (the leaf lives 30 days). Throws std::runtime_error if OpenSSL fails.
  std::shared_ptr<ssl::context> leaf_context(const std::string& host) {
    std::lock_guard lock(leaf_mutex);
    auto& entry = leaves[host];
    if (entry.context && clock_type::now() - entry.made < std::chrono::hours(24 * 7))
      return entry.context;
    auto [key, cert] = ca.leaf(host);
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
    SSL_CTX* native = ctx->native_handle();
    SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate(native, cert.get()) != 1 ||
        SSL_CTX_use_PrivateKey(native, key.get()) != 1)
      fail_tls("cannot use the leaf for " + host);
    SSL_CTX_set_alpn_select_cb(native, select_http11, nullptr);
    entry = {ctx, clock_type::now()};
    return ctx;
  }

  egress_proxy_options options;
  certificate_authority ca;
  decision_log log;
  ssl::context upstream_tls;

  struct leaf_entry {
    std::shared_ptr<ssl::context> context;
    clock_type::time_point made;
  };
  std::mutex leaf_mutex;
  std::map<std::string, leaf_entry> leaves;
};

class session;

// One sandbox's state, shared by its listener and sessions. The rules never change after
// open(), so sessions read them without a lock.
struct sandbox {
  std::string id;
  std::string socket_path;
  egress_rules rules;
  std::atomic<uint64_t> connections{0}, denied{0}, bytes{0};
  std::atomic<uint32_t> active{0};

  std::mutex mutex;  // guards sessions and closed
  std::vector<std::weak_ptr<session>> sessions;
  bool closed = false;
};

// -- metering the sandbox's side -----------------------------------------------------------

// Per-connection usage, charged to the sandbox's byte budget as bytes move.
struct meter {
  sandbox* box = nullptr;  // the session holds the sandbox alive
  uint64_t up = 0, down = 0;
  clock_type::time_point last = clock_type::now();
  bool cut = false;  // the budget ran out: the connection ends with "byte limit"

  // Charges n bytes; false (and nothing charged) if that would pass max_bytes.
  bool take(std::size_t n) {
    const uint64_t max = box->rules.max_bytes;
    const uint64_t total = box->bytes.fetch_add(n) + n;
    if (max != 0 && total > max) {
      box->bytes.fetch_sub(n);
      cut = true;
      return false;
    }
    return true;
  }
  void give_back(std::size_t n) { box->bytes.fetch_sub(n); }
};

// The sandbox's unix socket as an Asio stream that meters every byte and can first replay
// bytes already read (the ClientHello that was inspected for its SNI, handed to the TLS
// engine when the proxy terminates TLS). A read past the budget fails and is not forwarded;
// a write is charged before it starts and refunded for what was not written.
class metered_stream {
 public:
  using executor_type = unix_socket::executor_type;
  using lowest_layer_type = unix_socket::lowest_layer_type;

  metered_stream(unix_socket socket, sandbox& box) : socket_(std::move(socket)) {
    meter_.box = &box;
  }

  executor_type get_executor() { return socket_.get_executor(); }
  lowest_layer_type& lowest_layer() { return socket_.lowest_layer(); }
  const lowest_layer_type& lowest_layer() const { return socket_.lowest_layer(); }
  unix_socket& socket() { return socket_; }
  meter& usage() { return meter_; }

  void replay(std::vector<unsigned char> bytes) {
    replay_ = std::move(bytes);
    replay_at_ = 0;
  }

  template <class MutableBuffers, class Handler>
  void async_read_some(const MutableBuffers& buffers, Handler&& handler) {
    if (replay_at_ < replay_.size()) {
      const std::size_t n = asio::buffer_copy(buffers, asio::buffer(replay_) + replay_at_);
      replay_at_ += n;
      asio::post(socket_.get_executor(),
                 [h = std::forward<Handler>(handler), n]() mutable { h(beast::error_code{}, n); });
      return;
    }
    socket_.async_read_some(buffers, [this, h = std::forward<Handler>(handler)](
                                         beast::error_code ec, std::size_t n) mutable {
      if (n > 0) {
        meter_.last = clock_type::now();
        if (!meter_.take(n)) return h(beast::error_code(asio::error::connection_aborted), 0);
        meter_.up += n;
      }
      h(ec, n);
    });
  }

  template <class ConstBuffers, class Handler>
  void async_write_some(const ConstBuffers& buffers, Handler&& handler) {
    const std::size_t size = asio::buffer_size(buffers);
    if (!meter_.take(size)) {
      asio::post(socket_.get_executor(), [h = std::forward<Handler>(handler)]() mutable {
        h(beast::error_code(asio::error::connection_aborted), 0);
      });
      return;
    }
    socket_.async_write_some(buffers, [this, size, h = std::forward<Handler>(handler)](
                                          beast::error_code ec, std::size_t n) mutable {
      meter_.give_back(size - n);
      meter_.down += n;
      if (n > 0) meter_.last = clock_type::now();
      h(ec, n);
    });
  }

 private:
  unix_socket socket_;
  meter meter_;
  std::vector<unsigned char> replay_;
  std::size_t replay_at_ = 0;
};

using sandbox_tls = ssl::stream<metered_stream&>;
using upstream_tls = ssl::stream<tcp::socket&>;
using request_parser = http::request_parser<http::buffer_body>;
using response_parser = http::response_parser<http::buffer_body>;

// -- request targets -----------------------------------------------------------------------

struct authority {
  std::string host;  // as written, without IPv6 brackets
  uint16_t port = 0;
};

std::optional<uint16_t> parse_port(std::string_view s) {
  if (s.empty() || s.size() > 5) return std::nullopt;
  unsigned value = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value == 0 || value > 65535) return std::nullopt;
  return static_cast<uint16_t>(value);
}

// "host:port", "[v6]:port"; without a port, `default_port` (0: a port is required).
std::optional<authority> parse_authority(std::string_view s, uint16_t default_port) {
  if (s.empty() || s.find('@') != s.npos) return std::nullopt;  // no userinfo
  authority a;
  std::string_view rest;
  if (s.front() == '[') {
    const auto close = s.find(']');
    if (close == s.npos) return std::nullopt;
    a.host = std::string(s.substr(1, close - 1));
    rest = s.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return std::nullopt;
  } else {
    const auto colon = s.rfind(':');
    a.host = std::string(s.substr(0, colon));
    if (a.host.find(':') != std::string::npos) return std::nullopt;  // bare IPv6
    if (colon != s.npos) rest = s.substr(colon);
  }
  if (a.host.empty()) return std::nullopt;
  if (rest.empty()) {
    if (default_port == 0) return std::nullopt;
    a.port = default_port;
    return a;
  }
  auto port = parse_port(rest.substr(1));
  if (!port) return std::nullopt;
  a.port = *port;
  return a;
}

struct absolute_target {
  authority where;
  std::string path;  // origin-form: "/x?y"
};

std::optional<absolute_target> parse_http_target(std::string_view t) {
  constexpr std::string_view scheme = "http://";
  if (t.size() < scheme.size()) return std::nullopt;
  for (std::size_t i = 0; i < scheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(t[i])) != scheme[i]) return std::nullopt;
  t.remove_prefix(scheme.size());
  const auto end = t.find_first_of("/?#");
  auto where = parse_authority(t.substr(0, end), 80);
  if (!where) return std::nullopt;
  std::string path(end == t.npos ? std::string_view("/") : t.substr(end));
  path = path.substr(0, path.find('#'));
  if (path.empty() || path.front() == '?') path.insert(0, "/");
  return absolute_target{*where, path};
}

std::string reply_text(http::status status, const std::string& why) {
  const std::string body = why + "\n";
  return "HTTP/1.1 " + std::to_string(static_cast<unsigned>(status)) + " " +
         std::string(http::obsolete_reason(status)) +
         "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + body;
}

bool is_closed_by_peer(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::ssl::error::stream_truncated || ec == asio::error::connection_reset;
}

// -- relaying one HTTP message, body streamed through a bounded chunk -----------------------

// The head has been read by `p`; writes it to `out`, then moves the body from `in` to `out`
// chunk by chunk (never more than chunk_size held), then calls `done`.
template <bool is_request, class In, class Out>
class message_relay : public std::enable_shared_from_this<message_relay<is_request, In, Out>> {
 public:
  using parser_type = http::parser<is_request, http::buffer_body>;

  message_relay(In& in, beast::flat_buffer& in_buffer, parser_type& p, Out& out,
                std::function<void(beast::error_code)> done)
      : in_(in), in_buffer_(in_buffer), p_(p), out_(out), sr_(p.get()), done_(std::move(done)) {}

  void run() {
    http::async_write_header(out_, sr_,
                             [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                               self->on_head_written(ec);
                             });
  }

 private:
  void on_head_written(beast::error_code ec) {
    if (ec) return done_(ec);
    next_chunk();
  }

  void next_chunk() {
    auto& body = p_.get().body();
    if (p_.is_done()) {
      body.data = nullptr;
      body.size = 0;
      body.more = false;
      return write_chunk();
    }
    body.data = chunk_.data();
    body.size = chunk_.size();
    http::async_read(in_, in_buffer_, p_,
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                       self->on_chunk_read(ec);
                     });
  }

  void on_chunk_read(beast::error_code ec) {
    if (ec == http::error::need_buffer) ec = {};  // the chunk is full: pass it on
    if (ec) return done_(ec);
    auto& body = p_.get().body();
    body.size = chunk_.size() - body.size;
    body.data = chunk_.data();
    body.more = !p_.is_done();
    write_chunk();
  }

  void write_chunk() {
    http::async_write(out_, sr_,
                      [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                        self->on_chunk_written(ec);
                      });
  }

  void on_chunk_written(beast::error_code ec) {
    if (ec == http::error::need_buffer) ec = {};
    if (ec) return done_(ec);
    if (p_.is_done() || sr_.is_done()) return done_({});
    next_chunk();
  }

  In& in_;
  beast::flat_buffer& in_buffer_;
  parser_type& p_;
  Out& out_;
  http::serializer<is_request, http::buffer_body> sr_;
  std::array<char, chunk_size> chunk_{};
  std::function<void(beast::error_code)> done_;
};

// -- the session ---------------------------------------------------------------------------

class session : public std::enable_shared_from_this<session> {
 public:
  enum class kind { tunnel, terminate, plain };

  session(unix_socket socket, std::shared_ptr<sandbox> box, std::shared_ptr<services> svc)
      : box_(std::move(box)),
        svc_(std::move(svc)),
        executor_(socket.get_executor()),
        down_(std::move(socket), *box_),
        down_buffer_(head_limit + 4096),
        resolver_(executor_),
        up_(executor_),
        watchdog_(executor_),
        started_(clock_type::now()),
        head_deadline_(started_ + head_timeout) {}

  asio::any_io_executor executor() const { return executor_; }

  // A connection within the sandbox's limit: read its request.
  void start() {
    if (ended_) return;  // closed with its sandbox before it started
    holds_slot_ = true;
    box_->connections.fetch_add(1);
    arm_watchdog();
    read_head();
  }

  // A connection past max_connections: 429 without reading anything.
  void start_refused() {
    box_->connections.fetch_add(1);
    arm_watchdog();
    refuse(http::status::too_many_requests, "too many connections (max_connections " +
                                                std::to_string(box_->rules.max_connections) + ")");
  }

  // Ends the connection, logs it once. Every later handler sees its sockets closed.
  void end(const std::string& why) {
    if (ended_) return;
    ended_ = true;
    if (why_.empty()) why_ = why;
    if (down_.usage().cut) why_ = "byte limit";
    beast::error_code ignored;
    down_.socket().close(ignored);
    up_.close(ignored);
    resolver_.cancel();
    watchdog_.cancel();
    if (holds_slot_) box_->active.fetch_sub(1);
    holds_slot_ = false;
    // A connection that sent nothing is not a decision: a sandbox looping connect and close
    // must not write a line each time.
    if (method_.empty() && down_.usage().up == 0 && reply_.empty()) return;
    svc_->log.write(
        {box_->id, host_, method_, decision_, why_, port_, down_.usage().up, down_.usage().down});
  }

  // Rewrites a request before it goes upstream; returns why it may not go.
  std::optional<std::string> rewrite(http::request<http::buffer_body>& req) {
    if (kind_ == kind::terminate) {
      if (req.target().empty() || (req.target().front() != '/' && req.target() != "*"))
        return "inside the tunnel a request target is a path (origin-form)";
    } else {
      req.target(plain_path_);
      req.keep_alive(false);  // one exchange per plain connection: its next host may differ
    }
    // Host is the host that was decided on: a different Host header would reach another
    // virtual host of the same server, carrying the credential with it.
    const uint16_t default_port = kind_ == kind::terminate ? 443 : 80;
    const bool v6 = host_.find(':') != std::string::npos;
    std::string host_field = v6 ? "[" + host_ + "]" : host_;
    if (port_ != default_port) host_field += ":" + std::to_string(port_);
    req.set(http::field::host, host_field);
    req.erase(http::field::proxy_authorization);
    req.erase("Proxy-Connection");
    // The relay is half-duplex (whole request, then response): it cannot honour
    // "Expect: 100-continue", so the upstream is not told to wait for it.
    req.erase(http::field::expect);
    // Framing the upstream could read otherwise than Beast did (a coding list, a length list)
    // would let a later request on a kept-alive connection be smuggled past these checks.
    const auto te = req[http::field::transfer_encoding];
    if (!te.empty() && !beast::iequals(te, "chunked"))
      return "Transfer-Encoding other than chunked is refused";
    if (req.count(http::field::content_length) > 1 ||
        req[http::field::content_length].find(',') != beast::string_view::npos)
      return "more than one Content-Length is refused";
    if (credential_) {
      // An echo of the request would hand the credential to the sandbox.
      if (req.method() == http::verb::trace || req.method_string() == "TRACK")
        return "TRACE carries no credential";
      req.erase(credential_->header);  // every copy the sandbox sent
      req.set(credential_->header, credential_->value);
    }
    return std::nullopt;
  }

  void end_after(beast::error_code ec, const std::string& what) {
    if (is_closed_by_peer(ec)) return end("closed");
    end(what + ": " + ec.message());
  }

  metered_stream& down() { return down_; }
  beast::flat_buffer& down_buffer() { return down_buffer_; }
  std::optional<request_parser>& request() { return request_; }
  void count_request() { ++requests_; }

 private:
  // -- head and decision ----------------------------------------------------------------

  void read_head() {
    request_.emplace();
    request_->header_limit(static_cast<std::uint32_t>(head_limit));
    // Not boost::none: Beast 1.74 compares Content-Length against the optional itself.
    request_->body_limit(std::numeric_limits<std::uint64_t>::max());
    http::async_read_header(
        down_, down_buffer_, *request_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_head(ec); });
  }

  void on_head(beast::error_code ec) {
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow)
      return refuse(http::status::request_header_fields_too_large, "request head too large");
    // Beast's parse errors (not the peer leaving midway) get an answer.
    if (ec && ec.category() == beast::error_code(http::error::bad_target).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message)
      return refuse(http::status::bad_request, "malformed request: " + ec.message());
    if (ec) return end("no request head: " + ec.message());
    head_deadline_ = clock_type::time_point::max();
    auto& req = request_->get();
    method_ = std::string(req.method_string());
    if (req.method() == http::verb::connect) {
      auto where = parse_authority(req.target(), 0);
      if (!where) return refuse(http::status::bad_request, "CONNECT needs host:port");
      host_ = normalize_host(where->host);
      port_ = where->port;
      if (auto why = refuse_host(box_->rules, where->host, port_))
        return refuse(http::status::forbidden, *why);
      if (auto* c = credential_for(box_->rules, host_)) credential_ = *c;
      kind_ = credential_ ? kind::terminate : kind::tunnel;
    } else {
      auto target = parse_http_target(req.target());
      if (!target)
        return refuse(http::status::bad_request,
                      "only CONNECT host:port and absolute http:// requests are proxied");
      host_ = normalize_host(target->where.host);
      port_ = target->where.port;
      plain_path_ = target->path;
      if (auto why = refuse_host(box_->rules, target->where.host, port_))
        return refuse(http::status::forbidden, *why);
      if (auto* c = credential_for(box_->rules, host_)) credential_ = *c;
      kind_ = kind::plain;
    }
    decision_ = "allowed";
    resolve();
  }

  // -- resolution and connection --------------------------------------------------------

  void resolve() {
    if (auto it = box_->rules.resolve.find(host_); it != box_->rules.resolve.end())
      return on_addresses({asio::ip::make_address(it->second)});
    boost::system::error_code literal_error;
    auto literal = asio::ip::make_address(host_, literal_error);
    if (!literal_error) return on_addresses({literal});
    resolver_.async_resolve(
        host_, std::to_string(port_), tcp::resolver::numeric_service,
        [self = shared_from_this()](beast::error_code ec, tcp::resolver::results_type results) {
          self->on_resolve(ec, std::move(results));
        });
  }

  void on_resolve(beast::error_code ec, tcp::resolver::results_type results) {
    if (ec) return refuse(http::status::bad_gateway, "cannot resolve: " + ec.message());
    std::vector<asio::ip::address> addresses;
    for (const auto& r : results) addresses.push_back(r.endpoint().address());
    on_addresses(addresses);
  }

  void on_addresses(const std::vector<asio::ip::address>& addresses) {
    std::string refused;
    for (const auto& a : addresses) {
      if (auto why = refuse_address(box_->rules, a)) {
        if (refused.empty()) refused = *why;
      } else {
        endpoints_.emplace_back(a, port_);
      }
    }
    if (endpoints_.empty()) {
      decision_ = "denied";
      return refuse(http::status::forbidden,
                    "resolves to no address it may reach: " +
                        (refused.empty() ? std::string("no address at all") : refused));
    }
    asio::async_connect(up_, endpoints_,
                        [self = shared_from_this()](beast::error_code ec, const tcp::endpoint&) {
                          self->on_connect(ec);
                        });
  }

  void on_connect(beast::error_code ec) {
    if (ec) return refuse(http::status::bad_gateway, "cannot connect: " + ec.message());
    if (kind_ == kind::plain) return run_exchange(down_, up_, false);
    reply_ = "HTTP/1.1 200 Connection established\r\n\r\n";
    asio::async_write(down_, asio::buffer(reply_),
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        self->on_established(ec);
                      });
  }

  // -- the ClientHello ------------------------------------------------------------------

  void on_established(beast::error_code ec) {
    if (ec) return end_after(ec, "answering CONNECT");
    // The head's buffer may already hold the start of the ClientHello.
    const auto held = down_buffer_.data();
    const auto* p = static_cast<const unsigned char*>(held.data());
    hello_.assign(p, p + held.size());
    down_buffer_.consume(held.size());
    check_hello();
  }

  void check_hello() {
    const auto hello = parse_client_hello(hello_);
    using st = client_hello::status;
    if (hello.state == st::incomplete && hello_.size() < hello_limit) return read_hello();
    if (hello.state != st::complete) return deny_in_tunnel("the tunnel does not start with TLS");
    if (hello.sni.empty()) return deny_in_tunnel("the TLS ClientHello names no server (no SNI)");
    if (normalize_host(hello.sni) != host_)
      return deny_in_tunnel("the TLS SNI " + hello.sni + " is not the CONNECT host");
    if (kind_ == kind::tunnel) {
      return asio::async_write(up_, asio::buffer(hello_),
                               [self = shared_from_this()](beast::error_code ec, std::size_t) {
                                 self->on_hello_forwarded(ec);
                               });
    }
    terminate_tls();
  }

  void read_hello() {
    const std::size_t old = hello_.size();
    hello_.resize(std::min(hello_limit, old + chunk_size));
    down_.async_read_some(asio::buffer(hello_.data() + old, hello_.size() - old),
                          [self = shared_from_this(), old](beast::error_code ec, std::size_t n) {
                            self->hello_.resize(old + n);
                            self->on_hello_bytes(ec);
                          });
  }

  void on_hello_bytes(beast::error_code ec) {
    if (ec) return end_after(ec, "reading the TLS ClientHello");
    check_hello();
  }

  // After "200" no HTTP answer can be given: the refusal is the closed tunnel and the log.
  void deny_in_tunnel(const std::string& why) {
    decision_ = "denied";
    box_->denied.fetch_add(1);
    end(why);
  }

  // -- a plain tunnel -------------------------------------------------------------------

  void on_hello_forwarded(beast::error_code ec) {
    if (ec) return end("forwarding the ClientHello: " + ec.message());
    hello_.clear();
    hello_.shrink_to_fit();
    pumps_ = std::make_unique<pump_buffers>();
    read_sandbox();
    read_upstream();
  }

  void read_sandbox() {
    down_.async_read_some(asio::buffer(pumps_->up),
                          [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                            self->on_sandbox_bytes(ec, n);
                          });
  }

  void on_sandbox_bytes(beast::error_code ec, std::size_t n) {
    if (ec == asio::error::eof) return half_close(up_, "sandbox");
    if (ec) return end_after(ec, "reading from the sandbox");
    asio::async_write(up_, asio::buffer(pumps_->up.data(), n),
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        self->on_upstream_wrote(ec);
                      });
  }

  void on_upstream_wrote(beast::error_code ec) {
    if (ec) return end_after(ec, "writing upstream");
    read_sandbox();
  }

  void read_upstream() {
    up_.async_read_some(asio::buffer(pumps_->down),
                        [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                          self->on_upstream_bytes(ec, n);
                        });
  }

  void on_upstream_bytes(beast::error_code ec, std::size_t n) {
    if (ec == asio::error::eof) return half_close(down_.socket(), "upstream");
    if (ec) return end_after(ec, "reading upstream");
    asio::async_write(down_, asio::buffer(pumps_->down.data(), n),
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        self->on_sandbox_wrote(ec);
                      });
  }

  void on_sandbox_wrote(beast::error_code ec) {
    if (ec) return end_after(ec, "writing to the sandbox");
    read_upstream();
  }

  // One side finished sending: pass the FIN on, and end once both have.
  template <class Socket>
  void half_close(Socket& other, const char*) {
    beast::error_code ignored;
    other.shutdown(asio::socket_base::shutdown_send, ignored);
    if (++half_closed_ == 2) end("closed");
  }

  // -- a terminated tunnel (the host has a credential) ------------------------------------

  void terminate_tls() {
    try {
      leaf_ = svc_->leaf_context(host_);
    } catch (const std::exception& e) {
      return end(std::string("no leaf certificate: ") + e.what());
    }
    down_.replay(std::move(hello_));
    hello_.clear();
    down_tls_.emplace(down_, *leaf_);
    down_tls_->async_handshake(
        ssl::stream_base::server,
        [self = shared_from_this()](beast::error_code ec) { self->on_sandbox_handshake(ec); });
  }

  void on_sandbox_handshake(beast::error_code ec) {
    if (ec) return end("TLS handshake with the sandbox: " + ec.message());
    up_tls_.emplace(up_, svc_->upstream_tls);
    SSL* ssl = up_tls_->native_handle();
    boost::system::error_code literal_error;
    asio::ip::make_address(host_, literal_error);
    if (literal_error) {
      SSL_set_tlsext_host_name(ssl, host_.c_str());
      SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      SSL_set1_host(ssl, host_.c_str());
    } else {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host_.c_str());
    }
    up_tls_->async_handshake(
        ssl::stream_base::client,
        [self = shared_from_this()](beast::error_code ec) { self->on_upstream_handshake(ec); });
  }

  void on_upstream_handshake(beast::error_code ec) {
    if (ec) {
      // The sandbox's TLS is up: it can be told why in HTTP.
      why_ = "TLS to the upstream failed: " + ec.message();
      reply_ = reply_text(http::status::bad_gateway, why_);
      return asio::async_write(
          *down_tls_, asio::buffer(reply_),
          [self = shared_from_this()](beast::error_code, std::size_t) { self->end(""); });
    }
    request_.reset();
    run_exchange(*down_tls_, *up_tls_, true);
  }

  template <class Down, class Up>
  void run_exchange(Down& down, Up& up, bool keep_alive);

  // -- refusals, limits -----------------------------------------------------------------

  // Answers with `status` and `why`, then ends. A refusal before any connection is "denied".
  void refuse(http::status status, const std::string& why) {
    if (decision_ != "allowed") {
      decision_ = "denied";
      box_->denied.fetch_add(1);
    }
    why_ = why;
    reply_ = reply_text(status, why);
    asio::async_write(
        down_, asio::buffer(reply_),
        [self = shared_from_this()](beast::error_code, std::size_t) { self->end(""); });
  }

  void arm_watchdog() {
    const auto life = started_ + box_->rules.max_connection_time;
    watchdog_.expires_at(std::min({life, down_.usage().last + idle_timeout, head_deadline_}));
    watchdog_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (!ec) self->on_watchdog();
    });
  }

  void on_watchdog() {
    if (ended_) return;
    const auto now = clock_type::now();
    if (now >= started_ + box_->rules.max_connection_time)
      return end("connection time limit (" +
                 std::to_string(box_->rules.max_connection_time.count()) + " s)");
    if (now >= head_deadline_) return end("no request head within 30 s");
    if (now >= down_.usage().last + idle_timeout) return end("idle for 60 s");
    arm_watchdog();
  }

  struct pump_buffers {
    std::array<char, chunk_size> up{}, down{};
  };

  std::shared_ptr<sandbox> box_;
  std::shared_ptr<services> svc_;
  asio::any_io_executor executor_;  // this session's strand
  metered_stream down_;
  beast::flat_buffer down_buffer_;
  std::optional<request_parser> request_;
  tcp::resolver resolver_;
  tcp::socket up_;
  asio::steady_timer watchdog_;
  std::vector<tcp::endpoint> endpoints_;
  std::vector<unsigned char> hello_;
  std::unique_ptr<pump_buffers> pumps_;
  std::shared_ptr<ssl::context> leaf_;
  std::optional<sandbox_tls> down_tls_;
  std::optional<upstream_tls> up_tls_;
  std::string reply_;

  clock_type::time_point started_, head_deadline_;
  kind kind_ = kind::tunnel;
  std::string host_, method_, plain_path_, decision_ = "denied", why_;
  uint16_t port_ = 0;
  std::optional<egress_credential> credential_;
  int half_closed_ = 0;
  uint64_t requests_ = 0;
  bool holds_slot_ = false;
  bool ended_ = false;
};

// HTTP/1.1 between the sandbox and the upstream, one request at a time: request head
// (rewritten), request body, response head, response body; again while both keep alive.
template <class Down, class Up>
class exchange : public std::enable_shared_from_this<exchange<Down, Up>> {
 public:
  exchange(std::shared_ptr<session> owner, Down& down, Up& up, bool keep_alive)
      : owner_(std::move(owner)),
        down_(down),
        up_(up),
        up_buffer_(upstream_head_limit + 4096),
        keep_alive_(keep_alive) {}

  // The first request's head is read already (plain HTTP) or not yet (inside TLS).
  void run() {
    if (owner_->request()) return on_request_head({});
    read_request();
  }

 private:
  void read_request() {
    auto& req = owner_->request();
    req.emplace();
    req->header_limit(static_cast<std::uint32_t>(head_limit));
    req->body_limit(std::numeric_limits<std::uint64_t>::max());
    http::async_read_header(down_, owner_->down_buffer(), *req,
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                              self->on_request_head(ec);
                            });
  }

  void on_request_head(beast::error_code ec) {
    if (ec) return owner_->end_after(ec, "reading a request");
    auto& req = owner_->request()->get();
    if (auto bad = owner_->rewrite(req)) return owner_->end(*bad);
    owner_->count_request();
    head_request_ = req.method() == http::verb::head;
    request_keeps_alive_ = req.keep_alive();
    std::make_shared<message_relay<true, Down, Up>>(
        down_, owner_->down_buffer(), *owner_->request(), up_,
        [self = this->shared_from_this()](beast::error_code ec) { self->on_request_sent(ec); })
        ->run();
  }

  void on_request_sent(beast::error_code ec) {
    if (ec) return owner_->end_after(ec, "relaying a request");
    read_response();
  }

  void read_response() {
    response_.emplace();
    response_->header_limit(static_cast<std::uint32_t>(upstream_head_limit));
    response_->body_limit(std::numeric_limits<std::uint64_t>::max());
    if (head_request_) response_->skip(true);
    http::async_read_header(up_, up_buffer_, *response_,
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                              self->on_response_head(ec);
                            });
  }

  void on_response_head(beast::error_code ec) {
    if (ec) return owner_->end_after(ec, "reading the upstream's response");
    auto& res = response_->get();
    status_ = res.result_int();
    if (!keep_alive_) res.keep_alive(false);
    std::make_shared<message_relay<false, Up, Down>>(
        up_, up_buffer_, *response_, down_,
        [self = this->shared_from_this()](beast::error_code ec) { self->on_response_sent(ec); })
        ->run();
  }

  void on_response_sent(beast::error_code ec) {
    if (ec) return owner_->end_after(ec, "relaying a response");
    // An interim answer (103 Early Hints) precedes the real one. 101 (an upgrade) is not
    // relayed further: the next bytes are no HTTP and end the connection.
    if (status_ >= 100 && status_ < 200 && status_ != 101) return read_response();
    if (keep_alive_ && request_keeps_alive_ && response_->get().keep_alive() && status_ != 101)
      return read_request();
    owner_->end("closed");
  }

  std::shared_ptr<session> owner_;
  Down& down_;
  Up& up_;
  beast::flat_buffer up_buffer_;
  std::optional<response_parser> response_;
  bool keep_alive_;
  bool head_request_ = false;
  bool request_keeps_alive_ = false;
  unsigned status_ = 0;
};

template <class Down, class Up>
void session::run_exchange(Down& down, Up& up, bool keep_alive) {
  std::make_shared<exchange<Down, Up>>(shared_from_this(), down, up, keep_alive)->run();
}

// -- listening -----------------------------------------------------------------------------

class listener : public std::enable_shared_from_this<listener> {
 public:
  listener(asio::io_context& io, std::shared_ptr<sandbox> box, std::shared_ptr<services> svc)
      : io_(io),
        acceptor_(asio::any_io_executor(asio::make_strand(io))),
        retry_(acceptor_.get_executor()),
        box_(std::move(box)),
        svc_(std::move(svc)) {}

  asio::local::stream_protocol::acceptor& acceptor() { return acceptor_; }
  const std::shared_ptr<sandbox>& box() const { return box_; }

  void accept() {
    acceptor_.async_accept(asio::any_io_executor(asio::make_strand(io_)),
                           [self = shared_from_this()](beast::error_code ec, unix_socket socket) {
                             self->on_accept(ec, std::move(socket));
                           });
  }

  void close() {
    beast::error_code ignored;
    acceptor_.close(ignored);
    retry_.cancel();
  }

 private:
  void on_accept(beast::error_code ec, unix_socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec) {
      // Out of descriptors, most likely: try again shortly rather than spin.
      retry_.expires_after(std::chrono::milliseconds(100));
      retry_.async_wait([self = shared_from_this()](beast::error_code ec) {
        if (!ec) self->accept();
      });
      return;
    }
    admit(std::move(socket));
    accept();
  }

  void admit(unix_socket socket) {
    auto s = std::make_shared<session>(std::move(socket), box_, svc_);
    {
      std::lock_guard lock(box_->mutex);
      if (box_->closed) return;  // closing: the socket closes with `s`
      std::erase_if(box_->sessions, [](const auto& w) { return w.expired(); });
      box_->sessions.push_back(s);
    }
    const bool within = box_->active.fetch_add(1) < box_->rules.max_connections;
    if (!within) box_->active.fetch_sub(1);
    asio::post(s->executor(), [s, within] { within ? s->start() : s->start_refused(); });
  }

  asio::io_context& io_;
  asio::local::stream_protocol::acceptor acceptor_;
  asio::steady_timer retry_;
  std::shared_ptr<sandbox> box_;
  std::shared_ptr<services> svc_;
};

// Fulfils a promise when the last copy goes: the posted closings all ran (or were dropped).
struct completion_latch {
  std::promise<void> done;
  ~completion_latch() { done.set_value(); }
};

}  // namespace

// -- the proxy -----------------------------------------------------------------------------

class egress_proxy::impl {
 public:
  explicit impl(egress_proxy_options options)
      : svc(std::make_shared<services>(options)), work(asio::make_work_guard(io)) {
    const std::size_t n = std::max<std::size_t>(1, options.threads);
    for (std::size_t i = 0; i < n; ++i) threads.emplace_back([this] { io.run(); });
  }

  ~impl() {
    std::vector<std::string> ids;
    {
      std::lock_guard lock(mutex);
      for (const auto& [id, l] : listeners) ids.push_back(id);
    }
    for (const auto& id : ids) close(id, true);
    work.reset();
    io.stop();
    for (auto& t : threads) t.join();
  }

  std::string open(const std::string& id, const std::string& path, egress_rules rules, uint32_t uid,
                   uint32_t gid) {
    if (auto why = validate(rules)) return "egress rules: " + *why;
    std::map<std::string, std::string> resolve;
    for (auto& [host, address] : rules.resolve) resolve[normalize_host(host)] = address;
    rules.resolve = std::move(resolve);

    std::lock_guard lock(mutex);
    if (listeners.contains(id)) return "sandbox " + id + " already has an egress socket";
    for (const auto& [other, l] : listeners)
      if (l->box()->socket_path == path) return path + " is the egress socket of sandbox " + other;
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) return path + " exists and is not a socket";
      ::unlink(path.c_str());  // left by an earlier run
    }

    auto box = std::make_shared<sandbox>();
    box->id = id;
    box->socket_path = path;
    box->rules = std::move(rules);
    auto l = std::make_shared<listener>(io, box, svc);
    auto& acceptor = l->acceptor();
    beast::error_code ec;
    auto fail = [&](const std::string& what) {
      beast::error_code ignored;
      acceptor.close(ignored);
      ::unlink(path.c_str());
      return what;
    };
    asio::local::stream_protocol::endpoint endpoint;
    try {
      endpoint = asio::local::stream_protocol::endpoint(path);
    } catch (const boost::system::system_error& e) {
      return "cannot use " + path + " as a socket path: " + e.code().message();
    }
    acceptor.open(endpoint.protocol(), ec);
    if (!ec) acceptor.bind(endpoint, ec);
    if (ec) return fail("cannot bind " + path + ": " + ec.message());
    // Mode and owner are set between bind and listen: until listen, no connect succeeds, so
    // no other user can get in through a moment of looser permissions.
    if (::chmod(path.c_str(), 0600) != 0)
      return fail("cannot chmod " + path + ": " + std::strerror(errno));
    if (::chown(path.c_str(), uid, gid) != 0)
      return fail("cannot chown " + path + " to " + std::to_string(uid) + ":" +
                  std::to_string(gid) + ": " + std::strerror(errno));
    acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return fail("cannot listen on " + path + ": " + ec.message());
    listeners.emplace(id, l);
    asio::post(acceptor.get_executor(), [l] { l->accept(); });
    return {};
  }

  void close(const std::string& id, bool wait) {
    std::shared_ptr<listener> l;
    {
      std::lock_guard lock(mutex);
      auto it = listeners.find(id);
      if (it == listeners.end()) return;
      l = std::move(it->second);
      listeners.erase(it);
    }
    const auto& box = l->box();
    ::unlink(box->socket_path.c_str());
    std::vector<std::weak_ptr<session>> sessions;
    {
      std::lock_guard lock(box->mutex);
      box->closed = true;
      sessions.swap(box->sessions);
    }
    auto latch = std::make_shared<completion_latch>();
    auto done = latch->done.get_future();
    asio::post(l->acceptor().get_executor(), [l, latch] { l->close(); });
    for (auto& weak : sessions) {
      if (auto s = weak.lock()) asio::post(s->executor(), [s, latch] { s->end("sandbox closed"); });
    }
    latch.reset();
    // From a proxy thread, waiting could deadlock on our own strand: the posts suffice.
    if (wait && !io.get_executor().running_in_this_thread()) done.wait_for(std::chrono::seconds(5));
  }

  counters counters_of(const std::string& id) const {
    std::lock_guard lock(mutex);
    auto it = listeners.find(id);
    if (it == listeners.end()) return {};
    const auto& box = *it->second->box();
    return {box.connections.load(), box.denied.load(), box.bytes.load()};
  }

  asio::io_context io;  // first: destroyed last, after everything that holds its handlers
  std::shared_ptr<services> svc;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  mutable std::mutex mutex;  // guards listeners
  std::map<std::string, std::shared_ptr<listener>> listeners;
  std::vector<std::thread> threads;
};

egress_proxy::egress_proxy(egress_proxy_options options)
    : impl_(std::make_unique<impl>(std::move(options))) {}

egress_proxy::~egress_proxy() = default;

std::string egress_proxy::open(const std::string& sandbox_id, const std::string& socket_path,
                               egress_rules rules, uint32_t uid, uint32_t gid) {
  return impl_->open(sandbox_id, socket_path, std::move(rules), uid, gid);
}

void egress_proxy::close(const std::string& sandbox_id, bool wait) {
  impl_->close(sandbox_id, wait);
}

std::string egress_proxy::ca_cert_path() const {
  return impl_->svc->ca.cert_path();
}

std::string egress_proxy::trust_bundle() const {
  std::string bundle = read_file("/etc/ssl/certs/ca-certificates.crt").value_or("");
  if (!bundle.empty() && bundle.back() != '\n') bundle += '\n';
  return bundle + impl_->svc->ca.cert_pem();
}

egress_proxy::counters egress_proxy::counters_of(const std::string& sandbox_id) const {
  return impl_->counters_of(sandbox_id);
}

}  // namespace corral
