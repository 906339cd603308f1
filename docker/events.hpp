// Events area of the Engine API: one long-lived stream, delivered event by event.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "docker/json_lines.hpp"

namespace corral::docker {

struct events_options {
  // {"type": {"container"}, "label": {"corral.managed-by=corral"}, "event": {"die", "oom"}}
  std::map<std::string, std::vector<std::string>> filters;
  std::string since;  // unix time; empty: from now
};

}  // namespace corral::docker
