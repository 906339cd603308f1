// Private to the request checks' split sources (actors/policy.cpp, policy_text.cpp,
// policy_workspace.cpp), not a public header: the helpers more than one of them needs (how an
// error names a refused value, the request-text and workspace checks plan_sandbox and
// plan_exec call first).
#pragma once

#include <string>
#include <string_view>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "actors/policy.hpp"

namespace corral::actors::policy_detail {

// A request beyond the policy: names what was refused and the key that would allow it.
caf::error violation(const std::string& what, std::string_view key);

// A value as an error text shows it: quoted, cut at 80 bytes, control bytes (and invalid
// UTF-8) escaped.
std::string shown(std::string_view s);

// Every string of a sandbox request (actors/policy_text.cpp).
caf::error check_spec_text(const std::string& key, const messages::sandbox_spec& spec);
// Every string of an exec request.
caf::error check_exec_text(const messages::exec_request& request);

// An absolute, normalised path inside the container other than / (actors/policy_workspace.cpp).
caf::error check_container_path(std::string_view what, const std::string& path);

// The workspace a spec asks for, checked against the host and the policy.
caf::expected<workspace_identity> check_workspace(const runtime_config& cfg,
                                                  const messages::workspace_mount& ws,
                                                  const std::string& engine_socket);

}  // namespace corral::actors::policy_detail
