// The egress proxy against upstreams on 127.0.0.1 (plain HTTP and HTTPS with a test CA made
// here), reached as "up.test" through the rules' resolve map. Clients speak to the proxy's
// unix socket with blocking Asio calls, each bounded by a deadline that shuts the socket.
#include <catch2/catch.hpp>

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <sys/socket.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <simdjson.h>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "actors/egress_proxy.hpp"
#include "actors/egress_session.hpp"
#include "tests/test_kit.hpp"

namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using unix_socket = asio::local::stream_protocol::socket;
using corral::test::eventually;

constexpr const char* secret = "Bearer s3cret-token";

// -- a test CA and a leaf for up.test ---------------------------------------------------

struct pem_pair {
  std::string cert, key;
};

std::string to_pem(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, cert);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<std::size_t>(n));
  BIO_free(bio);
  return out;
}

std::string to_pem(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<std::size_t>(n));
  BIO_free(bio);
  return out;
}

void extend(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value);
  REQUIRE(ext);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

X509* sign(EVP_PKEY* key, const char* cn, X509* issuer, EVP_PKEY* issuer_key, long serial) {
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), serial);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
  X509_set_pubkey(cert, key);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn), -1, -1, 0);
  X509_set_issuer_name(cert, X509_get_subject_name(issuer ? issuer : cert));
  if (issuer) {
    extend(cert, issuer, NID_basic_constraints, "critical,CA:FALSE");
    extend(cert, issuer, NID_subject_alt_name, "DNS:up.test");
  } else {
    extend(cert, cert, NID_basic_constraints, "critical,CA:TRUE");
    extend(cert, cert, NID_key_usage, "critical,keyCertSign");
  }
  X509_sign(cert, issuer ? issuer_key : key, EVP_sha256());
  return cert;
}

struct test_pki {
  std::string ca_pem;
  pem_pair leaf;
};

const test_pki& upstream_pki() {
  static const test_pki pki = [] {
    EVP_PKEY* ca_key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
    EVP_PKEY* leaf_key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
    X509* ca = sign(ca_key, "test upstream CA", nullptr, nullptr, 1);
    X509* leaf = sign(leaf_key, "up.test", ca, ca_key, 2);
    test_pki out{to_pem(ca), {to_pem(leaf), to_pem(leaf_key)}};
    X509_free(leaf);
    X509_free(ca);
    EVP_PKEY_free(leaf_key);
    EVP_PKEY_free(ca_key);
    return out;
  }();
  return pki;
}

// -- a temporary directory ------------------------------------------------------------------

