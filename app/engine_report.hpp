// What the engine a program talks to does for safety: its version, whether it remaps user
// namespaces (uid 0 in a sandbox is then no host user) and keeps containers across its own
// restarts. Reported by `corral version` and at a node's start; a node checks its policy
// against it.
#pragma once

#include <string>

#include "actors/policy_file.hpp"

namespace corral::app {

struct engine_facts {
  bool reachable = false;
  std::string socket;
  std::string version;
  bool userns_remapped = false;
  bool live_restore = false;
  std::string security_options;  // as the engine lists them, comma-separated
  std::string error;             // why it is not reachable
};

// Asks the engine at `socket` (GET /info), waiting at most 10 s. Blocks: never call it on an
// actor's thread.
engine_facts probe_engine(const std::string& socket);

// One line: "Docker 20.10.24 at /var/run/docker.sock: user namespaces remapped, ...".
std::string describe_engine(const engine_facts& facts);

// Empty when `policy` may run on the engine; else why not (a node does not start).
std::string check_engine_for(const actors::policy& policy, const engine_facts& facts);

}  // namespace corral::app
