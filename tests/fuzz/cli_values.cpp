// Fuzzes app/cli_values: the command line's durations, sizes and CPU counts.
//
// Input: the text of a flag's value.
// Properties: no crash, no exception; every accepted value is non-negative and within the
// bound the parser promises.
#include <cstdint>
#include <string_view>

#include "app/cli_values.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  using namespace corral::app;
  if (auto d = parse_duration(text))
    CORRAL_FUZZ_CHECK(d->count() >= 0 && d->count() <= 1'000'000'000'000'000);
  if (auto s = parse_size(text)) CORRAL_FUZZ_CHECK(*s >= 0);
  if (auto c = parse_cpus(text)) CORRAL_FUZZ_CHECK(*c >= 0 && *c <= 1'000'000'000'000'000);
  return 0;
}