struct temp_dir {
  temp_dir() {
    std::string pattern = "/tmp/egress-test-XXXXXX";
    REQUIRE(::mkdtemp(pattern.data()));
    path = pattern;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return path + "/" + name; }
  std::string path;
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// -- upstreams: HTTP or HTTPS on 127.0.0.1, recording what they were sent ---------------------

struct seen_request {
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;
  std::vector<std::string> all(const std::string& name) const {
    std::vector<std::string> out;
    for (const auto& [n, v] : headers)
      if (beast::iequals(n, name)) out.push_back(v);
    return out;
  }
};

class upstream {
 public:
  explicit upstream(bool tls) : tls_(ssl::context::tls_server) {
    if (tls) {
      tls_.use_certificate_chain(asio::buffer(upstream_pki().leaf.cert));
      tls_.use_private_key(asio::buffer(upstream_pki().leaf.key), ssl::context::pem);
    }
    asio::co_spawn(io_, accept_loop(tls), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~upstream() {
    io_.stop();
    thread_.join();
  }

  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  int accepted() const { return accepted_.load(); }
  std::vector<seen_request> requests() const {
    std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  asio::awaitable<void> accept_loop(bool tls) {
    for (;;) {
      tcp::socket socket = co_await acceptor_.async_accept(asio::use_awaitable);
      ++accepted_;
      asio::co_spawn(io_, serve_connection(std::move(socket), tls), asio::detached);
    }
  }

  asio::awaitable<void> serve_connection(tcp::socket socket, bool tls) {
    try {
      if (!tls) {
        co_await serve(socket);
        co_return;
      }
      ssl::stream<tcp::socket> stream(std::move(socket), tls_);
      co_await stream.async_handshake(ssl::stream_base::server, asio::use_awaitable);
      co_await serve(stream);
    } catch (const std::exception&) {
      // The peer went away: the end of this connection.
    }
  }

  // Answers "/big/N" with N bytes, anything else with "hello <target>"; keeps alive.
  template <class Stream>
  asio::awaitable<void> serve(Stream& stream) {
    beast::flat_buffer buffer;
    for (;;) {
      http::request<http::string_body> req;
      co_await http::async_read(stream, buffer, req, asio::use_awaitable);
      seen_request seen{std::string(req.target()), {}};
      for (const auto& f : req)
        seen.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
      {
        std::lock_guard lock(mutex_);
        requests_.push_back(seen);
      }
      http::response<http::string_body> res{http::status::ok, 11};
      const std::string target(req.target());
      if (target.starts_with("/big/"))
        res.body() = std::string(std::stoul(target.substr(5)), 'x');
      else
        res.body() = "hello " + target;
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      co_await http::async_write(stream, res, asio::use_awaitable);
      if (!req.keep_alive()) co_return;
    }
  }

  asio::io_context io_;
  tcp::acceptor acceptor_{io_, {asio::ip::make_address("127.0.0.1"), 0}};
  ssl::context tls_;
  std::thread thread_;
  std::atomic<int> accepted_{0};
  mutable std::mutex mutex_;
  std::vector<seen_request> requests_;
};

// -- clients --------------------------------------------------------------------------------

// Shuts `fd` down after `limit` unless released first: any blocking call on it then returns.
class deadline {
 public:
  deadline(int fd, std::chrono::milliseconds limit = std::chrono::seconds(3))
      : thread_([this, fd, limit] {
          std::unique_lock lock(mutex_);
          if (!cv_.wait_for(lock, limit, [this] { return released_; })) ::shutdown(fd, SHUT_RDWR);
        }) {}
  ~deadline() {
    {
      std::lock_guard lock(mutex_);
      released_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool released_ = false;
  std::thread thread_;
};

struct client {
  explicit client(const std::string& path) : socket(io) {
    socket.connect(asio::local::stream_protocol::endpoint(path));
    guard = std::make_unique<deadline>(socket.native_handle());
  }
  void send(const std::string& text) { asio::write(socket, asio::buffer(text)); }
  // For a proxy that may answer and close before reading (429): the answer is still read.
  void send_unread(const std::string& text) {
    beast::error_code ignored;
    asio::write(socket, asio::buffer(text), ignored);
  }
  // Ends the connection as a sandbox would, keeping the descriptor (and so its number, which
  // the deadline holds) until the client goes.
  void hang_up() {
    beast::error_code ignored;
    socket.shutdown(unix_socket::shutdown_both, ignored);
  }

  // The proxy's answer to CONNECT: its status line and headers, nothing more.
  std::string connect(const std::string& authority) {
    send_unread("CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority + "\r\n\r\n");
    std::string head;
    beast::error_code ec;
    asio::read_until(socket, asio::dynamic_buffer(head), "\r\n\r\n", ec);
    if (ec) return "error: " + ec.message();
    auto status = head.substr(0, head.find("\r\n"));
    if (status.starts_with("HTTP/1.1 200"))
      REQUIRE(head.size() == head.find("\r\n\r\n") + 4);  // no byte of the tunnel yet
    return status;
  }

  http::response<http::string_body> read_response() {
    http::response<http::string_body> res;
    http::read(socket, buffer, res);
    return res;
  }

  asio::io_context io;
  unix_socket socket;
  beast::flat_buffer buffer;
  std::unique_ptr<deadline> guard;
};

// TLS over a client's tunnel, trusting only `ca_file`, with `sni` and hostname check up.test.
struct tls_client {
  tls_client(client& c, const std::string& ca_file, const std::string& sni = "up.test")
      : ctx(ssl::context::tls_client), stream(c.socket, ctx) {
    ctx.load_verify_file(ca_file);
    stream.set_verify_mode(ssl::verify_peer);
    stream.set_verify_callback(ssl::host_name_verification("up.test"));
    SSL_set_tlsext_host_name(stream.native_handle(), sni.c_str());
  }
  beast::error_code handshake() {
    beast::error_code ec;
    stream.handshake(ssl::stream_base::client, ec);
    return ec;
  }
  http::response<http::string_body> get(
      const std::string& target, std::vector<std::pair<std::string, std::string>> extra = {}) {
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, "up.test");
    for (const auto& [name, value] : extra) req.insert(name, value);
    http::write(stream, req);
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    return res;
  }
  ssl::context ctx;
  ssl::stream<unix_socket&> stream;
  beast::flat_buffer buffer;
};

// -- the fixture ----------------------------------------------------------------------------

struct fixture {
  fixture() {
    write_text(dir.file("upstream-ca.pem"), upstream_pki().ca_pem);
    proxy = std::make_unique<corral::egress_proxy>(corral::egress_proxy_options{
        dir.file("ca"), dir.file("upstream-ca.pem"), dir.file("egress.log"), 2});
  }

  // Rules letting "up.test" (and `extra` patterns) reach `port` on 127.0.0.1.
  corral::egress_rules rules_for(uint16_t port, std::vector<std::string> extra = {}) const {
    corral::egress_rules r;
    r.allow = {"up.test"};
    r.allow.insert(r.allow.end(), extra.begin(), extra.end());
    r.ports = {port};
    r.resolve = {{"up.test", "127.0.0.1"}};
    r.allow_private_cidrs = {"127.0.0.0/8"};
    return r;
  }

  std::string open(corral::egress_rules r, const std::string& id = "sb1") {
    socket_path = dir.file(id + ".sock");
    return proxy->open(id, socket_path, std::move(r), ::getuid(), ::getgid());
  }

  std::vector<std::string> log_lines() const {
    std::vector<std::string> lines;
    std::istringstream in(read_text(dir.file("egress.log")));
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

  bool logged(const std::string& fragment) const {
    for (const auto& line : log_lines())
      if (line.find(fragment) != std::string::npos) return true;
    return false;
  }

  temp_dir dir;
  std::unique_ptr<corral::egress_proxy> proxy;
  std::string socket_path;
};

std::string authority(uint16_t port, const std::string& host = "up.test") {
  return host + ":" + std::to_string(port);
}

}  // namespace

TEST_CASE("egress proxy: the CA is made once, private, and is in the trust bundle",
          "[unit][egress]") {
  fixture f;
  struct stat st {};
  REQUIRE(::stat(f.dir.file("ca").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  REQUIRE(::stat(f.dir.file("ca/ca.key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(f.proxy->ca_cert_path() == f.dir.file("ca/ca.pem"));
  const std::string pem = read_text(f.proxy->ca_cert_path());
  CHECK(f.proxy->trust_bundle().ends_with(pem));
  // A second proxy on the same directory uses the same CA.
  corral::egress_proxy again({f.dir.file("ca"), "", "", 1});
  CHECK(read_text(again.ca_cert_path()) == pem);
}

TEST_CASE("egress proxy: an allowed CONNECT tunnel carries TLS end to end", "[unit][egress]") {
  fixture f;
  upstream up(true);
  REQUIRE(f.open(f.rules_for(up.port())).empty());
  struct stat st {};
  REQUIRE(::stat(f.socket_path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  client c(f.socket_path);
  CHECK(c.connect(authority(up.port())) == "HTTP/1.1 200 Connection established");
  // Trusting only the upstream's own CA: the tunnel is not terminated.
  tls_client t(c, f.dir.file("upstream-ca.pem"));
  REQUIRE_FALSE(t.handshake());
  auto res = t.get("/hello");
  CHECK(res.result() == http::status::ok);
  CHECK(res.body() == "hello /hello");
  res = t.get("/again");  // the tunnel stays up
  CHECK(res.body() == "hello /again");
  const auto counts = f.proxy->counters_of("sb1");
  CHECK(counts.connections == 1);
  CHECK(counts.denied == 0);
  CHECK(counts.bytes > 0);
  c.hang_up();
  CHECK(eventually([&] { return f.logged("\"decision\":\"allowed\""); }));
}

TEST_CASE("egress proxy: a denied name gets 403 before any DNS", "[unit][egress]") {
  fixture f;
  upstream up(true);
  auto rules = f.rules_for(up.port());
  rules.resolve["other.test"] = "127.0.0.1";  // would connect if it got past the name check
  REQUIRE(f.open(rules).empty());

  client c(f.socket_path);
  CHECK(c.connect(authority(up.port(), "other.test")).starts_with("HTTP/1.1 403"));
  // A name DNS cannot answer: 403 (decided on the name), not 502 (failed to resolve).
  client d(f.socket_path);
  CHECK(d.connect(authority(up.port(), "nowhere.invalid")).starts_with("HTTP/1.1 403"));
  CHECK(up.accepted() == 0);
  CHECK(f.proxy->counters_of("sb1").denied == 2);
  CHECK(eventually([&] { return f.logged("\"host\":\"nowhere.invalid\""); }));
  CHECK(f.logged("\"why\":\"not in the allow list\""));
}

TEST_CASE("egress proxy: deny wins over allow; wildcards take whole labels", "[unit][egress]") {
  fixture f;
  upstream up(true);
  auto rules = f.rules_for(up.port(), {"*.example.test"});
  rules.deny = {"up.test", "secret.example.test"};
  for (const char* h : {"a.example.test", "a.b.example.test", "secret.example.test"})
    rules.resolve[h] = "127.0.0.1";
  REQUIRE(f.open(rules).empty());

  auto status_of = [&](const std::string& host, uint16_t port = 0) {
    client c(f.socket_path);
    return c.connect(authority(port ? port : up.port(), host));
  };
  CHECK(status_of("up.test").starts_with("HTTP/1.1 403"));
  CHECK(status_of("secret.example.test").starts_with("HTTP/1.1 403"));
  CHECK(status_of("example.test").starts_with("HTTP/1.1 403"));
  CHECK(status_of("badexample.test").starts_with("HTTP/1.1 403"));
  CHECK(status_of("a.example.test") == "HTTP/1.1 200 Connection established");
  CHECK(status_of("a.b.example.test") == "HTTP/1.1 200 Connection established");
  CHECK(status_of("a.example.test", 8) == "HTTP/1.1 403 Forbidden");  // not an allowed port
  CHECK(status_of("a.example.test:1").starts_with("HTTP/1.1 400"));   // host:port:port
  CHECK(eventually([&] { return f.logged("denied by the deny list"); }));
}

TEST_CASE("egress proxy: IP literals need an exact allow entry; private addresses need a range",
          "[unit][egress]") {
  fixture f;
  upstream up(true);
  auto rules = f.rules_for(up.port());
  rules.allow_private_cidrs.clear();  // up.test -> 127.0.0.1 is now refused after resolution
  REQUIRE(f.open(rules).empty());

  {
    client c(f.socket_path);
    c.send("CONNECT 127.0.0.1:" + std::to_string(up.port()) + " HTTP/1.1\r\n\r\n");
    auto res = c.read_response();
    CHECK(res.result() == http::status::forbidden);
    CHECK(res.body() == "an IP address not named in the allow list\n");
  }
  {
    client c(f.socket_path);
    c.send("CONNECT up.test:" + std::to_string(up.port()) + " HTTP/1.1\r\n\r\n");
    auto res = c.read_response();
    CHECK(res.result() == http::status::forbidden);
    CHECK(res.body() == "resolves to no address it may reach: 127.0.0.1 is a loopback address\n");
  }
  CHECK(up.accepted() == 0);

  // Named exactly and inside allow_private_cidrs: let through.
  rules.allow.push_back("127.0.0.1");
  rules.allow_private_cidrs = {"127.0.0.1/32"};
  REQUIRE(f.open(rules, "sb2").empty());
  client c(f.socket_path);
  CHECK(c.connect("127.0.0.1:" + std::to_string(up.port())) ==
        "HTTP/1.1 200 Connection established");
  CHECK(eventually([&] { return up.accepted() == 1; }));
}

TEST_CASE("egress proxy: a tunnel whose SNI is not the CONNECT host is closed", "[unit][egress]") {
  fixture f;
  upstream up(true);
  REQUIRE(f.open(f.rules_for(up.port())).empty());

  {
    client c(f.socket_path);
    REQUIRE(c.connect(authority(up.port())) == "HTTP/1.1 200 Connection established");
    tls_client t(c, f.dir.file("upstream-ca.pem"), "elsewhere.test");
    CHECK(t.handshake());
  }
  {
    client c(f.socket_path);
    REQUIRE(c.connect(authority(up.port())) == "HTTP/1.1 200 Connection established");
    c.send("GET / HTTP/1.1\r\nHost: up.test\r\n\r\n");  // not TLS at all
    char byte = 0;
    beast::error_code ec;
    asio::read(c.socket, asio::buffer(&byte, 1), ec);
    CHECK(ec == asio::error::eof);
  }
  CHECK(up.requests().empty());
  CHECK(eventually([&] { return f.logged("is not the CONNECT host"); }));
  CHECK(eventually([&] { return f.logged("does not start with TLS"); }));
}

TEST_CASE("egress proxy: a credential reaches the HTTPS upstream, the sandbox's copy does not",
          "[unit][egress]") {
  fixture f;
  upstream up(true);
  auto rules = f.rules_for(up.port());
  rules.credentials = {{"up.test", "Authorization", secret}};
  REQUIRE(f.open(rules).empty());

  client c(f.socket_path);
  REQUIRE(c.connect(authority(up.port())) == "HTTP/1.1 200 Connection established");
  // Terminated: the sandbox sees a leaf of corral's CA, not the upstream's certificate.
  tls_client t(c, f.proxy->ca_cert_path());
  REQUIRE_FALSE(t.handshake());
  auto res = t.get("/first", {{"Authorization", "Bearer sandbox-guess"},
                              {"authorization", "Basic also-mine"},
                              {"Host", "evil.test"}});
  CHECK(res.result() == http::status::ok);
  CHECK(res.body() == "hello /first");
  res = t.get("/second");  // keep-alive: the next request is relayed too
  CHECK(res.body() == "hello /second");

  const auto seen = up.requests();
  REQUIRE(seen.size() == 2);
  for (const auto& r : seen) {
    CHECK(r.all("Authorization") == std::vector<std::string>{secret});
    CHECK(r.all("Host") == std::vector<std::string>{authority(up.port())});
  }
  c.hang_up();
  CHECK(eventually([&] { return f.log_lines().size() == 1; }));
  for (const auto& line : f.log_lines()) CHECK(line.find("s3cret") == std::string::npos);
}

TEST_CASE("egress proxy: plain HTTP is rewritten to origin-form with the credential",
          "[unit][egress]") {
  fixture f;
  upstream up(false);
  auto rules = f.rules_for(up.port());
  rules.credentials = {{"up.test", "X-Api-Key", "s3cret-key"}};
  REQUIRE(f.open(rules).empty());

  client c(f.socket_path);
  c.send("POST http://UP.test:" + std::to_string(up.port()) +
         "/p?q=1 HTTP/1.1\r\nHost: wrong.test\r\nX-Api-Key: mine\r\n"
         "Proxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\n"
         "Content-Length: 5\r\n\r\nhello");
  auto res = c.read_response();
  CHECK(res.result() == http::status::ok);
  CHECK(res.body() == "hello /p?q=1");
  CHECK_FALSE(res.keep_alive());

  const auto seen = up.requests();
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].target == "/p?q=1");
  CHECK(seen[0].all("X-Api-Key") == std::vector<std::string>{"s3cret-key"});
  CHECK(seen[0].all("Host") == std::vector<std::string>{authority(up.port())});
  CHECK(seen[0].all("Proxy-Authorization").empty());
  CHECK(seen[0].all("Proxy-Connection").empty());

  // Anything else than CONNECT or an absolute http:// target: 400.
  client d(f.socket_path);
  d.send("GET /relative HTTP/1.1\r\nHost: up.test\r\n\r\n");
  CHECK(d.read_response().result() == http::status::bad_request);
  CHECK(eventually([&] { return f.log_lines().size() == 2; }));
  for (const auto& line : f.log_lines()) CHECK(line.find("s3cret") == std::string::npos);
}

TEST_CASE("egress proxy: the byte limit cuts a transfer", "[unit][egress]") {
  fixture f;
  upstream up(true);
  auto rules = f.rules_for(up.port());
  rules.max_bytes = 40000;
  REQUIRE(f.open(rules).empty());

  client c(f.socket_path);
  REQUIRE(c.connect(authority(up.port())) == "HTTP/1.1 200 Connection established");
  tls_client t(c, f.dir.file("upstream-ca.pem"));
  REQUIRE_FALSE(t.handshake());
  CHECK(t.get("/big/1000").body().size() == 1000);  // well within the budget
  CHECK_THROWS(t.get("/big/200000"));
  CHECK(f.proxy->counters_of("sb1").bytes <= 40000);
  CHECK(eventually([&] { return f.logged("\"why\":\"byte limit\""); }));
}

TEST_CASE("egress proxy: max_connections refuses the one too many with 429", "[unit][egress]") {
  fixture f;
  upstream up(true);
  auto rules = f.rules_for(up.port());
  rules.max_connections = 2;
  REQUIRE(f.open(rules).empty());

  auto first = std::make_unique<client>(f.socket_path);
  client second(f.socket_path);
  CHECK(second.connect(authority(up.port())) == "HTTP/1.1 200 Connection established");
  {
    client third(f.socket_path);
    third.send_unread("CONNECT " + authority(up.port()) + " HTTP/1.1\r\n\r\n");
    CHECK(third.read_response().result() == http::status::too_many_requests);
  }
  first.reset();  // a slot comes free
  CHECK(eventually([&] {
    client next(f.socket_path);
    return next.connect(authority(up.port())) == "HTTP/1.1 200 Connection established";
  }));
  CHECK(eventually([&] { return f.logged("too many connections"); }));
}

TEST_CASE("egress proxy: close ends live connections and unlinks the socket", "[unit][egress]") {
  fixture f;
  upstream up(true);
  REQUIRE(f.open(f.rules_for(up.port())).empty());
  CHECK(f.open(f.rules_for(up.port())) == "sandbox sb1 already has an egress socket");

  client tunnel(f.socket_path);
  REQUIRE(tunnel.connect(authority(up.port())) == "HTTP/1.1 200 Connection established");
  tls_client t(tunnel, f.dir.file("upstream-ca.pem"));
  REQUIRE_FALSE(t.handshake());
  client idle(f.socket_path);  // connected, nothing sent
  // Accepted (not still in the listen backlog, which closing resets rather than ends).
  REQUIRE(eventually([&] { return f.proxy->counters_of("sb1").connections == 2; }));

  f.proxy->close("sb1");
  CHECK(::access(f.socket_path.c_str(), F_OK) != 0);
  char byte = 0;
  beast::error_code ec;
  asio::read(idle.socket, asio::buffer(&byte, 1), ec);
  CHECK(ec == asio::error::eof);
  CHECK_THROWS(t.get("/after-close"));
  unix_socket late(idle.io);
  late.connect(asio::local::stream_protocol::endpoint(f.socket_path), ec);
  CHECK(ec);
  f.proxy->close("sb1");  // idempotent
  CHECK(f.proxy->counters_of("sb1").connections == 0);
  // The id can be opened again once closed.
  CHECK(f.open(f.rules_for(up.port())).empty());
  CHECK(eventually([&] { return f.logged("sandbox closed"); }));
}

TEST_CASE("egress proxy: log lines are JSON with every field", "[unit][egress]") {
  fixture f;
  upstream up(true);
  REQUIRE(f.open(f.rules_for(up.port())).empty());
  {
    client c(f.socket_path);
    c.connect(authority(up.port(), "under_score.test"));
  }
  {
    client c(f.socket_path);
    c.connect(authority(up.port(), "other.test"));
  }
  REQUIRE(eventually([&] { return f.log_lines().size() == 2; }));
  simdjson::dom::parser parser;
  for (const auto& line : f.log_lines()) {
    INFO(line);
    simdjson::dom::element e;
    REQUIRE(parser.parse(line).get(e) == simdjson::SUCCESS);
    CHECK(e["ts"].get_uint64().value() > 0);
    CHECK(std::string_view(e["sandbox"].get_string().value()) == "sb1");
    CHECK(std::string_view(e["decision"].get_string().value()) == "denied");
    CHECK(std::string_view(e["method"].get_string().value()) == "CONNECT");
    CHECK(e["port"].get_uint64().value() == up.port());
    CHECK_FALSE(std::string_view(e["why"].get_string().value()).empty());
    CHECK(e["bytes_up"].get_uint64().value() > 0);
    CHECK(e["bytes_down"].get_uint64().value() > 0);
  }
}

TEST_CASE("egress: a charge refused near the byte limit never counts against another", "[egress]") {
  // Connections of one sandbox charge its budget from different threads. A big write that
  // does not fit is refused; while it is being refused, a one-byte read that fits must still
  // pass (it did not when the refused charge was added first and taken back after).
  corral::egress_detail::sandbox box;
  box.rules.max_bytes = 1000;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> big_refused{0};
  std::thread big([&] {
    corral::egress_detail::meter m;
    m.box = &box;
    while (!stop.load())
      if (!m.take(4000)) ++big_refused;
  });
  corral::egress_detail::meter small;
  small.box = &box;
  REQUIRE(small.take(999));                                   // one byte left
  while (big_refused.load() == 0) std::this_thread::yield();  // the big charges have begun
  int refused = 0;
  for (int i = 0; i < 300000; ++i) {
    if (small.take(1))
      small.give_back(1);
    else
      ++refused;
  }
  stop = true;
  big.join();
  INFO(big_refused.load() << " big charges refused meanwhile");
  CHECK(refused == 0);
  CHECK_FALSE(small.cut);
  CHECK(box.bytes.load() == 999);
  CHECK_FALSE(small.take(2));  // past the budget: refused, and marked
  CHECK(small.cut);
  CHECK(box.bytes.load() == 999);
}
