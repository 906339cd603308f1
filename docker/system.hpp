// System area of the Engine API: /_ping, /version, /info.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace corral::docker {

struct ping_response {
  std::string api_version;  // the API-Version header
  std::string os_type;      // the OSType header
};

struct version_response {
  std::string version;          // engine version, e.g. "20.10.24+dfsg1"
  std::string api_version;      // newest API the engine speaks
  std::string min_api_version;  // oldest API the engine still accepts
  std::string os;
  std::string arch;
  std::string kernel_version;
};

struct system_info {
  std::string id;
  std::string name;
  std::string server_version;
  std::string operating_system;
  std::string cgroup_driver;
  std::string cgroup_version;
  int64_t containers = 0;
  int64_t containers_running = 0;
  int64_t images = 0;
  int64_t ncpu = 0;
  int64_t mem_total = 0;
  // e.g. "name=seccomp,profile=default", "name=userns" (user namespaces remapped)
  std::vector<std::string> security_options;
  bool live_restore = false;
  std::string docker_root_dir;

  // The engine remaps user namespaces (dockerd --userns-remap): uid 0 in a sandbox is not root
  // on the host.
  bool userns_remapped() const;
};

}  // namespace corral::docker
