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
  // The warm pool (all its specs together): members started and unbound, members being made,
  // the size it refills toward; acquires it served (hits) and ones that found it empty
  // (misses: cold-created); the sum of the hits' claim times and of the members' make times
  // (create to agent ready), in microseconds, for their means.
  uint64_t pool_ready = 0;
  uint64_t pool_warming = 0;
  uint64_t pool_target = 0;
  uint64_t pool_hits = 0;
  uint64_t pool_misses = 0;
  uint64_t pool_claim_us_total = 0;
  uint64_t pool_refills = 0;
  uint64_t pool_refill_us_total = 0;

  // Every field, in declaration order (tests check that what crossed the network arrived equal).
  bool operator==(const runtime_stats&) const = default;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, runtime_stats& x) {
  return f(caf::meta::type_name("runtime_stats"), x.runtime_name, x.live_sandboxes, x.capacity,
           x.created_total, x.released_total, x.pruned_total, x.lost_total, x.adopted_total,
           x.execs_total, x.execs_in_flight, x.pool_ready, x.pool_warming, x.pool_target,
           x.pool_hits, x.pool_misses, x.pool_claim_us_total, x.pool_refills,
           x.pool_refill_us_total);
}

}  // namespace corral::messages
