// Parsing of the command line's values: durations ("500ms", "30s", "5m"), sizes ("256m",
// "1g"), CPU counts ("0.5") and decimals are read as in the policy file (actors/units.hpp);
// whole numbers here. Each returns nullopt for anything malformed, so the caller can name the
// flag and the value in its error.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "actors/units.hpp"

namespace corral::app {

using actors::parse_cpus;
using actors::parse_decimal;
using actors::parse_duration;
using actors::parse_size;

// "42", "-3": decimal digits with an optional minus sign, nothing else.
std::optional<int64_t> parse_integer(std::string_view text);

}  // namespace corral::app
