#include "app/engine_report.hpp"

#include <chrono>
#include <memory>

#include "docker/blocking.hpp"
#include "docker/client.hpp"
#include "docker/system.hpp"

namespace corral::app {

engine_facts probe_engine(const std::string& socket) {
  engine_facts facts;
  facts.socket = socket;
  docker::client_options options;
  options.http.socket_path = socket;
  options.http.default_timeout = std::chrono::seconds(10);
  auto client = std::make_unique<docker::client>(options);
  auto info = docker::blocking<docker::system_info>([&](auto done) { client->info(done); });
  if (!info) {
    facts.error = info.err().describe();
    return facts;
  }
  facts.reachable = true;
  facts.version = info->server_version;
  facts.userns_remapped = info->userns_remapped();
  facts.live_restore = info->live_restore;
  for (const auto& option : info->security_options) {
    if (!facts.security_options.empty()) facts.security_options += "; ";
    facts.security_options += option;
  }
  return facts;
}

std::string describe_engine(const engine_facts& facts) {
  if (!facts.reachable) return "no engine answers at " + facts.socket + ": " + facts.error;
  return "Docker " + facts.version + " at " + facts.socket + ": user namespaces " +
         (facts.userns_remapped ? "remapped (uid 0 in a sandbox is no host user)"
                                : "NOT remapped (uid 0 in a sandbox is root on the host for "
                                  "every file it reaches)") +
         ", live-restore " + (facts.live_restore ? "on" : "off") + ", security options: " +
         (facts.security_options.empty() ? "none" : facts.security_options);
}

std::string check_engine_for(const actors::policy& policy, const engine_facts& facts) {
  if (!policy.require_userns_remap || !policy.reaches_host_files()) return {};
  const std::string what = policy.users.allow_root ? "root in sandboxes (users.allow_root)"
                                                   : "writable workspaces (workspace_roots)";
  if (!facts.reachable) {
    return "the policy allows " + what +
           ", which needs an engine that remaps user namespaces, and the engine could not be "
           "asked: " +
           facts.error;
  }
  if (facts.userns_remapped) return {};
  return "the policy allows " + what + ", but the engine at " + facts.socket +
         " does not remap user namespaces: uid 0 in a sandbox would be root on the host for "
         "every file it reaches. Start dockerd with --userns-remap=default, or set "
         "\"require_userns_remap\": false in the policy to accept that";
}

}  // namespace corral::app
