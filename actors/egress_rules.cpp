#include "actors/egress_rules.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>

namespace corral {

namespace ip = boost::asio::ip;

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view without_trailing_dot(std::string_view s) {
  if (!s.empty() && s.back() == '.') s.remove_suffix(1);
  return s;
}

std::optional<ip::address> ip_literal(std::string_view s) {
  boost::system::error_code ec;
  auto a = ip::make_address(std::string(s), ec);
  if (ec) return std::nullopt;
  return a;
}

// The IPv4 address an IPv6 address stands for, where it carries one that a host would
// route to: IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d, deprecated but still
// understood by some stacks), NAT64 (64:ff9b::a.b.c.d) and 6to4 (2002:aabb:ccdd::).
std::optional<ip::address_v4> embedded_v4(const ip::address_v6& a) {
  const auto b = a.to_bytes();
  auto v4_at = [&](std::size_t i) {
    return ip::address_v4(ip::address_v4::bytes_type{b[i], b[i + 1], b[i + 2], b[i + 3]});
  };
  if (a.is_v4_mapped()) return v4_at(12);
  const bool first_ten_zero = std::all_of(b.begin(), b.begin() + 10, [](auto x) { return !x; });
  if (first_ten_zero && b[10] == 0 && b[11] == 0 && !a.is_loopback() && !a.is_unspecified())
    return v4_at(12);
  const std::array<unsigned char, 12> nat64{0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
  if (std::equal(nat64.begin(), nat64.end(), b.begin())) return v4_at(12);
  if (b[0] == 0x20 && b[1] == 0x02) return v4_at(2);
  return std::nullopt;
}

// IPv4-mapped IPv6 compares as IPv4, so that "127.0.0.0/8" holds ::ffff:127.0.0.1.
ip::address unmapped(const ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) return ip::make_address_v4(ip::v4_mapped, a.to_v6());
  return a;
}

struct named_range {
  const char* range;
  const char* what;
};

// Ranges no sandbox reaches by default. Order matters only for the reason given.
constexpr std::array<named_range, 13> v4_refused{{
    {"169.254.169.254/32", "a cloud metadata address"},
    {"0.0.0.0/8", "an unspecified (\"this network\") address"},
    {"10.0.0.0/8", "a private address"},
    {"100.64.0.0/10", "a carrier-grade NAT address"},
    {"127.0.0.0/8", "a loopback address"},
    {"169.254.0.0/16", "a link-local address"},
    {"172.16.0.0/12", "a private address"},
    {"192.0.0.0/24", "an IETF protocol address"},
    {"192.168.0.0/16", "a private address"},
    {"198.18.0.0/15", "a benchmarking address"},
    {"224.0.0.0/4", "a multicast address"},
    {"255.255.255.255/32", "the broadcast address"},
    {"240.0.0.0/4", "a reserved address"},
}};

constexpr std::array<named_range, 7> v6_refused{{
    {"fd00:ec2::254/128", "a cloud metadata address"},
    {"::/128", "the unspecified address"},
    {"::1/128", "a loopback address"},
    {"fc00::/7", "a private (unique local) address"},
    {"fe80::/10", "a link-local address"},
    {"fec0::/10", "a site-local address"},
    {"ff00::/8", "a multicast address"},
}};

bool is_metadata(const ip::address& a) {
  return a == ip::make_address("169.254.169.254") || a == ip::make_address("fd00:ec2::254");
}

std::optional<std::string> refusal_of(const ip::address& a) {
  if (a.is_v4()) {
    for (const auto& r : v4_refused)
      if (parse_cidr(r.range)->contains(a)) return std::string(r.what);
    return std::nullopt;
  }
  const auto v6 = a.to_v6();
  if (auto v4 = embedded_v4(v6)) {
    if (auto why = refusal_of(ip::address(*v4))) return *why + " (embedded in IPv6)";
  }
  for (const auto& r : v6_refused)
    if (parse_cidr(r.range)->contains(a)) return std::string(r.what);
  return std::nullopt;
}

bool valid_header_name(std::string_view s) {
  if (s.empty()) return false;
  constexpr std::string_view extra = "!#$%&'*+-.^_`|~";
  return std::all_of(s.begin(), s.end(), [&](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || extra.find(c) != extra.npos;
  });
}

bool valid_pattern(std::string_view p) {
  if (p.starts_with("*.")) return valid_dns_name(p.substr(2));
  return valid_dns_name(p) || ip_literal(p).has_value();
}

}  // namespace

