#include <catch2/catch.hpp>

#include <unordered_set>

#include "actors/random_id.hpp"

// Every sandbox's id names its run directory and its agent's socket: two sandboxes with one id
// would share an agent. Ids used to come from a generator seeded per actor from one 32-bit
// std::random_device draw, so 200,000 of them collided (birthday bound: ~4.6 expected pairs).
TEST_CASE("random ids: 200,000 draws are 16 hex digits and all distinct", "[unit][random]") {
  std::unordered_set<std::string> seen;
  constexpr std::size_t draws = 200000;
  seen.reserve(draws);
  for (std::size_t i = 0; i < draws; ++i) {
    auto id = corral::random_hex64();
    REQUIRE(id.size() == 16);
    REQUIRE(id.find_first_not_of("0123456789abcdef") == std::string::npos);
    seen.insert(std::move(id));
  }
  CHECK(seen.size() == draws);
}
