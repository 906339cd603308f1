#include <catch2/catch.hpp>

#include <openssl/ssl.h>

#include "actors/egress_rules.hpp"

using boost::asio::ip::make_address;
using corral::egress_rules;
using corral::host_matches;
using corral::refuse_address;
using corral::refuse_host;

namespace {

// A real ClientHello, as OpenSSL writes it, with `sni` (none if empty).
std::vector<unsigned char> client_hello_bytes(const std::string& sni) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = SSL_new(ctx);
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, in, out);
  if (!sni.empty()) SSL_set_tlsext_host_name(ssl, sni.c_str());
  SSL_set_connect_state(ssl);
  SSL_do_handshake(ssl);  // wants to read: the ClientHello is in `out`
  std::vector<unsigned char> bytes(static_cast<std::size_t>(BIO_ctrl_pending(out)));
  BIO_read(out, bytes.data(), static_cast<int>(bytes.size()));
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  return bytes;
}

// A ClientHello built by hand: a fixed head (version, random, no session id, one cipher
// suite, null compression), then `tail` as the rest of the body, in one handshake record.
std::vector<unsigned char> hand_built_hello(const std::vector<unsigned char>& tail) {
  // Appended byte by byte: g++ 12 at -O2 warns (-Warray-bounds) falsely on inserting a range
  // into a vector made from a braced list.
  std::vector<unsigned char> body;
  const auto append = [](std::vector<unsigned char>& to, std::initializer_list<unsigned char> b) {
    for (const unsigned char c : b) to.push_back(c);
  };
  append(body, {0x03, 0x03});
  body.resize(body.size() + 32, 0x5a);
  append(body, {0x00, 0x00, 0x02, 0x13, 0x01, 0x01, 0x00});
  for (const unsigned char c : tail) body.push_back(c);
  const auto high = [](std::size_t n) { return static_cast<unsigned char>(n >> 8); };
  const auto low = [](std::size_t n) { return static_cast<unsigned char>(n & 0xff); };
  const std::size_t message = body.size() + 4;
  std::vector<unsigned char> bytes;
  append(bytes, {0x16, 0x03, 0x01, high(message), low(message)});
  append(bytes, {0x01, 0x00, high(body.size()), low(body.size())});
  for (const unsigned char c : body) bytes.push_back(c);
  return bytes;
}

// "aaa…a.test" with an n-character first label. Appended rather than concatenated with `+`:
// g++ 12 at -O2 warns (-Warray-bounds) falsely on std::string(n, c) + literal.
std::string name_with_label(std::size_t n) {
  std::string s(n, 'a');
  s.append(".test");
  return s;
}

egress_rules open_rules(std::vector<std::string> allow) {
  egress_rules r;
  r.allow = std::move(allow);
  return r;
}

}  // namespace

TEST_CASE("egress host_matches: exact names and whole-label wildcards", "[unit][egress]") {
  CHECK(host_matches("example.org", "example.org"));
  CHECK(host_matches("example.org", "EXAMPLE.org."));
  CHECK(host_matches("Example.ORG", "example.org"));
  CHECK_FALSE(host_matches("example.org", "a.example.org"));
  CHECK(host_matches("*.example.org", "a.example.org"));
  CHECK(host_matches("*.example.org", "a.b.example.org"));
  CHECK(host_matches("*.example.org", "A.Example.Org."));
  CHECK_FALSE(host_matches("*.example.org", "example.org"));
  CHECK_FALSE(host_matches("*.example.org", "badexample.org"));
  CHECK_FALSE(host_matches("*.example.org", ".example.org"));
  CHECK_FALSE(host_matches("*", "example.org"));
  CHECK_FALSE(host_matches("*.", "example.org"));
  CHECK_FALSE(host_matches("a.*.org", "a.b.org"));
  CHECK_FALSE(host_matches("", ""));
}

TEST_CASE("egress refuse_host: deny wins, ports, names, IP literals", "[unit][egress]") {
  auto r = open_rules({"*.example.org", "api.test", "203.0.113.7"});
  CHECK_FALSE(refuse_host(r, "a.example.org", 443));
  CHECK_FALSE(refuse_host(r, "api.test", 80));
  CHECK(refuse_host(r, "other.test", 443) == "not in the allow list");
  CHECK(refuse_host(r, "api.test", 8443) == "port 8443 is not allowed");

  r.deny = {"secret.example.org"};
  CHECK(refuse_host(r, "secret.example.org", 443) == "denied by the deny list");
  CHECK(refuse_host(r, "SECRET.example.org.", 443) == "denied by the deny list");
  CHECK_FALSE(refuse_host(r, "public.example.org", 443));
  r.deny = {"*.example.org"};
  CHECK(refuse_host(r, "a.example.org", 443) == "denied by the deny list");

  r.ports = {8443};
  CHECK(refuse_host(r, "api.test", 8443) == std::nullopt);
  CHECK(refuse_host(r, "api.test", 443));

  r = open_rules({"api.test", "203.0.113.7", "2001:db8::1"});
  CHECK_FALSE(refuse_host(r, "203.0.113.7", 443));
  CHECK_FALSE(refuse_host(r, "2001:db8:0::1", 443));
  CHECK(refuse_host(r, "203.0.113.8", 443) == "an IP address not named in the allow list");
  CHECK(refuse_host(r, "not_a.name", 443) == "not a valid host name");
  CHECK(refuse_host(r, "", 443) == "not a valid host name");
  CHECK(refuse_host(r, "a..test", 443) == "not a valid host name");
  CHECK(refuse_host(r, name_with_label(64), 443) == "not a valid host name");
  // Numeric last labels would be read as IPv4 by a resolver: 127.1, 2130706433, 0x7f.1.
  CHECK(refuse_host(r, "127.1", 443) == "not a valid host name");
  CHECK(refuse_host(r, "2130706433", 443) == "not a valid host name");
}