std::string normalize_host(std::string_view host) {
  std::string out(without_trailing_dot(host));
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool cidr::contains(const ip::address& raw) const {
  const auto a = unmapped(raw);
  if (a.is_v4() != network.is_v4()) return false;
  auto bytes_of = [](const ip::address& x) {
    std::array<unsigned char, 16> out{};
    if (x.is_v4()) {
      auto b = x.to_v4().to_bytes();
      std::copy(b.begin(), b.end(), out.begin());
    } else {
      auto b = x.to_v6().to_bytes();
      std::copy(b.begin(), b.end(), out.begin());
    }
    return out;
  };
  const auto x = bytes_of(a), n = bytes_of(network);
  unsigned left = prefix;
  for (std::size_t i = 0; left > 0; ++i) {
    const unsigned bits = std::min(left, 8u);
    const auto mask = static_cast<unsigned char>(0xff << (8 - bits));
    if ((x[i] & mask) != (n[i] & mask)) return false;
    left -= bits;
  }
  return true;
}

std::optional<cidr> parse_cidr(std::string_view text) {
  const auto slash = text.find('/');
  auto address = ip_literal(text.substr(0, slash));
  if (!address) return std::nullopt;
  const unsigned width = address->is_v4() ? 32 : 128;
  unsigned prefix = width;
  if (slash != text.npos) {
    const auto digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3) return std::nullopt;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    if (ec != std::errc{} || end != digits.data() + digits.size() || prefix > width)
      return std::nullopt;
  }
  return cidr{unmapped(*address), prefix};
}

