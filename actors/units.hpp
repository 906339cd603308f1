// Values written by people: durations ("500ms", "30s", "5m"), sizes ("256m", "1g") and CPU
// counts ("0.5"), read the same way on the command line (app/cli_values.hpp) and in the
// policy file (actors/policy_file.hpp), and written back in the same form. Each parser returns
// nullopt for anything malformed, so the caller can name the flag or key in its error.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace corral::actors {

// "500ms", "30s", "5m", "2h"; a bare number is seconds. Negative values are malformed.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

// "1024", "512k", "256m", "1g" (binary multiples; "kb"/"mib" style suffixes accepted).
std::optional<int64_t> parse_size(std::string_view text);

// "1", "0.5", "2.25" -> nano-CPUs.
std::optional<int64_t> parse_cpus(std::string_view text);

// "0.05", "2": a non-negative decimal number without a unit.
std::optional<double> parse_decimal(std::string_view text);

// The largest unit that divides the value exactly: 2h, 90s, 1500ms; 0 is "0s".
std::string format_duration(std::chrono::milliseconds d);

// The largest binary unit that divides the value exactly: 2g, 1536m, 100 (bytes).
std::string format_size(int64_t bytes);

// Nano-CPUs as a decimal CPU count: 2, 0.5, 1.25.
std::string format_cpus(int64_t nano_cpus);

}  // namespace corral::actors
