// A runtime's egress: one proxy (actors/egress_proxy.hpp), started with the first sandbox that
// asks for egress, and per sandbox a unix socket in its run directory plus the bundle of
// certificates its commands trust. Shared by every container actor of the runtime (their
// runtime_config holds it). No CAF here.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "actors/policy_file.hpp"

namespace corral {
class egress_proxy;
}

namespace corral::actors {

struct egress_settings {
  std::string ca_dir = "/var/lib/corral/egress-ca";       // the proxy's CA (made on first use)
  std::string log_path = "/var/log/corral/egress.jsonl";  // a JSON line per decision
};

class egress_service {
 public:
  explicit egress_service(egress_settings settings);
  ~egress_service();
  egress_service(const egress_service&) = delete;
  egress_service& operator=(const egress_service&) = delete;

  // Opens sandbox `sandbox_id`'s egress: the rules are the policy's egress section narrowed
  // to `hosts`, with the credentials read from their files now; the socket (owned by uid/gid,
  // mode 0600) and the trust bundle (0644) go into `run_dir`. Returns what went wrong, or empty.
  std::string open(const egress_policy& policy, const std::vector<std::string>& hosts,
                   const std::string& sandbox_id, const std::string& run_dir, uint32_t uid,
                   uint32_t gid);
  // The hosts the sandbox was granted when its egress was first opened (by this runtime or
  // an earlier one of its name), from a record beside the run directories that no sandbox can
  // reach; empty if none.
  static std::vector<std::string> granted_hosts(const std::string& run_dir,
                                                const std::string& sandbox_id);
  // Closes the sandbox's socket and every connection through it, and forgets its grant (the
  // sandbox is being removed). Idempotent.
  void close(const std::string& sandbox_id, const std::string& run_dir);

 private:
  egress_settings settings_;
  std::mutex mutex_;
  std::unique_ptr<egress_proxy> proxy_;  // made by the first open
};

}  // namespace corral::actors
