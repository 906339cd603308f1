// Small helpers shared by the fuzz targets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace corral::fuzz {

// A property of the code under test failed: print it and abort, which libFuzzer reports as a
// crash and saves the input. Unlike assert() it stays on in every build.
#define CORRAL_FUZZ_CHECK(cond)                                                             \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      std::fprintf(stderr, "%s:%d: fuzz property failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)

// Reads the input from the front: a few control bytes, then the rest as the payload.
class input {
 public:
  input(const uint8_t* data, std::size_t size) : rest_(reinterpret_cast<const char*>(data), size) {}

  uint8_t byte() {
    if (rest_.empty()) return 0;
    const auto b = static_cast<uint8_t>(rest_.front());
    rest_.remove_prefix(1);
    return b;
  }

  // Up to n bytes.
  std::string_view take(std::size_t n) {
    const auto piece = rest_.substr(0, n);
    rest_.remove_prefix(piece.size());
    return piece;
  }

  // Up to the next NUL (consumed) or the end: for inputs made of several strings.
  std::string_view field() {
    const auto end = rest_.find('\0');
    const auto piece = rest_.substr(0, end);
    rest_.remove_prefix(end == std::string_view::npos ? rest_.size() : end + 1);
    return piece;
  }

  std::string_view rest() const { return rest_; }
  bool empty() const { return rest_.empty(); }

 private:
  std::string_view rest_;
};

}  // namespace corral::fuzz
