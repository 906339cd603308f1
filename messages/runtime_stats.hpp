// Counters a supervisor reports about itself.
#pragma once

#include <cstdint>
#include <string>

#include <caf/meta/type_name.hpp>

namespace corral::messages {

struct runtime_stats {
  std::string runtime_name;
  uint64_t live_sandboxes = 0;
  uint64_t capacity = 0;
  uint64_t created_total = 0;
  uint64_t released_total = 0;
  uint64_t pruned_total = 0;
  uint64_t lost_total = 0;
  uint64_t adopted_total = 0;
  uint64_t execs_total = 0;
  uint64_t execs_in_flight = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, runtime_stats& x) {
  return f(caf::meta::type_name("runtime_stats"), x.runtime_name, x.live_sandboxes, x.capacity,
           x.created_total, x.released_total, x.pruned_total, x.lost_total, x.adopted_total,
           x.execs_total, x.execs_in_flight);
}

bool operator==(const runtime_stats& a, const runtime_stats& b);

}  // namespace corral::messages
