// corral's CAF type ID block. It starts 1000 above first_custom_type_id so a host
// application can keep its own block at first_custom_type_id.
#pragma once

#include <string>
#include <vector>

#include <caf/type_id.hpp>

#include "messages/interfaces.hpp"

namespace corral::messages {
inline constexpr caf::type_id_t first_type_id = caf::first_custom_type_id + 1000;
}

CAF_BEGIN_TYPE_ID_BLOCK(corral, corral::messages::first_type_id)
CAF_ADD_TYPE_ID(corral, (corral::messages::access_mode))
CAF_ADD_TYPE_ID(corral, (corral::messages::sandbox_status))
CAF_ADD_TYPE_ID(corral, (corral::messages::workspace_mount))
CAF_ADD_TYPE_ID(corral, (corral::messages::tmpfs_mount))
CAF_ADD_TYPE_ID(corral, (corral::messages::sandbox_spec))
CAF_ADD_TYPE_ID(corral, (corral::messages::sandbox_info))
CAF_ADD_TYPE_ID(corral, (std::vector<corral::messages::sandbox_info>))
CAF_ADD_TYPE_ID(corral, (corral::messages::exec_end))
CAF_ADD_TYPE_ID(corral, (corral::messages::output_stream))
CAF_ADD_TYPE_ID(corral, (corral::messages::exec_request))
CAF_ADD_TYPE_ID(corral, (corral::messages::output_chunk))
CAF_ADD_TYPE_ID(corral, (corral::messages::exec_result))
CAF_ADD_TYPE_ID(corral, (corral::messages::runtime_stats))
CAF_ADD_TYPE_ID(corral, (corral::messages::release_mode))
CAF_ADD_TYPE_ID(corral, (std::vector<std::string>))
CAF_END_TYPE_ID_BLOCK(corral)
