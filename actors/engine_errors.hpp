// How an adapter error reaches a caller: as a corral error that keeps the engine's words.
#pragma once

#include <string_view>

#include <caf/error.hpp>

#include "docker/error.hpp"

namespace corral::actors {

// `doing` says what corral was doing, e.g. "creating the sandbox".
caf::error from_engine(const docker::error& e, std::string_view doing);

}  // namespace corral::actors
