#include "app/system_config.hpp"

#include <fstream>
#include <iterator>
#include <utility>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "messages/registration.hpp"

namespace corral::app {

std::string check_tls(const tls_options& tls) {
  if (!tls.enabled()) return {};
  if (tls.certificate.empty() || tls.key.empty() || tls.ca.empty()) {
    return "TLS needs all three of --tls-cert, --tls-key and --tls-ca";
  }
  for (const auto& [flag, path] :
       {std::pair{"--tls-cert", &tls.certificate}, std::pair{"--tls-key", &tls.key},
        std::pair{"--tls-ca", &tls.ca}}) {
    std::ifstream in(*path);
    if (!in) return std::string(flag) + ": cannot read " + *path;
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.find("-----BEGIN ") == std::string::npos)
      return std::string(flag) + ": " + *path + " is not PEM";
  }
  return {};
}

void configure_system(caf::actor_system_config& cfg, const system_options& options) {
  messages::add_message_types(cfg);
  cfg.set("logger.verbosity", caf::atom("quiet"));
  if (options.sharing_scheduler) cfg.set("scheduler.policy", caf::atom("sharing"));
  if (options.lean) {
    cfg.set("scheduler.max-threads", size_t{1});
    cfg.set("middleman.workers", size_t{0});
  }
  if (!options.network) return;
  cfg.load<caf::io::middleman>();
  cfg.set("middleman.app-identifiers", std::vector<std::string>{"corral"});
}

}  // namespace corral::app