bool valid_dns_name(std::string_view host) {
  host = without_trailing_dot(host);
  if (host.empty() || host.size() > 253) return false;
  std::string_view last;
  while (true) {
    const auto dot = host.find('.');
    const auto label = host.substr(0, dot);
    // RFC 1123 labels: no hyphen at either end.
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-')
      return false;
    for (char c : label)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
    last = label;
    if (dot == host.npos) break;
    host.remove_prefix(dot + 1);
  }
  return !std::all_of(last.begin(), last.end(),
                      [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
}

bool host_matches(std::string_view pattern, std::string_view host) {
  host = without_trailing_dot(host);
  if (pattern.starts_with("*.")) {
    const auto suffix = pattern.substr(1);  // ".example.org"
    if (suffix.size() < 2 || host.size() <= suffix.size()) return false;
    // At least one whole label before the suffix: "a.example.org", never ".example.org".
    return iequals(host.substr(host.size() - suffix.size()), suffix);
  }
  if (pattern.empty() || pattern.find('*') != pattern.npos) return false;
  return iequals(without_trailing_dot(pattern), host);
}

std::optional<std::string> refuse_host(const egress_rules& rules, std::string_view host,
                                       uint16_t port) {
  const auto name = normalize_host(host);
  const auto literal = ip_literal(host);
  if (!literal && !valid_dns_name(host)) return "not a valid host name";
  const bool port_ok = rules.ports.empty() ? (port == 80 || port == 443)
                                           : std::find(rules.ports.begin(), rules.ports.end(),
                                                       port) != rules.ports.end();
  if (!port_ok) return "port " + std::to_string(port) + " is not allowed";
  if (literal) {
    auto same = [&](const std::string& entry) {
      auto a = ip_literal(entry);
      return a && *a == *literal;
    };
    if (std::any_of(rules.deny.begin(), rules.deny.end(), same)) return "denied by the deny list";
    if (std::any_of(rules.allow.begin(), rules.allow.end(), same)) return std::nullopt;
    return "an IP address not named in the allow list";
  }
  auto matches = [&](const std::string& p) { return host_matches(p, name); };
  if (std::any_of(rules.deny.begin(), rules.deny.end(), matches)) return "denied by the deny list";
  if (std::any_of(rules.allow.begin(), rules.allow.end(), matches)) return std::nullopt;
  return "not in the allow list";
}

std::optional<std::string> refuse_address(const egress_rules& rules, const ip::address& raw) {
  const auto a = unmapped(raw);
  auto why = refusal_of(a);
  if (!why) return std::nullopt;
  for (const auto& text : rules.allow_private_cidrs) {
    auto range = parse_cidr(text);
    if (!range || !range->contains(a)) continue;
    // A broad range ("169.254.0.0/16") must not open the metadata service by accident.
    const unsigned width = range->network.is_v4() ? 32 : 128;
    if (is_metadata(a) && range->prefix != width) continue;
    return std::nullopt;
  }
  return a.to_string() + " is " + *why;
}

std::optional<std::string> validate(const egress_rules& rules) {
  for (const auto& c : rules.allow_private_cidrs)
    if (!parse_cidr(c)) return "allow_private_cidrs: \"" + c + "\" is no address range";
  for (const auto* list : {&rules.allow, &rules.deny})
    for (const auto& p : *list)
      if (!valid_pattern(p))
        return "host pattern \"" + p + "\" is neither a host name, \"*.\" and a name, nor an IP";
  for (auto p : rules.ports)
    if (p == 0) return "port 0 cannot be allowed";
  for (const auto& [host, address] : rules.resolve) {
    if (!valid_dns_name(host)) return "resolve: \"" + host + "\" is not a host name";
    if (!ip_literal(address)) return "resolve: \"" + address + "\" is not an IP address";
  }
  for (const auto& c : rules.credentials) {
    if (!valid_dns_name(c.host) && !ip_literal(c.host))
      return "credential host \"" + c.host + "\" is not a host name";
    if (!valid_header_name(c.header))
      return "credential header name \"" + c.header + "\" is not an HTTP token";
    if (c.value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
      return "the credential value for " + c.host + " holds CR, LF or NUL";
  }
  if (rules.max_connections == 0) return "max_connections is 0: nothing could connect";
  if (rules.max_connection_time.count() <= 0) return "max_connection_time must be positive";
  return std::nullopt;
}

const egress_credential* credential_for(const egress_rules& rules, std::string_view host) {
  for (const auto& c : rules.credentials)
    if (iequals(without_trailing_dot(c.host), without_trailing_dot(host))) return &c;
  return nullptr;
}

namespace {

// Reads big-endian lengths and length-prefixed blocks from one region of a TLS message;
// every read fails, rather than run on, when the region has fewer bytes than it needs.
class tls_reader {
 public:
  tls_reader() = default;
  explicit tls_reader(std::span<const unsigned char> region) : region_(region) {}

  bool done() const { return at_ == region_.size(); }

  bool skip(std::size_t n) {
    if (region_.size() - at_ < n) return false;
    at_ += n;
    return true;
  }

  bool read_len(std::size_t width, std::size_t& out) {
    if (region_.size() - at_ < width) return false;
    out = 0;
    for (std::size_t i = 0; i < width; ++i) out = (out << 8) | region_[at_ + i];
    at_ += width;
    return true;
  }

  // A block prefixed by its length (width bytes); `out` reads only inside it.
  bool read_block(std::size_t width, tls_reader& out) {
    std::size_t len = 0;
    if (!read_len(width, len) || region_.size() - at_ < len) return false;
    out = tls_reader(region_.subspan(at_, len));
    at_ += len;
    return true;
  }

  std::string rest() const {
    return {reinterpret_cast<const char*>(region_.data() + at_), region_.size() - at_};
  }

 private:
  std::span<const unsigned char> region_;
  std::size_t at_ = 0;
};

}  // namespace

// TLS 1.x: a record is type(1) version(2) length(2) fragment; handshake records carry
// messages of type(1) length(3) body, and a message may continue into the next record.
client_hello parse_client_hello(std::span<const unsigned char> bytes) {
  using st = client_hello::status;
  constexpr std::size_t max_considered = std::size_t{64} * 1024;
  // Gather the handshake message bytes from consecutive handshake records.
  std::vector<unsigned char> msg;
  std::size_t pos = 0;
  auto need = [&]() -> std::optional<std::size_t> {
    if (msg.size() < 4) return std::nullopt;
    return 4 + ((std::size_t{msg[1]} << 16) | (std::size_t{msg[2]} << 8) | msg[3]);
  };
  while (true) {
    if (auto n = need(); n && *n > max_considered) return {st::not_tls, {}};
    if (auto n = need(); n && msg.size() >= *n) break;
    if (bytes.size() - pos < 5) {
      // Reject early what is clearly not a handshake record, rather than wait for more.
      if (pos < bytes.size() && bytes[pos] != 0x16) return {st::not_tls, {}};
      if (pos + 1 < bytes.size() && bytes[pos + 1] != 0x03) return {st::not_tls, {}};
      return {st::incomplete, {}};
    }
    if (bytes[pos] != 0x16 || bytes[pos + 1] != 0x03) return {st::not_tls, {}};
    const std::size_t len = (std::size_t{bytes[pos + 3]} << 8) | bytes[pos + 4];
    if (len == 0 || len > 16384) return {st::not_tls, {}};
    const std::size_t have = std::min(len, bytes.size() - pos - 5);
    const auto fragment = bytes.subspan(pos + 5, have);
    msg.insert(msg.end(), fragment.begin(), fragment.end());
    // A record header alone so far (5 bytes, and a pause): nothing to look at yet.
    if (msg.empty()) return {st::incomplete, {}};
    if (msg[0] != 0x01) return {st::not_tls, {}};
    if (have < len) {
      if (auto n = need(); n && msg.size() >= *n && *n <= max_considered) break;
      return {st::incomplete, {}};
    }
    pos += 5 + len;
  }
  // ClientHello body: version(2) random(32) session_id<1> cipher_suites<2> compression<1>
  // extensions<2>, each extension type(2) data<2>. Every length is read against the region
  // that holds it (the body, the extensions block, one extension), never against the body
  // alone: a block shorter than the header inside it must not let a read run past its end.
  tls_reader body(std::span<const unsigned char>(msg.data() + 4, *need() - 4));
  std::size_t n = 0;
  if (!body.skip(2 + 32) || !body.read_len(1, n) || !body.skip(n) || !body.read_len(2, n) ||
      !body.skip(n) || !body.read_len(1, n) || !body.skip(n))
    return {st::not_tls, {}};
  if (body.done()) return {st::complete, {}};  // no extensions at all
  tls_reader extensions;
  if (!body.read_block(2, extensions)) return {st::not_tls, {}};
  while (!extensions.done()) {
    std::size_t type = 0;
    tls_reader extension;
    if (!extensions.read_len(2, type) || !extensions.read_block(2, extension))
      return {st::not_tls, {}};
    if (type != 0) continue;
    // server_name: list<2> of name_type(1) name<2>; host_name is type 0.
    tls_reader names;
    if (!extension.read_block(2, names) || !extension.done()) return {st::not_tls, {}};
    while (!names.done()) {
      std::size_t name_type = 0;
      tls_reader name;
      if (!names.read_len(1, name_type) || !names.read_block(2, name)) return {st::not_tls, {}};
      if (name_type == 0) {
        std::string sni = name.rest();
        if (sni.empty() || sni.find('\0') != sni.npos) return {st::not_tls, {}};
        return {st::complete, sni};
      }
    }
  }
  return {st::complete, {}};
}

}  // namespace corral