TEST_CASE("egress valid_dns_name bounds", "[unit][egress]") {
  CHECK(corral::valid_dns_name(name_with_label(63)));
  CHECK_FALSE(corral::valid_dns_name(name_with_label(64)));
  std::string long_name;
  while (long_name.size() < 250) long_name += "abcdefghi.";
  long_name += "xyz";  // 253 characters: the most a name may have
  CHECK(corral::valid_dns_name(long_name));
  long_name.insert(0, "a");
  CHECK_FALSE(corral::valid_dns_name(long_name));
  CHECK(corral::valid_dns_name("example.org."));
  CHECK_FALSE(corral::valid_dns_name("example.org.."));
}

TEST_CASE("egress refuse_address: private ranges, mapped forms, allow_private_cidrs",
          "[unit][egress]") {
  egress_rules r;
  for (const char* a : {"127.0.0.1",
                        "10.1.2.3",
                        "172.16.0.1",
                        "172.31.255.255",
                        "192.168.1.1",
                        "100.64.0.1",
                        "169.254.1.1",
                        "169.254.169.254",
                        "0.0.0.0",
                        "0.1.2.3",
                        "224.0.0.1",
                        "255.255.255.255",
                        "::1",
                        "::",
                        "fc00::1",
                        "fd12::1",
                        "fe80::1",
                        "ff02::1",
                        "fd00:ec2::254",
                        "::ffff:127.0.0.1",
                        "::ffff:10.0.0.1",
                        "::ffff:169.254.169.254",
                        "64:ff9b::a00:1",
                        "2002:c0a8:0101::1"}) {
    INFO(a);
    CHECK(refuse_address(r, make_address(a)));
  }
  for (const char* a :
       {"93.184.216.34", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:93.184.216.34"}) {
    INFO(a);
    CHECK_FALSE(refuse_address(r, make_address(a)));
  }
  CHECK(*refuse_address(r, make_address("127.0.0.1")) == "127.0.0.1 is a loopback address");
  CHECK(*refuse_address(r, make_address("169.254.169.254")) ==
        "169.254.169.254 is a cloud metadata address");

  r.allow_private_cidrs = {"127.0.0.0/8", "::1/128", "169.254.0.0/16"};
  CHECK_FALSE(refuse_address(r, make_address("127.0.0.1")));
  CHECK_FALSE(refuse_address(r, make_address("::ffff:127.0.0.2")));
  CHECK_FALSE(refuse_address(r, make_address("::1")));
  CHECK_FALSE(refuse_address(r, make_address("169.254.1.1")));
  CHECK(refuse_address(r, make_address("10.0.0.1")));
  // A broad range does not open the metadata service; naming it exactly does.
  CHECK(refuse_address(r, make_address("169.254.169.254")));
  r.allow_private_cidrs.push_back("169.254.169.254/32");
  CHECK_FALSE(refuse_address(r, make_address("169.254.169.254")));
}

TEST_CASE("egress parse_cidr and validate", "[unit][egress]") {
  auto c = corral::parse_cidr("10.0.0.0/8");
  REQUIRE(c);
  CHECK(c->contains(make_address("10.255.0.1")));
  CHECK_FALSE(c->contains(make_address("11.0.0.1")));
  CHECK_FALSE(c->contains(make_address("::1")));
  CHECK(corral::parse_cidr("::1/128"));
  CHECK(corral::parse_cidr("192.0.2.1"));
  CHECK(corral::parse_cidr("0.0.0.0/0"));
  for (const char* bad : {"10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0/8", "x/8", "10.0.0.0/8x",
                          "10.0.0.0/-1", ""}) {
    INFO(bad);
    CHECK_FALSE(corral::parse_cidr(bad));
  }

  egress_rules r = open_rules({"*.example.org"});
  CHECK_FALSE(corral::validate(r));
  r.allow_private_cidrs = {"127.0.0.0/99"};
  CHECK(corral::validate(r) == "allow_private_cidrs: \"127.0.0.0/99\" is no address range");
  r = open_rules({"*"});
  CHECK(corral::validate(r));
  r = open_rules({"ok.test"});
  r.credentials = {{"ok.test", "Authorization", "Bearer a\r\nX-Evil: 1"}};
  CHECK(corral::validate(r));
  r.credentials = {{"ok.test", "Bad Header", "x"}};
  CHECK(corral::validate(r));
  r.credentials = {{"ok.test", "Authorization", "Bearer x"}};
  CHECK_FALSE(corral::validate(r));
  r.resolve = {{"ok.test", "not-an-ip"}};
  CHECK(corral::validate(r));
  r.resolve = {{"ok.test", "127.0.0.1"}};
  CHECK_FALSE(corral::validate(r));
  r.ports = {0};
  CHECK(corral::validate(r));
}

TEST_CASE("egress parse_client_hello reads the SNI of a real ClientHello", "[unit][egress]") {
  using st = corral::client_hello::status;
  const auto hello = client_hello_bytes("api.example.org");
  auto parsed = corral::parse_client_hello(hello);
  CHECK(parsed.state == st::complete);
  CHECK(parsed.sni == "api.example.org");

  // Every strict prefix is incomplete, never a wrong answer: each length, the bare record
  // header (5 bytes, which once read an empty buffer's first byte) included.
  for (std::size_t n = 0; n < hello.size(); ++n) {
    INFO(n);
    CHECK(corral::parse_client_hello(std::span(hello.data(), n)).state == st::incomplete);
  }

  const auto bare = client_hello_bytes("");
  parsed = corral::parse_client_hello(bare);
  CHECK(parsed.state == st::complete);
  CHECK(parsed.sni.empty());

  const std::string plain = "GET / HTTP/1.1\r\n\r\n";
  CHECK(corral::parse_client_hello(
            std::span(reinterpret_cast<const unsigned char*>(plain.data()), plain.size()))
            .state == st::not_tls);

  // The same hello split across two handshake records is still read.
  const std::size_t first = 40;
  const std::size_t body = hello.size() - 5;
  std::vector<unsigned char> split{0x16, 0x03, 0x01, 0, static_cast<unsigned char>(first)};
  split.insert(split.end(), hello.begin() + 5, hello.begin() + 5 + first);
  const std::size_t rest = body - first;
  split.insert(split.end(), {0x16, 0x03, 0x01, static_cast<unsigned char>(rest >> 8),
                             static_cast<unsigned char>(rest & 0xff)});
  split.insert(split.end(), hello.begin() + 5 + first, hello.end());
  parsed = corral::parse_client_hello(split);
  CHECK(parsed.state == st::complete);
  CHECK(parsed.sni == "api.example.org");

  // A record claiming a handshake type other than ClientHello is not one.
  auto wrong = hello;
  wrong[5] = 0x02;
  CHECK(corral::parse_client_hello(wrong).state == st::not_tls);
}

TEST_CASE("egress parse_client_hello reads every length inside the block that holds it",
          "[unit][egress]") {
  using st = corral::client_hello::status;
  const auto state = [](const std::vector<unsigned char>& tail) {
    return corral::parse_client_hello(hand_built_hello(tail)).state;
  };
  // server_name "a.test" in well-formed blocks: the hand-built hello is read.
  const std::vector<unsigned char> sni_ext{0x00, 0x00, 0x00, 0x0b, 0x00, 0x09, 0x00, 0x00,
                                           0x06, 'a',  '.',  't',  'e',  's',  't'};
  std::vector<unsigned char> good{0x00, static_cast<unsigned char>(sni_ext.size())};
  good.insert(good.end(), sni_ext.begin(), sni_ext.end());
  const auto parsed = corral::parse_client_hello(hand_built_hello(good));
  CHECK(parsed.state == st::complete);
  CHECK(parsed.sni == "a.test");

  // Found by the fuzz stage in CI: an extensions block of one byte, with body bytes after it.
  // The extension header (4 bytes) was read against the body's end, not the block's, and the
  // length left of the block underflowed: here the SNI after the block was taken as the
  // hello's; with other lengths the copy ran far past the buffer (ASan).
  std::vector<unsigned char> short_block{0x00, 0x01};
  short_block.insert(short_block.end(), sni_ext.begin(), sni_ext.end());
  CHECK(state(short_block) == st::not_tls);

  // The same inside server_name: a name list of one byte (shorter than a name's 3-byte
  // header), with a name's length and bytes after the extensions block.
  const std::vector<unsigned char> short_list{0x00, 0x07, 0x00, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00,
                                              0x00, 0x06, 'a',  '.',  't',  'e',  's',  't'};
  CHECK(state(short_list) == st::not_tls);

  // An extension whose data runs past the extensions block; a name past its list.
  CHECK(state({0x00, 0x04, 0x00, 0x00, 0x00, 0x20}) == st::not_tls);
  CHECK(state({0x00, 0x09, 0x00, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00, 0x00, 0x09}) == st::not_tls);
}
