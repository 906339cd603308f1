// Fuzzes the policy's checks of request text (actors/policy): UTF-8 and control characters,
// keys, users, image references and the allowlist, and the whole of plan_sandbox and
// plan_exec on a request built from the input (including workspace paths, which are looked up
// read-only on this machine's file system).
//
// Input: two control bytes (workspace access, limits, which fields are set), then strings
// separated by NUL: key, image, workspace host path, workspace container path, workdir, user,
// network mode, tmpfs path, tmpfs options, capability, command, env key, env value, label
// key, label value, allowlist entry, exec argv, exec env value.
// Properties: valid_utf8 agrees with simdjson's validator; a refusal never shows an argv
// element or an env or label value (they may hold credentials); an accepted plan keeps the
// strict posture (no host network, no root, no forbidden capability, tmpfs noexec, every
// capability dropped first, no-new-privileges, the corral labels).
#include <algorithm>
#include <cstdint>
#include <string>

#include <simdjson.h>

#include "actors/policy.hpp"
#include "fuzz_common.hpp"
#include "messages/errors.hpp"

namespace actors = corral::actors;
namespace messages = corral::messages;
using corral::fuzz::input;

namespace {

// Appended to every value the policy must never echo. The tab cannot appear raw in a shown
// single-line field (shown() escapes control characters), so finding it raw in an error text
// means a multi-line value leaked.
const std::string canary = "\tC4N4RY";

void check_not_echoed(const caf::error& err) {
  if (!err) return;
  const std::string text = messages::describe(err);
  CORRAL_FUZZ_CHECK(text.find(canary) == std::string::npos);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  input in(data, size);
  const uint8_t flags = in.byte();
  const uint8_t limits = in.byte();

  // The text checks on the whole input first.
  const std::string_view all = in.rest();
  CORRAL_FUZZ_CHECK(actors::valid_utf8(all) == simdjson::validate_utf8(all.data(), all.size()));
  (void)actors::check_text("field", all, actors::text_kind::single_line);
  (void)actors::check_text("field", all, actors::text_kind::multi_line);
  (void)actors::is_reserved_env_key(all);

  const std::string key(in.field());
  messages::sandbox_spec spec;
  spec.image = in.field();
  spec.workspace.host_path = in.field();
  spec.workspace.container_path = in.field();
  spec.workspace.access = static_cast<messages::access_mode>(flags % 3);
  spec.workdir = in.field();
  spec.user = in.field();
  spec.network_mode = in.field();
  const std::string tmpfs_path(in.field());
  const std::string tmpfs_options(in.field());
  if (!tmpfs_path.empty()) spec.tmpfs.push_back({tmpfs_path, (limits & 0xF) << 20, tmpfs_options});
  if (auto cap = in.field(); !cap.empty()) spec.cap_add.emplace_back(cap);
  if (auto cmd = in.field(); !cmd.empty()) spec.command = {std::string(cmd) + canary, "x" + canary};
  const std::string env_key(in.field());
  const std::string env_value = std::string(in.field()) + canary;
  if (!env_key.empty()) spec.env[env_key] = env_value;
  const std::string label_key(in.field());
  const std::string label_value = std::string(in.field()) + canary;
  if (!label_key.empty()) spec.labels[label_key] = label_value;
  spec.writable_root = flags & 0x10;
  spec.memory_bytes = (flags & 0x20) ? int64_t{limits} << 20 : 0;
  spec.pids_limit = (flags & 0x40) ? int64_t{limits} - 8 : 0;
  spec.exec_timeout = std::chrono::seconds(limits) - std::chrono::seconds(8);

  actors::runtime_config cfg;
  if (auto entry = in.field(); !entry.empty()) cfg.policy.images.emplace_back(entry);
  cfg.policy.users.allow_root = flags & 0x80;

  (void)actors::check_key(key);
  (void)actors::check_image_reference(spec.image);
  (void)actors::image_allowed(spec.image, cfg.policy.images);
  (void)actors::check_user(cfg.policy.users, spec.user);

  auto plan = actors::plan_sandbox(cfg, key, spec, "/var/run/docker.sock", 0);
  if (!plan) {
    check_not_echoed(plan.error());
    return 0;
  }
  const auto& h = plan->create.host;
  CORRAL_FUZZ_CHECK(h.network_mode != "host" && h.network_mode.rfind("container:", 0) != 0);
  CORRAL_FUZZ_CHECK(h.cap_drop == std::vector<std::string>{"ALL"});
  for (const auto& cap : h.cap_add) CORRAL_FUZZ_CHECK(cap != "SYS_ADMIN" && cap != "ALL");
  CORRAL_FUZZ_CHECK(std::find(h.security_opt.begin(), h.security_opt.end(), "no-new-privileges") !=
                    h.security_opt.end());
  CORRAL_FUZZ_CHECK(h.readonly_rootfs == !spec.writable_root);
  for (const auto& [path, options] : h.tmpfs)
    CORRAL_FUZZ_CHECK(options.rfind("rw,noexec,nosuid,nodev,size=", 0) == 0);
  if (!cfg.policy.users.allow_root) {
    CORRAL_FUZZ_CHECK(plan->user.rfind("0:", 0) != 0);
    CORRAL_FUZZ_CHECK(plan->user.substr(plan->user.find(':')) != ":0");
  }
  CORRAL_FUZZ_CHECK(plan->create.labels.at(actors::label_managed_by) == "corral");
  CORRAL_FUZZ_CHECK(plan->create.labels.at(actors::label_key) == key);
  CORRAL_FUZZ_CHECK(h.memory > 0 && h.memory <= cfg.policy.limits.memory);

  messages::exec_request request;
  if (auto argv = in.field(); !argv.empty()) request.argv = {std::string(argv) + canary};
  if (!env_key.empty()) request.env[env_key] = std::string(in.field()) + canary;
  request.workdir = spec.workdir;
  auto exec = actors::plan_exec(cfg, *plan, request);
  if (!exec) check_not_echoed(exec.error());
  return 0;
}
