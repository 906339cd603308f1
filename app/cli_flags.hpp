// Kinds of command-line flag for CLI11, each value read by its parser in app/cli_values.hpp:
// a malformed value is refused with CLI::ValidationError naming the flag, the value and what
// was expected ("--timeout: '5x' is not a duration (like 500ms, 30s, 5m)").
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

#include "app/cli_values.hpp"

namespace corral::app {

// A flag ("--name,-n") whose value `parse` reads (nullopt: malformed, refused as "not `what`")
// and `store` keeps.
template <class Parse, class Store>
CLI::Option* value_flag(CLI::App& cmd, const std::string& names, const std::string& type,
                        const std::string& what, Parse parse, Store store,
                        const std::string& help) {
  const std::string flag = names.substr(0, names.find(','));
  return cmd
      .add_option_function<std::string>(
          names,
          [=](const std::string& text) {
            auto value = parse(text);
            if (!value) throw CLI::ValidationError(flag, "'" + text + "' is not " + what);
            store(*value);
          },
          help)
      ->type_name(type);
}

template <class Store>
CLI::Option* duration_flag(CLI::App& cmd, const std::string& names, Store store,
                           const std::string& help) {
  return value_flag(cmd, names, "D", "a duration (like 500ms, 30s, 5m)", parse_duration, store,
                    help);
}

// A size; `positive`: zero is refused too.
template <class Store>
CLI::Option* size_flag(CLI::App& cmd, const std::string& names, bool positive, Store store,
                       const std::string& help) {
  auto parse = [positive](std::string_view text) {
    auto size = parse_size(text);
    return size && (*size > 0 || !positive) ? size : std::nullopt;
  };
  return value_flag(cmd, names, "SIZE",
                    std::string(positive ? "a positive size" : "a size") + " (like 64k, 256m, 1g)",
                    parse, store, help);
}

// No upper bound, for count_flag.
inline constexpr int64_t unbounded = int64_t{1} << 50;

// A whole number in [min, max], stored as T.
template <class T>
CLI::Option* count_flag(CLI::App& cmd, const std::string& names, T& out, int64_t min, int64_t max,
                        const std::string& help) {
  auto in_range = [=](std::string_view text) {
    auto n = parse_integer(text);
    return n && *n >= min && *n <= max ? n : std::nullopt;
  };
  const std::string what = max == unbounded ? "a whole number of at least " + std::to_string(min)
                                            : "a whole number from " + std::to_string(min) +
                                                  " to " + std::to_string(max);
  return value_flag(
      cmd, names, "N", what, in_range, [&out](int64_t n) { out = static_cast<T>(n); }, help);
}

// A non-negative decimal up to `max` ("a number from 0 to 5", in `what`).
inline CLI::Option* decimal_flag(CLI::App& cmd, const std::string& names, double& out, double max,
                                 const std::string& what, const std::string& help) {
  auto in_range = [=](std::string_view text) {
    auto x = parse_decimal(text);
    return x && *x <= max ? x : std::nullopt;
  };
  return value_flag(
      cmd, names, "X", what, in_range, [&out](double x) { out = x; }, help);
}

// --env K=V, repeatable; each pair goes to every map in `into`.
inline CLI::Option* env_flag(CLI::App& cmd,
                             const std::vector<std::map<std::string, std::string>*>& into,
                             const std::string& help) {
  return cmd
      .add_option_function<std::vector<std::string>>(
          "--env,-e",
          [into](const std::vector<std::string>& pairs) {
            for (const auto& text : pairs) {
              const auto eq = text.find('=');
              if (eq == std::string::npos || eq == 0)
                throw CLI::ValidationError("--env", "wants KEY=VALUE, got '" + text + "'");
              for (auto* env : into) (*env)[text.substr(0, eq)] = text.substr(eq + 1);
            }
          },
          help)
      ->type_name("K=V")
      ->allow_extra_args(false);
}

}  // namespace corral::app
