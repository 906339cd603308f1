// Parsing of the command line's values: durations ("500ms", "30s", "5m"), sizes ("256m",
// "1g"), CPU counts ("0.5"), whole numbers and decimals. Each returns nullopt for anything
// malformed, so the caller can name the flag and the value in its error.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace corral::app {

// "500ms", "30s", "5m", "2h"; a bare number is seconds. Negative values are malformed.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

// "1024", "512k", "256m", "1g" (binary multiples; "kb"/"mib" style suffixes accepted).
std::optional<int64_t> parse_size(std::string_view text);

// "1", "0.5", "2.25" -> nano-CPUs.
std::optional<int64_t> parse_cpus(std::string_view text);

// "42", "-3": decimal digits with an optional minus sign, nothing else.
std::optional<int64_t> parse_integer(std::string_view text);

// "0.05", "2": a non-negative decimal number without a unit.
std::optional<double> parse_decimal(std::string_view text);

}  // namespace corral::app
