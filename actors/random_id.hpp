// Random identifiers: sandbox ids, claim nonces, exec tags.
#pragma once

#include <string>

namespace corral {

// 64 bits from the operating system's CSPRNG as 16 hex digits. Each call draws fresh bits:
// a generator seeded once from std::random_device would give ids with only its seed's 32 bits
// of entropy, and ten thousand of those collide about once in a hundred runs.
std::string random_hex64();

}  // namespace corral
