#include "actors/random_id.hpp"

#include <openssl/rand.h>

#include <cstdint>
#include <cstdio>
#include <random>

namespace corral {

std::string random_hex64() {
  uint64_t bits = 0;
  if (RAND_bytes(reinterpret_cast<unsigned char*>(&bits), sizeof bits) != 1) {
    // OpenSSL's generator failed (it does not, once seeded): two draws of the kernel's.
    std::random_device device;
    bits = (static_cast<uint64_t>(device()) << 32) ^ device();
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(bits));
  return hex;
}

}  // namespace corral
