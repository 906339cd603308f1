#include "actors/engine_errors.hpp"

#include <string>

#include "messages/errors.hpp"

namespace corral::actors {

caf::error from_engine(const docker::error& e, std::string_view doing) {
  using messages::corral_errc;
  corral_errc code = corral_errc::engine_error;
  switch (e.code) {
    case docker::errc::engine_unavailable:
      code = corral_errc::engine_unavailable;
      break;
    case docker::errc::timeout:
      code = corral_errc::timeout;
      break;
    case docker::errc::cancelled:
      code = corral_errc::shutting_down;
      break;
    default:
      break;
  }
  return messages::make_error(code, std::string(doing) + ": " + e.describe());
}

}  // namespace corral::actors
