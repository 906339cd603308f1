#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "app/cli_values.hpp"

using corral::app::parse_cpus;
using corral::app::parse_decimal;
using corral::app::parse_duration;
using corral::app::parse_integer;
using corral::app::parse_size;
using namespace std::chrono_literals;

TEST_CASE("parse_duration reads ms, s, m and h, and a bare number as seconds", "[cli]") {
  CHECK(parse_duration("500ms") == 500ms);
  CHECK(parse_duration("30s") == 30s);
  CHECK(parse_duration("5m") == 5min);
  CHECK(parse_duration("2h") == 2h);
  CHECK(parse_duration("1.5s") == 1500ms);
  CHECK(parse_duration("10") == 10s);
  CHECK(parse_duration("0") == 0ms);
  CHECK(parse_duration("0.5m") == 30s);
  // Units are case-insensitive.
  CHECK(parse_duration("2S") == 2s);
  CHECK(parse_duration("250MS") == 250ms);
}

TEST_CASE("parse_duration refuses malformed and negative values", "[cli]") {
  for (const char* bad : {"", "-1s", "5x", "ms", "1e9h", "s", ".", "1.2.3s", "1 s", " 1s", "1s ",
                          "+1s", "1sec", "5min", "1d", "nan", "inf", "0x10"}) {
    INFO("input: '" << bad << "'");
    CHECK_FALSE(parse_duration(bad).has_value());
  }
}

TEST_CASE("parse_duration refuses values too large to hold", "[cli]") {
  CHECK_FALSE(parse_duration("999999999999999999999999h").has_value());
  CHECK_FALSE(parse_duration(std::string(40, '9') + "s").has_value());
  // 1e12 ms (about 31 years) is the ceiling: every duration becomes int64 nanoseconds in a
  // caf::timespan, and 5124096h would wrap around there to a negative span.
  CHECK(parse_duration("277777h") == std::chrono::hours(277777));
  CHECK_FALSE(parse_duration("277778h").has_value());
  CHECK_FALSE(parse_duration("5124096h").has_value());
  const auto longest = parse_duration("1000000000000ms");
  REQUIRE(longest.has_value());
  CHECK(std::chrono::duration_cast<std::chrono::nanoseconds>(*longest).count() > 0);
}

TEST_CASE("parse_size reads bytes and binary multiples", "[cli]") {
  CHECK(parse_size("1024") == 1024);
  CHECK(parse_size("0") == 0);
  CHECK(parse_size("512k") == 512 * 1024);
  CHECK(parse_size("256m") == 256LL << 20);
  CHECK(parse_size("1g") == 1LL << 30);
  CHECK(parse_size("1.5g") == 3LL << 29);
  CHECK(parse_size("64MiB") == 64LL << 20);
  CHECK(parse_size("64mb") == 64LL << 20);
  CHECK(parse_size("2KiB") == 2048);
  CHECK(parse_size("3GB") == 3LL << 30);
  CHECK(parse_size("100b") == 100);
}

TEST_CASE("parse_size refuses malformed, negative and oversized values", "[cli]") {
  for (const char* bad :
       {"", "-1", "12q", "99999999999g", "k", "1t", "1 m", "1e3", "1.2.3m", "0x10", "1mibs"}) {
    INFO("input: '" << bad << "'");
    CHECK_FALSE(parse_size(bad).has_value());
  }
}

TEST_CASE("parse_cpus reads a CPU count as nano-CPUs", "[cli]") {
  CHECK(parse_cpus("1") == 1'000'000'000);
  CHECK(parse_cpus("0.5") == 500'000'000);
  CHECK(parse_cpus("2.25") == 2'250'000'000);
  CHECK(parse_cpus("16") == 16'000'000'000);
  for (const char* bad : {"", "x", "1m", "-1", "1.5.1", "2 "}) {
    INFO("input: '" << bad << "'");
    CHECK_FALSE(parse_cpus(bad).has_value());
  }
  CHECK_FALSE(parse_cpus("2000000").has_value());
}

TEST_CASE("parse_integer reads decimal whole numbers and nothing else", "[cli]") {
  CHECK(parse_integer("0") == 0);
  CHECK(parse_integer("42") == 42);
  CHECK(parse_integer("-3") == -3);
  CHECK(parse_integer("4096") == 4096);
  for (const char* bad :
       {"", "-", "x", "1.5", "1e3", "0x10", " 1", "1 ", "+1", "1k", "9999999999999999999"}) {
    INFO("input: '" << bad << "'");
    CHECK_FALSE(parse_integer(bad).has_value());
  }
}

TEST_CASE("parse_decimal reads a non-negative number without a unit", "[cli]") {
  CHECK(parse_decimal("0") == 0.0);
  CHECK(parse_decimal("0.05") == 0.05);
  CHECK(parse_decimal("2") == 2.0);
  for (const char* bad : {"", "x", "-1", "1.5.1", "2 ", "1m", "nan", "inf"}) {
    INFO("input: '" << bad << "'");
    CHECK_FALSE(parse_decimal(bad).has_value());
  }
}
