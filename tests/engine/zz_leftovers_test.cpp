// Runs last (this file links last, and Catch runs tests in declaration order; ctest runs it
// as its own process after the others): no test may leave a container on the engine.
#include "engine_fixture.hpp"

using namespace corral_test;

TEST_CASE_METHOD(engine_fixture, "zz: no test container is left behind", "[engine][cleanup]") {
  container_list_options options;
  options.all = true;
  options.filters["label"] = {managed_by_filter};
  auto left = blocking<std::vector<container_summary>>(
      [&](auto done) { docker().container_list(options, done); });
  REQUIRE_OK(left);
  for (const auto& c : *left) {
    const auto test = c.labels.find("corral.test");
    UNSCOPED_INFO("left behind: " << (c.names.empty() ? c.id : c.names.front()) << " (" << c.state
                                  << ") by test '" << (test == c.labels.end() ? "?" : test->second)
                                  << "'");
  }
  REQUIRE(left->empty());
}
