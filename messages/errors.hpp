// corral's error codes, a CAF error category: every failure a caller sees is one of these,
// with a message naming what was wrong.
#pragma once

#include <cstdint>
#include <string>

#include <caf/error.hpp>
#include <caf/message.hpp>  // CAF_ERROR_CODE_ENUM returns it: clang wants it complete

namespace corral::messages {

enum class corral_errc : uint8_t {
  policy_violation = 1,  // the spec asks for something the policy forbids
  invalid_request,       // malformed input: a bad key, limit, image name, argv
  not_found,             // no sandbox under that key
  capacity,              // the runtime holds its maximum of live sandboxes
  timeout,               // an operation ran out of time
  sandbox_lost,          // the container went away behind corral's back
  shutting_down,         // the runtime is stopping
  engine_unavailable,    // passed through from docker/: no engine answers
  engine_error,          // passed through from docker/: the engine refused or failed
  version_mismatch,      // client and node speak different protocol versions
  node_unavailable,      // no corral node answers at the given address
  conflict,              // the key holds a sandbox made with another spec
  name_in_use,           // another live runtime holds this runtime name on the engine
  egress_unavailable,    // the egress proxy cannot serve the sandbox (its CA, a credential file)
};

const char* to_string(corral_errc x) noexcept;

// The category atom under which CAF carries corral_errc.
inline constexpr char error_category_name[] = "corral";

// caf::error{code, message}: the message travels in the error's context.
caf::error make_error(corral_errc code, std::string message);

// "policy_violation: image 'x' is not allowed" (works on any caf::error).
std::string describe(const caf::error& err);

}  // namespace corral::messages

CAF_ERROR_CODE_ENUM(corral::messages::corral_errc, "corral")
