#include "docker/error.hpp"

#include "docker/json.hpp"

namespace corral::docker {

const char* to_string(errc code) noexcept {
  switch (code) {
    case errc::not_found:
      return "not_found";
    case errc::conflict:
      return "conflict";
    case errc::invalid_request:
      return "invalid_request";
    case errc::engine_error:
      return "engine_error";
    case errc::engine_unavailable:
      return "engine_unavailable";
    case errc::api_too_old:
      return "api_too_old";
    case errc::timeout:
      return "timeout";
    case errc::cancelled:
      return "cancelled";
    case errc::protocol:
      return "protocol";
    case errc::too_large:
      return "too_large";
  }
  return "unknown";
}

std::string error::describe() const {
  std::string out = to_string(code);
  if (http_status != 0) out += " (" + std::to_string(http_status) + ")";
  if (!message.empty()) out += ": " + message;
  return out;
}

error error_from_response(int http_status, std::string_view body) {
  errc code = errc::engine_error;
  switch (http_status) {
    case 400:
      code = errc::invalid_request;
      break;
    case 404:
      code = errc::not_found;
      break;
    case 409:
      code = errc::conflict;
      break;
    default:
      break;
  }
  std::string message;
  if (auto parsed = json_field_string(body, "message")) {
    message = std::move(*parsed);
  } else {
    message.assign(body);
    while (!message.empty() && (message.back() == '\n' || message.back() == '\r'))
      message.pop_back();
  }
  if (message.empty()) message = "HTTP status " + std::to_string(http_status);
  return error{code, std::move(message), http_status};
}

}  // namespace corral::docker
