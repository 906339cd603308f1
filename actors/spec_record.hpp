// A per-field record of what a sandbox was asked to be, kept in its container's labels, so a
// later acquire of the same key with another spec can be refused naming the fields that differ
// (and a squatter's spec is never handed to the key's real user).
//
// Each field is kept as a short SHA-256 digest of its text; an environment variable's value only
// as an HMAC-SHA256 under the runtime's secret (a plain hash of a short token can be reversed by
// guessing, and labels are readable by anyone who can inspect the container).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "messages/sandbox.hpp"

namespace corral::actors {

// field name ("image", "memory", "env.TOKEN", ...) -> digest; "secret" names the HMAC key.
using spec_record = std::map<std::string, std::string>;

spec_record make_spec_record(const messages::sandbox_spec& spec, std::string_view secret);

// One label value: "field=digest;field=digest;...". decode() of anything malformed is empty.
std::string encode(const spec_record& record);
spec_record decode_spec_record(std::string_view label);

// The fields whose digests differ, sorted. Records under different secrets (a sandbox adopted
// from a process with another secret) compare environment variables by name only.
std::vector<std::string> differing_fields(const spec_record& kept, const spec_record& asked);

// The first `bytes` bytes of SHA-256(text), in hex.
std::string sha256_hex(std::string_view text, std::size_t bytes);

// The runtime's HMAC secret: read from (or created in) `path` when the process may (root-only
// file, 0600), else a random one for this process only. Never empty.
std::string load_spec_secret(const std::string& path);

}  // namespace corral::actors
