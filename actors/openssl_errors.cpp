#include "actors/openssl_errors.hpp"

#include <array>

#include <openssl/err.h>

namespace corral::actors {

std::string openssl_errors() {
  std::string out;
  while (const unsigned long code = ERR_get_error()) {
    std::array<char, 256> text{};
    ERR_error_string_n(code, text.data(), text.size());
    if (!out.empty()) out += "; ";
    out += text.data();
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

}  // namespace corral::actors
