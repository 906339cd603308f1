// How a failed request between actors reaches a caller: always as a corral error. CAF's own
// codes (a dead receiver, a request timeout, a lost node) are a contract break for callers,
// who branch on corral_errc.
#pragma once

#include <string_view>

#include <caf/error.hpp>

#include "messages/errors.hpp"

namespace corral::actors {

// A corral error passes unchanged. A CAF timeout becomes `timeout`; anything else CAF says
// (request_receiver_down, remote_link_unreachable, ...) becomes `when_gone`. `doing` says
// what was asked, e.g. "running a command in sandbox k1".
caf::error from_actor(const caf::error& err, messages::corral_errc when_gone,
                      std::string_view doing);

}  // namespace corral::actors
