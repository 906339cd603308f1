// Concurrent acquires of the same keys: one container per key, whatever the interleaving.
#include <set>

#include "runtime_fixture.hpp"

using namespace corral::runtime_tests;

TEST_CASE_METHOD(runtime_fixture, "50 concurrent acquires on 10 keys make 10 containers",
                 "[runtime][concurrency]") {
  constexpr int keys = 10;
  constexpr int requests = 50;
  // Several callers, each with its requests in flight at once: all 50 are sent before the
  // first answer is read.
  std::vector<std::unique_ptr<caf::scoped_actor>> callers;
  for (int i = 0; i < 5; ++i) callers.push_back(std::make_unique<caf::scoped_actor>(sys()));
  const auto& s = sup();
  using handle =
      decltype((*callers[0])
                   ->request(s, caf::timespan{1s}, acquire_atom_v, std::string(), sandbox_spec{}));
  std::vector<std::pair<std::string, handle>> pending;
  for (int i = 0; i < requests; ++i) {
    auto key = "k" + std::to_string(i % keys);
    auto& caller = *callers[static_cast<std::size_t>(i) % callers.size()];
    pending.emplace_back(
        key, caller->request(s, caf::timespan{120s}, acquire_atom_v, key, sandbox_spec{}));
  }

  std::map<std::string, std::set<std::string>> ids_by_key;
  std::set<std::string> all_ids;
  int answered = 0;
  for (auto& [key, h] : pending) {
    h.receive(
        [&, key = key](sandbox_info& info) {
          ++answered;
          CHECK(info.key == key);
          CHECK(info.status == sandbox_status::ready);
          ids_by_key[key].insert(info.container_id);
          all_ids.insert(info.container_id);
        },
        [&](caf::error& err) { FAIL_CHECK("acquire failed: " << describe(err)); });
  }
  CHECK(answered == requests);
  CHECK(ids_by_key.size() == keys);
  for (const auto& [key, ids] : ids_by_key) {
    INFO("key " << key);
    CHECK(ids.size() == 1);
  }
  CHECK(all_ids.size() == keys);

  // The engine agrees: exactly those containers, one per key.
  auto listed = containers();
  CHECK(listed.size() == keys);
  std::set<std::string> engine_ids;
  for (const auto& c : listed) engine_ids.insert(c.id);
  CHECK(engine_ids == all_ids);

  auto st = stats();
  REQUIRE_OK(st);
  CHECK(st->created_total == keys);
  CHECK(st->live_sandboxes == keys);

  auto released = release_all();
  REQUIRE_OK(released);
  CHECK(*released == keys);
  CHECK(containers().empty());
}
