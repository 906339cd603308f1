// `corral node`: the supervisor as a long-lived service over CAF's network transport.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "actors/policy_file.hpp"
#include "app/remote.hpp"
#include "app/system_config.hpp"

namespace corral::app {

struct node_options {
  node_address listen{"127.0.0.1", 4747};
  std::string name;  // empty: the hostname
  // The operator's policy (its budget.sandboxes is the node's capacity), and where it came
  // from, for the log: --policy FILE, /etc/corral/policy.json, or the built-in default.
  actors::policy policy = actors::policy::node_default();
  std::string policy_source = "built-in node default";
  std::chrono::milliseconds grace{std::chrono::seconds(10)};
  bool keep_sandboxes = false;
  std::size_t warm = 0;  // warm pool of the default spec (runtime_config.warm)
  std::size_t warm_max = 0;
  std::string audit_log;            // empty: no audit
  std::string log_format = "text";  // text | json
  std::string log_level = "info";
  tls_options tls;  // the --tls-* files, or --tls-dir (app/tls_material.hpp)
  // `corral node issue-cert NAME --out DIR [--days N]`: issue a certificate, do not serve.
  struct {
    std::string name;
    std::string out;
    uint64_t days = 365;
  } issue;
};

// Every connection is mutual TLS, loopback included: a client needs a certificate of the
// node's CA (made on first start in --tls-dir, default /var/lib/corral/tls) before a byte of
// CAF's protocol is read.
// Runs until SIGTERM/SIGINT: then stops accepting, gives running execs `grace`, releases
// (or keeps) its sandboxes and returns 0. A second signal exits at once (exit_code::second_signal).
int run_node(const node_options& options);

// `corral node issue-cert`: a client certificate of the CA in options.tls.dir (default
// /var/lib/corral/tls) written to options.issue.out; returns 0 or exit_code::error (reported).
int issue_cert(const node_options& options);

}  // namespace corral::app
