// A node with TLS (CAF's openssl module): clients need a certificate of the node's CA; a
// client without one, with another CA's, or without TLS at all is refused, and the node
// keeps serving good clients. Certificates are made here with the openssl CLI.
#include <stdlib.h>

#include <filesystem>

#include <catch2/catch.hpp>

#include "tests/node/node_process.hpp"

using namespace corral::node_tests;

namespace {

constexpr const char* make_certificates = R"(set -e
cd "$1"
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
ca() {  # ca NAME SUBJECT
  openssl req -x509 $ec -keyout "$1.key" -out "$1.pem" -days 2 -subj "$2" 2>/dev/null
}
cert() {  # cert NAME CA SUBJECT EXTENSIONS
  openssl req $ec -keyout "$1.key" -out "$1.csr" -subj "$3" 2>/dev/null
  printf '%s\n' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -out "$1.pem" \
    -days 2 -extfile "$1.ext" 2>/dev/null
}
ca ca "/CN=corral test CA"
cert node ca "/CN=127.0.0.1" "subjectAltName=IP:127.0.0.1,DNS:localhost"
cert client ca "/CN=corral test client" "extendedKeyUsage=clientAuth"
ca other "/CN=another CA"
cert stranger other "/CN=corral test client" "extendedKeyUsage=clientAuth"
)";

class temp_dir {
 public:
  temp_dir() {
    char path[] = "/tmp/corral-tls-XXXXXX";
    REQUIRE(::mkdtemp(path) != nullptr);
    path_ = path;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace

TEST_CASE("a TLS node serves clients with a certificate of its CA, and only them", "[node][tls]") {
  temp_dir certs;
  {
    child_process gen{{"/bin/sh", "-c", make_certificates, "make-certificates", certs.path()}};
    REQUIRE(gen.finish(60s) == 0);
  }
  node_fixture f;
  auto& node = f.start(f.name("n"), {"--tls-cert", certs.file("node.pem"), "--tls-key",
                                     certs.file("node.key"), "--tls-ca", certs.file("ca.pem")});
  CHECK(eventually(2s, [&] { return contains(node.log(), "with TLS"); }));  // stderr may lag stdout

  auto run = [&](std::vector<std::string> tls) {
    std::vector<std::string> args = {"--node", node.address()};
    args.insert(args.end(), tls.begin(), tls.end());
    args.insert(args.end(), {"run", "--", "echo", "tls"});
    return run_cli(args, {}, 30s);
  };
  const std::vector<std::string> good = {"--tls-cert", certs.file("client.pem"),
                                         "--tls-key",  certs.file("client.key"),
                                         "--tls-ca",   certs.file("ca.pem")};
  auto check_good = [&](const char* after) {
    INFO("a good client, after " << after);
    const auto r = run(good);
    INFO(r << "\nnode log:\n" << node.log());
    CHECK(r.code == 0);
    CHECK(r.out == "tls\n");
  };
  auto check_refused = [&](const cli_result& r) {
    INFO(r);
    CHECK(r.code == 125);
    CHECK(r.out.empty());
    CHECK(contains(r.err, node.address()));
    CHECK(r.wall < 10s);
  };

  check_good("start");
  {
    // The CLI refuses that itself (CAF's openssl module would abort on it)...
    INFO("no client certificate");
    const auto r = run({"--tls-ca", certs.file("ca.pem")});
    INFO(r);
    CHECK(r.code == 125);
    CHECK(contains(r.err, "TLS needs all three"));
  }
  {
    // ...so the node's side is checked with a TLS client that has none: the handshake
    // ends with the node's "certificate required" alert, before any BASP byte.
    child_process probe{{"/bin/sh", "-c",
                         "(sleep 1; printf hello) | openssl s_client -connect 127.0.0.1:" +
                             std::to_string(node.port()) + " -CAfile " + certs.file("ca.pem") +
                             " -quiet"}};
    const auto code = probe.finish(15s);
    INFO("s_client stdout: " << probe.out() << "\ns_client stderr: " << probe.err());
    CHECK(code == 1);
    CHECK((contains(probe.err(), "alert certificate required") ||
           contains(probe.err(), "alert handshake failure")));
    CHECK(probe.out().empty());
  }
  check_good("a client without a certificate");
  {
    INFO("an unreadable client certificate");
    const auto r = run({"--tls-cert", certs.path() + "/missing.pem", "--tls-key",
                        certs.file("client.key"), "--tls-ca", certs.file("ca.pem")});
    INFO(r);
    CHECK(r.code == 125);
    CHECK(contains(r.err, "cannot read"));
  }
  {
    INFO("a certificate of another CA");
    check_refused(run({"--tls-cert", certs.file("stranger.pem"), "--tls-key",
                       certs.file("stranger.key"), "--tls-ca", certs.file("ca.pem")}));
  }
  check_good("a client with another CA's certificate");
  {
    INFO("a client that does not trust the node's CA");
    check_refused(run({"--tls-cert", certs.file("client.pem"), "--tls-key",
                       certs.file("client.key"), "--tls-ca", certs.file("other.pem")}));
  }
  {
    INFO("no TLS at all");
    check_refused(run({}));
  }
  check_good("a plaintext client");
  CHECK(node.stop() == 0);
  CHECK(f.engine.containers(node.name()).empty());
}

TEST_CASE("a node refuses to listen beyond loopback without TLS", "[node][tls]") {
  node_fixture f;
  const auto r = run_cli({"node", "--listen", "0.0.0.0:0", "--name", f.name("n")}, {}, 10s);
  INFO(r);
  CHECK(r.code == 125);
  CHECK(r.out.empty());  // it never listened
  CHECK(contains(r.err, "needs TLS"));
  CHECK(contains(r.err, "0.0.0.0"));
}

TEST_CASE("a node checks its TLS files before it listens", "[node][tls]") {
  node_fixture f;
  auto node = [&](std::vector<std::string> tls) {
    std::vector<std::string> args = {"node", "--listen", "127.0.0.1:0", "--name", f.name("n")};
    args.insert(args.end(), tls.begin(), tls.end());
    return run_cli(args, {}, 10s);
  };
  const auto partial = node({"--tls-ca", "/nonexistent/ca.pem"});
  INFO(partial);
  CHECK(partial.code == 125);
  CHECK(partial.out.empty());
  CHECK(contains(partial.err, "TLS needs all three"));
  const auto missing = node({"--tls-cert", "/nonexistent/node.pem", "--tls-key",
                             "/nonexistent/node.key", "--tls-ca", "/nonexistent/ca.pem"});
  INFO(missing);
  CHECK(missing.code == 125);
  CHECK(missing.out.empty());
  CHECK(contains(missing.err, "cannot read /nonexistent/node.pem"));
}
