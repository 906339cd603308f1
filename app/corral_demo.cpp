// The main job until the actor runtime lands: one hardened sandbox, one command, end to end,
// through the async adapter. Usage: corral_demo [CMD...] (default: a short self-report).
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include "app/exit_codes.hpp"
#include "docker/blocking.hpp"
#include "docker/client.hpp"

using namespace corral::docker;

namespace {

int fail(const char* step, const error& e) {
  std::fprintf(stderr, "corral_demo: %s failed: %s\n", step, e.describe().c_str());
  return corral::app::exit_code::error;
}

container_create_request hardened(const std::string& image) {
  container_create_request r;
  r.image = image;
  r.cmd = {"sleep", "3600"};
  r.user = "1000:1000";
  r.working_dir = "/workspace";
  r.labels = {{"corral.managed-by", "corral"}, {"corral.runtime", "demo"}};
  r.host.network_mode = "none";
  r.host.readonly_rootfs = true;
  r.host.cap_drop = {"ALL"};
  r.host.security_opt = {"no-new-privileges"};
  r.host.memory = 512LL << 20;
  r.host.memory_swap = 512LL << 20;
  r.host.nano_cpus = 1'000'000'000;
  r.host.pids_limit = 256;
  r.host.init = true;
  r.host.tmpfs = {{"/tmp", "rw,noexec,nosuid,size=64m,uid=1000,gid=1000"},
                  {"/workspace", "rw,nosuid,size=64m,uid=1000,gid=1000"}};
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> cmd(argv + 1, argv + argc);
  if (cmd.empty()) {
    cmd = {"sh", "-c",
           "echo \"hello from $(hostname), uid $(id -u)\"; "
           "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; "
           "echo \"interfaces: $(ls /sys/class/net | tr '\\n' ' ')\"; "
           "touch /probe 2>/dev/null && echo 'root writable' || echo 'root read-only'"};
  }
  auto socket = resolve_engine_socket();
  if (!socket) return fail("finding the engine", socket.err());
  client_options options;
  options.http.socket_path = *socket;
  client docker(options);

  auto version = blocking<version_response>([&](auto done) { docker.negotiate(done); });
  if (!version) return fail("negotiating the API version", version.err());
  std::printf("engine %s, API %s\n", version->version.c_str(), docker.api_version().c_str());

  auto created = blocking<container_create_response>(
      [&](auto done) { docker.container_create(hardened("corral/sandbox:busybox"), done); });
  if (!created) return fail("creating the sandbox", created.err());
  const std::string id = created->id;
  int code = corral::app::exit_code::error;
  auto remove = [&] {
    auto removed = blocking<void>([&](auto done) { docker.container_remove(id, true, done); });
    if (!removed) fail("removing the sandbox", removed.err());
  };

  auto started = blocking<change_outcome>([&](auto done) { docker.container_start(id, done); });
  if (!started) {
    code = fail("starting the sandbox", started.err());
    remove();
    return code;
  }
  exec_create_request exec;
  exec.cmd = cmd;
  exec.user = "1000:1000";
  auto exec_id =
      blocking<exec_create_response>([&](auto done) { docker.exec_create(id, exec, done); });
  if (!exec_id) {
    code = fail("creating the exec", exec_id.err());
    remove();
    return code;
  }
  exec_start_options start;
  start.timeout = std::chrono::seconds(60);
  auto output =
      blocking<exec_output>([&](auto done) { docker.exec_start(exec_id->id, start, done); });
  if (!output) {
    code = fail("running the command", output.err());
    remove();
    return code;
  }
  std::fwrite(output->stdout_data.data.data(), 1, output->stdout_data.data.size(), stdout);
  std::fwrite(output->stderr_data.data.data(), 1, output->stderr_data.data.size(), stderr);
  auto inspected =
      blocking<exec_inspect_response>([&](auto done) { docker.exec_inspect(exec_id->id, done); });
  if (!inspected) {
    code = fail("reading the exit code", inspected.err());
  } else {
    code = static_cast<int>(inspected->exit_code.value_or(corral::app::exit_code::error));
  }
  remove();
  std::printf("sandbox %.12s removed; command exited %d\n", id.c_str(), code);
  return code;
}
