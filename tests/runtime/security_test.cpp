// The security posture of a sandbox: what the engine was told (inspect) and what a command
// inside can and cannot do (execs).
#include <algorithm>

#include "runtime_fixture.hpp"

using namespace corral::runtime_tests;

TEST_CASE_METHOD(runtime_fixture, "a sandbox is created hardened", "[runtime][security]") {
  sandbox_spec spec;
  spec.pids_limit = 32;
  auto info = acquire("hard", spec);
  REQUIRE_OK(info);
  CHECK(info->status == sandbox_status::ready);
  CHECK(info->pids_limit == 32);
  REQUIRE_FALSE(info->container_id.empty());

  SECTION("by inspect") {
    auto ins = inspect(info->container_id);
    REQUIRE_OK(ins);
    const auto& h = ins->host;
    CHECK(ins->state.running);
    CHECK(ins->user == "1000:1000");
    CHECK(h.readonly_rootfs);
    CHECK(h.network_mode == "none");
    CHECK(h.cap_drop == std::vector<std::string>{"ALL"});
    CHECK(h.cap_add.empty());
    CHECK(std::find(h.security_opt.begin(), h.security_opt.end(), "no-new-privileges") !=
          h.security_opt.end());
    CHECK(h.pids_limit == 32);
    CHECK(h.memory == corral::actors::default_memory_bytes);
    CHECK(h.memory_swap == h.memory);  // no swap on top
    CHECK(h.nano_cpus == corral::actors::default_nano_cpus);
    CHECK(h.binds.empty());
    REQUIRE(h.tmpfs.count("/tmp") == 1);
    const auto& tmp = h.tmpfs.at("/tmp");
    CHECK(contains(tmp, "noexec"));
    CHECK(contains(tmp, "nosuid"));
    CHECK(contains(tmp, "uid=1000"));
    CHECK(ins->labels.at(corral::actors::label_runtime) == rt.name);
    CHECK(ins->labels.at(corral::actors::label_key) == "hard");
    CHECK(ins->labels.at(corral::actors::label_managed_by) == "corral");
  }

  SECTION("by behaviour") {
    auto root = exec("hard", sh("echo x > /probe"));
    REQUIRE_OK(root);
    CHECK(root->exit_code != 0);
    CHECK(contains(root->stderr_data, "Read-only file system"));

    auto net = exec("hard", {"ls", "/sys/class/net"});
    REQUIRE_OK(net);
    CHECK(net->exit_code == 0);
    CHECK(net->stdout_data == "lo\n");

    auto uid = exec("hard", {"id", "-u"});
    REQUIRE_OK(uid);
    CHECK(uid->stdout_data == "1000\n");

    auto status = exec("hard", {"cat", "/proc/self/status"});
    REQUIRE_OK(status);
    INFO(status->stdout_data);
    CHECK(contains(status->stdout_data, "CapEff:\t0000000000000000\n"));
    CHECK(contains(status->stdout_data, "CapPrm:\t0000000000000000\n"));
    CHECK(contains(status->stdout_data, "NoNewPrivs:\t1\n"));

    // /tmp: the sandbox user may write there, but nothing written there may run.
    auto tmp = exec(
        "hard",
        sh("printf '#!/bin/sh\\necho ran\\n' > /tmp/s.sh && chmod +x /tmp/s.sh && echo written; "
           "/tmp/s.sh; echo rc=$?"));
    REQUIRE_OK(tmp);
    INFO(tmp->stdout_data << tmp->stderr_data);
    CHECK(contains(tmp->stdout_data, "written\n"));
    CHECK_FALSE(contains(tmp->stdout_data, "ran\n"));
    CHECK(contains(tmp->stdout_data, "rc=126"));
    CHECK(contains(tmp->stderr_data, "Permission denied"));

    // A fork loop stops at the pids limit. busybox sh gives up at the first failed fork,
    // so the exec ends by itself, well within its short timeout.
    auto forks =
        exec("hard", sh("for i in $(seq 100); do sleep 5 & done; wait"), caf::timespan{10s});
    REQUIRE_OK(forks);
    INFO(forks->stderr_data);
    CHECK(forks->end == exec_end::exited);
    CHECK(forks->exit_code != 0);
    CHECK(contains(forks->stderr_data, "can't fork"));
  }

  CHECK_OK(release("hard"));
}

// A command that allocates past the memory limit is OOM-killed: the engine reports an oom
// event just before the exec dies with 137 (seen here 10 ms apart), and corral says so.
TEST_CASE_METHOD(runtime_fixture, "a memory hog is OOM-killed and the sandbox survives",
                 "[runtime][security]") {
  sandbox_spec spec;
  spec.memory_bytes = 32LL << 20;
  auto info = acquire("hog", spec);
  REQUIRE_OK(info);
  CHECK(info->memory_bytes == 32LL << 20);
  auto ins = inspect(info->container_id);
  REQUIRE_OK(ins);
  CHECK(ins->host.memory == 32LL << 20);
  CHECK(ins->host.memory_swap == 32LL << 20);

  auto hog = exec("hog", sh("x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived"),
                  caf::timespan{30s});
  REQUIRE_OK(hog);
  INFO("end " << to_string(hog->end) << ", exit " << hog->exit_code << ", stderr "
              << hog->stderr_data);
  CHECK(hog->end == exec_end::oom_killed);
  CHECK(hog->exit_code == 137);
  CHECK_FALSE(contains(hog->stdout_data, "survived"));

  // Only the hog died: the sandbox still runs commands.
  auto after = lookup("hog");
  REQUIRE_OK(after);
  CHECK(after->status == sandbox_status::ready);
  auto echo = exec("hog", {"echo", "still here"});
  REQUIRE_OK(echo);
  CHECK(echo->stdout_data == "still here\n");
  CHECK_OK(release("hog"));
}
