#include "actors/actor_errors.hpp"

#include <string>

#include <caf/atom.hpp>
#include <caf/sec.hpp>

namespace corral::actors {

caf::error from_actor(const caf::error& err, messages::corral_errc when_gone,
                      std::string_view doing) {
  using messages::corral_errc;
  if (err.category() == caf::atom(messages::error_category_name)) return err;
  const auto code = err == caf::sec::request_timeout ? corral_errc::timeout : when_gone;
  return messages::make_error(code, std::string(doing) + ": " + messages::describe(err));
}

}  // namespace corral::actors
