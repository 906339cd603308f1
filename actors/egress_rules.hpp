// What a sandbox may reach through the egress proxy, and the pure decisions on it: a host
// name against the allow and deny lists, a resolved address against the private ranges, the
// SNI of a TLS ClientHello. No I/O here: the proxy (actors/egress_proxy) asks, these answer.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/ip/address.hpp>

namespace corral {

// A header the proxy sets on every request to `host` (and strips from what the sandbox sent).
struct egress_credential {
  std::string host;    // exact host name, no wildcard
  std::string header;  // header name, e.g. "Authorization"
  std::string value;   // the whole header value, scheme included: "Bearer abc"
};

// One sandbox's egress policy.
struct egress_rules {
  std::vector<std::string> allow, deny;  // host patterns: "api.example.org", "*.example.org"
  std::vector<uint16_t> ports;           // empty means {80, 443}
  std::vector<std::string> allow_private_cidrs;  // "127.0.0.0/8": private ranges let through
  std::vector<egress_credential> credentials;
  std::map<std::string, std::string> resolve;  // host -> IP literal, used instead of DNS
  uint64_t max_bytes = 0;                      // per sandbox, both directions summed; 0 = unlimited
  uint32_t max_connections = 32;               // concurrent, per sandbox
  std::chrono::seconds max_connection_time{600};
};

// An address range, "10.0.0.0/8". IPv4 ranges hold IPv4 addresses only; an IPv4-mapped IPv6
// address is compared as the IPv4 address it maps.
struct cidr {
  boost::asio::ip::address network;
  unsigned prefix = 0;
  bool contains(const boost::asio::ip::address& a) const;
};

// "10.0.0.0/8", "::1/128", or a bare address (the whole length). Nullopt if malformed.
std::optional<cidr> parse_cidr(std::string_view text);

// Whether `host` is a syntactically valid DNS name: labels of 1..63 characters of
// [A-Za-z0-9-], no '-' at either end, 253 characters at most, one trailing dot ignored, last label
// not all digits (a resolver would read "127.1" or "2130706433" as an IPv4 address).
bool valid_dns_name(std::string_view host);

// Case-insensitive: `pattern` equal to `host`, or "*.example.org" matching one or more whole
// labels before "example.org" (never "example.org" itself). A trailing dot on the host is
// ignored. "*" alone matches nothing.
bool host_matches(std::string_view pattern, std::string_view host);

// Why `host:port` may not be reached (nullopt: it may). Decided on the name, before any DNS.
// Deny wins over allow; an IP literal passes only if an allow entry is that address.
std::optional<std::string> refuse_host(const egress_rules& rules, std::string_view host,
                                       uint16_t port);

// Why `a` may not be connected to (nullopt: it may): loopback, private, CGNAT, link-local,
// multicast, unspecified, broadcast, reserved and cloud metadata addresses, in IPv4 or in the
// IPv6 forms that carry one, unless a range of allow_private_cidrs holds it. A metadata
// address passes only a range naming exactly it.
std::optional<std::string> refuse_address(const egress_rules& rules,
                                          const boost::asio::ip::address& a);

// Whether `rules` can be used as written: ranges, patterns, ports, resolve overrides,
// credential header names and values (no CR, LF or NUL: they would inject headers).
std::optional<std::string> validate(const egress_rules& rules);

// The credential for exactly `host` (case-insensitive, trailing dot ignored), if any.
const egress_credential* credential_for(const egress_rules& rules, std::string_view host);

// What the first bytes of a tunnel say about its TLS ClientHello.
struct client_hello {
  enum class status {
    incomplete,  // a prefix of a plausible ClientHello: read more
    not_tls,     // not a TLS handshake record holding a ClientHello
    complete,    // parsed; `sni` is the host_name of server_name, empty if absent
  };
  status state = status::incomplete;
  std::string sni;
};

// The ClientHello at the start of `bytes` (it may span several handshake records; at most
// 64 KiB are considered, beyond which it is not_tls).
client_hello parse_client_hello(std::span<const unsigned char> bytes);

// ASCII lowercase, and without one trailing dot.
std::string normalize_host(std::string_view host);

}  // namespace corral
