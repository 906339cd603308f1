// Egress hosts as a request and the policy name them: the pattern check (the proxy's own
// name test), whether an allowed pattern covers a requested one, and the proxy environment a
// command gets. Apart from policy.cpp because the policy file's reader checks its egress
// section with the same functions.
#include "actors/policy.hpp"

#include "actors/egress_rules.hpp"
#include "messages/agent_protocol.hpp"

#include <arpa/inet.h>

namespace corral::actors {

std::string check_egress_pattern(std::string& s) {
  s = normalize_host(s);
  unsigned char buf[16];
  if (inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1)
    return {};
  std::string_view name = s;
  if (name.rfind("*.", 0) == 0) name.remove_prefix(2);
  // The proxy's own test of a name (actors/egress_rules.hpp): what passes here, it can match.
  if (!valid_dns_name(name) || name.find('*') != std::string_view::npos)
    return "\"" + s + "\" is not a host name (like pypi.org or *.pythonhosted.org)";
  return {};
}

bool egress_pattern_covers(std::string_view allowed, std::string_view requested) {
  if (allowed == requested) return true;
  if (allowed.rfind("*.", 0) != 0) return false;
  const auto suffix = allowed.substr(1);  // ".d"
  auto name = requested;
  if (name.rfind("*.", 0) == 0) name.remove_prefix(2);
  return name.size() > suffix.size() && name.substr(name.size() - suffix.size()) == suffix;
}

// g++ 12 at -O2 warns falsely (-Warray-bounds, -Wstringop-overflow; GCC bug 105651) on the
// strings concatenated and moved below once they stand in a file this small: it inlines the
// move and sees a memcpy out of bounds that cannot happen (the whole policy.cpp it came from
// inlined less). clang does not warn.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
std::vector<std::string> egress_env() {
  const std::string proxy = "http://127.0.0.1:3128";
  const std::string bundle = std::string(agent_protocol::run_dir_inside) + "/ca.pem";
  return {"HTTP_PROXY=" + proxy,           "HTTPS_PROXY=" + proxy,
          "http_proxy=" + proxy,           "https_proxy=" + proxy,
          "NO_PROXY=localhost,127.0.0.1",  "no_proxy=localhost,127.0.0.1",
          "SSL_CERT_FILE=" + bundle,       "REQUESTS_CA_BUNDLE=" + bundle,
          "NODE_EXTRA_CA_CERTS=" + bundle, "CURL_CA_BUNDLE=" + bundle};
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace corral::actors
