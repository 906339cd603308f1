#include "actors/units.hpp"

#include <cctype>
#include <cmath>
#include <string>

namespace corral::actors {

namespace {

// Splits "250ms" into 250 and "ms"; the number may have one decimal point.
std::optional<std::pair<double, std::string>> number_and_unit(std::string_view text) {
  std::size_t i = 0;
  bool dot = false, digits = false;
  while (i < text.size() &&
         (std::isdigit(static_cast<unsigned char>(text[i])) || (text[i] == '.' && !dot))) {
    dot = dot || text[i] == '.';
    digits = digits || text[i] != '.';
    ++i;
  }
  if (!digits || i > 30) return std::nullopt;
  const double value = std::stod(std::string(text.substr(0, i)));
  std::string unit;
  for (char c : text.substr(i))
    unit += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return std::make_pair(value, unit);
}

}  // namespace

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
  auto parsed = number_and_unit(text);
  if (!parsed) return std::nullopt;
  const auto [value, unit] = *parsed;
  double ms = 0;
  if (unit == "ms")
    ms = value;
  else if (unit.empty() || unit == "s")
    ms = value * 1e3;
  else if (unit == "m")
    ms = value * 60e3;
  else if (unit == "h")
    ms = value * 3600e3;
  else
    return std::nullopt;
  // At most ~31 years: every duration becomes int64 nanoseconds somewhere (caf::timespan),
  // and a longer one would wrap around.
  if (ms > 1e12) return std::nullopt;
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(ms)));
}

std::optional<int64_t> parse_size(std::string_view text) {
  auto parsed = number_and_unit(text);
  if (!parsed) return std::nullopt;
  const auto [value, unit] = *parsed;
  double factor = 0;
  if (unit.empty() || unit == "b")
    factor = 1;
  else if (unit == "k" || unit == "kb" || unit == "kib")
    factor = 1024.0;
  else if (unit == "m" || unit == "mb" || unit == "mib")
    factor = 1024.0 * 1024;
  else if (unit == "g" || unit == "gb" || unit == "gib")
    factor = 1024.0 * 1024 * 1024;
  else
    return std::nullopt;
  const double bytes = value * factor;
  if (bytes > 9e18) return std::nullopt;
  return static_cast<int64_t>(std::llround(bytes));
}

std::optional<int64_t> parse_cpus(std::string_view text) {
  auto parsed = number_and_unit(text);
  if (!parsed || !parsed->second.empty() || parsed->first > 1e6) return std::nullopt;
  return static_cast<int64_t>(std::llround(parsed->first * 1e9));
}

std::optional<double> parse_decimal(std::string_view text) {
  auto parsed = number_and_unit(text);
  if (!parsed || !parsed->second.empty()) return std::nullopt;
  return parsed->first;
}

std::string format_duration(std::chrono::milliseconds d) {
  const int64_t ms = d.count();
  if (ms == 0) return "0s";
  if (ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
  if (ms % 1'000 == 0) return std::to_string(ms / 1'000) + "s";
  return std::to_string(ms) + "ms";
}

std::string format_size(int64_t bytes) {
  if (bytes != 0) {
    for (const auto& [factor, unit] :
         {std::pair{int64_t{1} << 30, "g"}, std::pair{int64_t{1} << 20, "m"},
          std::pair{int64_t{1} << 10, "k"}}) {
      if (bytes % factor == 0) return std::to_string(bytes / factor) + unit;
    }
  }
  return std::to_string(bytes);
}

std::string format_cpus(int64_t nano_cpus) {
  std::string out = std::to_string(nano_cpus / 1'000'000'000);
  int64_t fraction = nano_cpus % 1'000'000'000;
  if (fraction == 0) return out;
  std::string digits = std::to_string(fraction);
  digits.insert(0, 9 - digits.size(), '0');
  while (digits.back() == '0') digits.pop_back();
  return out + "." + digits;
}

}  // namespace corral::actors
