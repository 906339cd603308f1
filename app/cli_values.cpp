#include "app/cli_values.hpp"

#include <cctype>

namespace corral::app {

std::optional<int64_t> parse_integer(std::string_view text) {
  const bool negative = !text.empty() && text.front() == '-';
  const auto digits = text.substr(negative ? 1 : 0);
  if (digits.empty() || digits.size() > 18) return std::nullopt;
  int64_t value = 0;
  for (char c : digits) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return negative ? -value : value;
}

}  // namespace corral::app
