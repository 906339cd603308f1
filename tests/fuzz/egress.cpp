// Fuzzes actors/egress_rules: what the egress proxy decides on bytes a sandbox sends — the TLS
// ClientHello at the start of a CONNECT tunnel (its SNI decides whether the tunnel stays
// open) and host names against allow and deny patterns.
//
// Input: one byte choosing the part, then its bytes (the hello, or NUL-separated pattern and
// host).
// Properties: the hello parser never reads past its input (ASan) and reports an SNI only from a
// complete hello, never longer than the input; "*" alone matches nothing; a host denied and
// allowed by one pattern is refused; a port not listed is refused; an allowed host is not
// empty.
#include <cstdint>
#include <span>
#include <string>

#include "actors/egress_rules.hpp"
#include "fuzz_common.hpp"

using corral::fuzz::input;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  input in(data, size);
  const uint8_t part = in.byte();
  if (part % 2 == 0) {
    const auto bytes = in.rest();
    const std::span<const unsigned char> hello(reinterpret_cast<const unsigned char*>(bytes.data()),
                                               bytes.size());
    const auto parsed = corral::parse_client_hello(hello);
    if (parsed.state != corral::client_hello::status::complete)
      CORRAL_FUZZ_CHECK(parsed.sni.empty());
    CORRAL_FUZZ_CHECK(parsed.sni.size() <= bytes.size());
    return 0;
  }
  const std::string pattern(in.field());
  const std::string host(in.field());
  const bool matches = corral::host_matches(pattern, host);
  if (pattern == "*") CORRAL_FUZZ_CHECK(!matches);
  corral::egress_rules rules;
  rules.allow = {pattern};
  rules.deny = {pattern};
  rules.ports = {443};
  // Denied and allowed by the same pattern: never allowed.
  if (matches) CORRAL_FUZZ_CHECK(corral::refuse_host(rules, host, 443).has_value());
  rules.deny.clear();
  if (auto why = corral::refuse_host(rules, host, 443); !why) {
    CORRAL_FUZZ_CHECK(!host.empty());
  }
  CORRAL_FUZZ_CHECK(corral::refuse_host(rules, host, 80).has_value());  // port 80 not listed
  return 0;
}
