// The effective policy written back as JSON (to_json, shown by `corral policy`), every value
// filled in, in the file's own form ("512m", "1h"). Apart from the reader: it shares nothing
// with it but the struct.
#include "actors/policy_file.hpp"

#include <string>
#include <vector>

#include "actors/units.hpp"
#include "docker/json.hpp"

namespace corral::actors {

namespace {

std::string json_string(std::string_view s) {
  std::string out;
  docker::append_json_string(out, s);
  return out;
}

std::string json_strings(const std::vector<std::string>& items) {
  std::string out = "[";
  for (const auto& s : items) out += (out.size() > 1 ? ", " : "") + json_string(s);
  return out + "]";
}

std::string json_range(const id_range& r) {
  return "{\"min\": " + std::to_string(r.min) + ", \"max\": " + std::to_string(r.max) + "}";
}

}  // namespace

std::string to_json(const policy& p) {
  const auto& l = p.limits;
  const auto& d = p.defaults;
  auto size = [](auto n) { return json_string(format_size(static_cast<int64_t>(n))); };
  auto duration = [](std::chrono::milliseconds x) { return json_string(format_duration(x)); };
  std::string roots = "[";
  for (const auto& root : p.workspace_roots) {
    roots += std::string(roots.size() > 1 ? ", " : "") + "{\"path\": " + json_string(root.path) +
             ", \"writable\": " + (root.writable ? "true" : "false") + "}";
  }
  roots += "]";
  std::string out = "{\n";
  out += "  \"images\": " + json_strings(p.images) + ",\n";
  out += "  \"users\": {\"uids\": " + json_range(p.users.uids) +
         ", \"gids\": " + json_range(p.users.gids) +
         ", \"allow_root\": " + (p.users.allow_root ? "true" : "false") + "},\n";
  out += "  \"workspace_roots\": " + roots + ",\n";
  out += "  \"networks\": " + json_strings(p.networks) + ",\n";
  out += "  \"capabilities\": " + json_strings(p.capabilities) + ",\n";
  out += "  \"env_allowlist\": " + json_strings(p.env_allowlist) + ",\n";
  out += "  \"limits\": {\"memory\": " + size(l.memory) +
         ", \"cpus\": " + format_cpus(l.nano_cpus) + ", \"pids\": " + std::to_string(l.pids) +
         ", \"timeout\": " + duration(l.timeout) + ", \"lifetime\": " + duration(l.lifetime) +
         ", \"max_output\": " + size(l.max_output) + "},\n";
  out += "  \"defaults\": {\"image\": " + json_string(d.image) + ", \"memory\": " + size(d.memory) +
         ", \"cpus\": " + format_cpus(d.nano_cpus) + ", \"pids\": " + std::to_string(d.pids) +
         ", \"timeout\": " + duration(d.timeout) + ", \"max_output\": " + size(d.max_output) +
         ", \"lifetime\": " + duration(d.lifetime.count() > 0 ? d.lifetime : l.lifetime) +
         ", \"idle\": " + duration(d.idle) + "},\n";
  out += std::string("  \"writable_root\": ") + (p.writable_root ? "true" : "false") + ",\n";
  out += "  \"budget\": {\"sandboxes\": " + std::to_string(p.budget.sandboxes) +
         ", \"memory\": " + size(p.budget.memory) +
         ", \"execs\": " + std::to_string(p.budget.execs) + "},\n";
  out += "  \"per_principal\": {\"sandboxes\": " + std::to_string(p.per_principal.sandboxes) +
         ", \"execs\": " + std::to_string(p.per_principal.execs) +
         ", \"queued_execs\": " + std::to_string(p.per_principal.queued_execs) + "},\n";
  out += "  \"run_lifetime\": " + duration(p.run_lifetime) + ",\n";
  out += "  \"admins\": " + json_strings(p.admins) + ",\n";
  out += std::string("  \"require_userns_remap\": ") + (p.require_userns_remap ? "true" : "false") +
         ",\n";
  std::string pools = "[";
  for (const auto& pool : p.pools) {
    pools += std::string(pools.size() > 1 ? ", " : "") +
             "{\"image\": " + json_string(pool.image.empty() ? d.image : pool.image) +
             ", \"memory\": " + size(pool.memory > 0 ? pool.memory : d.memory) +
             ", \"cpus\": " + format_cpus(pool.nano_cpus > 0 ? pool.nano_cpus : d.nano_cpus) +
             ", \"pids\": " + std::to_string(pool.pids > 0 ? pool.pids : d.pids) +
             ", \"min\": " + std::to_string(pool.min) +
             ", \"max\": " + std::to_string(pool.max > 0 ? pool.max : 2 * pool.min) + "}";
  }
  out += "  \"pools\": " + pools + "],\n";
  const auto& eg = p.egress;
  std::string ports = "[", credentials = "[", resolve = "{";
  for (auto port : eg.ports) ports += (ports.size() > 1 ? ", " : "") + std::to_string(port);
  for (const auto& c : eg.credentials)
    credentials += std::string(credentials.size() > 1 ? ", " : "") +
                   "{\"host\": " + json_string(c.host) + ", \"header\": " + json_string(c.header) +
                   ", \"value_file\": " + json_string(c.value_file) +
                   ", \"scheme\": " + json_string(c.scheme) + "}";
  for (const auto& [name, addr] : eg.resolve)
    resolve +=
        std::string(resolve.size() > 1 ? ", " : "") + json_string(name) + ": " + json_string(addr);
  out += "  \"egress\": {\"allow\": " + json_strings(eg.allow) +
         ", \"deny\": " + json_strings(eg.deny) + ", \"ports\": " + ports +
         "], \"allow_private_cidrs\": " + json_strings(eg.allow_private_cidrs) +
         ", \"credentials\": " + credentials +
         "], \"max_bytes_per_sandbox\": " + size(eg.max_bytes_per_sandbox) +
         ", \"resolve\": " + resolve + "}, \"upstream_ca\": " + json_string(eg.upstream_ca) + "}\n";
  return out + "}\n";
}

}  // namespace corral::actors
