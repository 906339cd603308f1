// A planned sandbox as the engine finally gets it: with the agent as PID 1 (use_agent), its
// warm pool (pool_hash: what a pool member must share with it), and the container names that
// say who holds it (a pool member's, an unclaimed one's, a key's claim). Apart from policy.cpp
// because none of it checks a request: it reshapes and names what was already checked.
#include "actors/policy.hpp"

#include "actors/spec_record.hpp"
#include "messages/agent_protocol.hpp"

#include <algorithm>

namespace corral::actors {

// g++ 12 at -O2 warns falsely (-Warray-bounds, -Wstringop-overflow; GCC bug 105651) on the
// strings concatenated and moved below once they stand in a file this small: it inlines the
// move and sees a memcpy out of bounds that cannot happen (the whole policy.cpp it came from
// inlined less). clang does not warn.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
void use_agent(sandbox_plan& plan, const runtime_config& cfg, const std::string& sandbox_id) {
  auto& c = plan.create;
  auto& h = c.host;
  plan.agent = true;
  plan.sandbox_id = sandbox_id;
  plan.run_dir = cfg.agent_run_root + "/" + sandbox_id;
  plan.sandbox_env = std::move(c.env);
  c.env.clear();
  if (!plan.egress_hosts.empty())
    for (auto& kv : egress_env()) plan.sandbox_env.push_back(std::move(kv));
  // The keep-alive is the agent itself; a `command` of the spec is its first command.
  const bool keep_alive = c.cmd == std::vector<std::string>{"sleep", "2147483647"};
  plan.main_command = keep_alive ? std::vector<std::string>{} : std::move(c.cmd);
  c.entrypoint = {agent_protocol::agent_path_inside};
  c.cmd = {"--socket",
           std::string(agent_protocol::run_dir_inside) + "/" + agent_protocol::socket_name};
  c.user = "0:0";
  h.init = false;
  plan.command_caps = h.cap_add;
  for (const char* cap : {"SETUID", "SETGID", "KILL", "SETPCAP"})
    if (std::find(h.cap_add.begin(), h.cap_add.end(), cap) == h.cap_add.end())
      h.cap_add.push_back(cap);
  // A negative OomScoreAdj for the agent fails the container's start on an engine without
  // CAP_SYS_RESOURCE (this one): each command raises its own to 1000 instead (app/agent/).
  h.binds.push_back(cfg.agent_path + ":" + agent_protocol::agent_path_inside + ":ro");
  h.binds.push_back(plan.run_dir + ":" + agent_protocol::run_dir_inside + ":rw");
  c.labels[label_sandbox_id] = sandbox_id;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

bool is_claim_label(std::string_view label) {
  for (const char* l : {label_key, label_principal, label_spec, label_created_at, label_deadline,
                        label_spec_hash, label_claim, label_sandbox_id})
    if (label == l) return true;
  return false;
}

std::string pool_hash(const sandbox_plan& plan) {
  if (!plan.workspace.container_path.empty()) return {};
  const auto& c = plan.create;
  const auto& h = c.host;
  std::string text;
  auto add = [&text](std::string_view field, std::string_view value) {
    text.append(field).append("=").append(std::to_string(value.size())).append(":");
    text.append(value).append("\n");
  };
  auto add_list = [&add](std::string_view field, const std::vector<std::string>& values) {
    for (const auto& v : values) add(field, v);
  };
  add("image", c.image);
  add_list("entrypoint", c.entrypoint);
  add("user", c.user);
  add("workdir", c.working_dir);
  for (const auto& [k, v] : c.labels)
    if (!is_claim_label(k)) add("label", k + "=" + v);
  add("stop", c.stop_signal + "/" + std::to_string(c.stop_timeout));
  add("tty", std::to_string(c.tty) + std::to_string(c.open_stdin));
  add_list("bind", h.binds);
  for (const auto& [path, options] : h.tmpfs) add("tmpfs", path + ":" + options);
  add("limits", std::to_string(h.memory) + "/" + std::to_string(h.memory_swap) + "/" +
                    std::to_string(h.nano_cpus) + "/" + std::to_string(h.cpu_shares) + "/" +
                    std::to_string(h.pids_limit));
  add_list("cap_drop", h.cap_drop);
  add_list("cap_add", h.cap_add);
  add_list("security", h.security_opt);
  add("flags", std::to_string(h.readonly_rootfs) + std::to_string(h.init) +
                   std::to_string(h.auto_remove) + "/" + std::to_string(h.oom_score_adj));
  add("network", h.network_mode);
  return sha256_hex(text, 8);
}

std::string pool_member_name(const std::string& sandbox_id) {
  return "corral_pool-" + sandbox_id;
}

bool is_pool_member_name(std::string_view name) {
  if (!name.empty() && name.front() == '/') name.remove_prefix(1);  // as the engine lists it
  return name.rfind("corral_pool-", 0) == 0;
}

std::string unclaimed_name(const std::string& sandbox_id) {
  return "corral_new-" + sandbox_id;
}

bool is_unclaimed_name(std::string_view name) {
  if (!name.empty() && name.front() == '/') name.remove_prefix(1);
  return name.rfind("corral_new-", 0) == 0;
}

// SHA-256, because the readable part maps '/' and '@' away and is cut short: only the digest
// keeps two keys' names apart.
std::string claim_name(const std::string& runtime, const std::string& key) {
  std::string readable = key.substr(0, 40);
  std::replace(readable.begin(), readable.end(), '/', '.');
  std::replace(readable.begin(), readable.end(), '@', '_');
  return "corral-" + readable + "-" + sha256_hex(runtime + "\n" + key, 10);
}

}  // namespace corral::actors
