// The security posture of a sandbox: what the engine was told (inspect) and what a command
// inside can and cannot do (execs).
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "cli_process.hpp"
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
    CHECK(h.readonly_rootfs);
    CHECK(h.network_mode == "none");
    CHECK(h.cap_drop == std::vector<std::string>{"ALL"});
    if (rt.agent_path.empty()) {
      CHECK(ins->user == "1000:1000");
      CHECK(h.cap_add.empty());
      CHECK(h.binds.empty());
    } else {
      // The agent is PID 1: the sandbox's root with four capabilities, which it drops in every
      // command (behaviour below); its binary and run directory are the only binds.
      CHECK(ins->user == "0:0");
      auto caps = h.cap_add;
      std::sort(caps.begin(), caps.end());
      CHECK(caps == std::vector<std::string>{"KILL", "SETGID", "SETPCAP", "SETUID"});
      CHECK_FALSE(h.init);
      const auto sandbox_id = ins->labels.at(corral::actors::label_sandbox_id);
      CHECK(h.binds ==
            std::vector<std::string>{rt.agent_path + ":/corral/agent:ro",
                                     rt.agent_run_root + "/" + sandbox_id + ":/corral/run:rw"});
      struct stat run_dir {};
      REQUIRE(::stat((rt.agent_run_root + "/" + sandbox_id).c_str(), &run_dir) == 0);
      CHECK((run_dir.st_mode & 07777) == 0700);
      // The sandbox's root owns it: host root, or the engine's remapped root.
      CHECK(run_dir.st_uid == remapped_root());
    }
    CHECK(std::find(h.security_opt.begin(), h.security_opt.end(), "no-new-privileges") !=
          h.security_opt.end());
    CHECK(h.pids_limit == 32);
    CHECK(h.memory == rt.policy.defaults.memory);
    CHECK(h.memory_swap == h.memory);  // no swap on top
    CHECK(h.nano_cpus == rt.policy.defaults.nano_cpus);
    REQUIRE(h.tmpfs.count("/tmp") == 1);
    const auto& tmp = h.tmpfs.at("/tmp");
    CHECK(contains(tmp, "noexec"));
    CHECK(contains(tmp, "nosuid"));
    CHECK(contains(tmp, "uid=1000"));
    CHECK(ins->labels.at(corral::actors::label_runtime) == rt.name);
    // The key's claim is the container's name; its agent holds the key (no label says it).
    CHECK(ins->name == "/" + corral::actors::claim_name(rt.name, "hard"));
    CHECK(ins->labels.count(corral::actors::label_key) == 0);
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
    if (!rt.agent_path.empty()) CHECK(contains(status->stdout_data, "CapBnd:\t0000000000000000\n"));
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
TEST_CASE_METHOD(runtime_fixture, "an added capability reaches the command and no other does",
                 "[runtime][security]") {
  // The policy lists two; the request adds one, in another spelling. The agent keeps it in
  // the command's bounding set (NET_BIND_SERVICE is bit 10: 0x400) and, for root, in its
  // effective set; the sandbox user holds none (no ambient capabilities: a uid other than 0
  // loses them at exec).
  rt.policy.capabilities = {"NET_BIND_SERVICE", "CHOWN"};
  rt.policy.users.allow_root = true;
  sandbox_spec spec;
  spec.cap_add = {"cap_net_bind_service"};
  auto info = acquire("cap", spec);
  REQUIRE_OK(info);
  auto ins = inspect(info->container_id);
  REQUIRE_OK(ins);
  // The container holds it (beside the agent's own SETUID, SETGID, KILL and SETPCAP, which
  // no command keeps); CHOWN, listed but not asked for, is not added.
  const auto& added = ins->host.cap_add;
  CHECK(std::count(added.begin(), added.end(), "NET_BIND_SERVICE") == 1);
  CHECK(std::count(added.begin(), added.end(), "CHOWN") == 0);
  CHECK(ins->host.cap_drop == std::vector<std::string>{"ALL"});
  auto user = exec("cap", {"cat", "/proc/self/status"});
  REQUIRE_OK(user);
  INFO(user->stdout_data);
  CHECK(contains(user->stdout_data, "CapEff:\t0000000000000000\n"));
  if (!rt.agent_path.empty()) CHECK(contains(user->stdout_data, "CapBnd:\t0000000000000400\n"));
  REQUIRE_OK(release("cap"));
  spec.user = "0";
  REQUIRE_OK(acquire("cap-root", spec));
  auto root = exec("cap-root", {"cat", "/proc/self/status"});
  REQUIRE_OK(root);
  INFO(root->stdout_data << root->stderr_data);
  CHECK(contains(root->stdout_data, "CapEff:\t0000000000000400\n"));
  CHECK(contains(root->stdout_data, "CapBnd:\t0000000000000400\n"));
  REQUIRE_OK(release("cap-root"));
}

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

// -- users, workspaces and request strings: refused before any container exists --------------

namespace {

namespace fs = std::filesystem;

// A host directory for one test: root-owned 0755 under /tmp, so nobody else may rename what
// is in it (the workspace rules refuse anything else).
struct host_dir {
  fs::path path;
  host_dir() {
    std::string pattern = (fs::temp_directory_path() / "corral-security-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = fs::canonical(pattern);
    fs::permissions(path, fs::perms(0755));
  }
  ~host_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  host_dir(const host_dir&) = delete;
  host_dir& operator=(const host_dir&) = delete;
};

// The host uid a process of `pid` runs as when it is `inside` in its namespace: the same
// number, or the mapped one under user-namespace remapping.
uint32_t host_uid(int64_t pid, uint32_t inside) {
  std::ifstream map("/proc/" + std::to_string(pid) + "/uid_map");
  uint64_t first = 0, outside = 0, count = 0;
  while (map >> first >> outside >> count) {
    if (inside >= first && inside < first + count)
      return static_cast<uint32_t>(outside + inside - first);
  }
  return inside;
}

}  // namespace

TEST_CASE_METHOD(runtime_fixture, "corral run refuses root, root's group and system groups",
                 "[runtime][security]") {
  for (const char* user : {"0", "0:0", "1000:0", "1000:6"}) {
    auto r = run_cli({"run", "--user", user, "--", "id"}, rt.name);
    INFO("--user " << user << "\n" << r);
    CHECK(r.code == 125);
    CHECK(contains(r.err, "policy_violation"));
    CHECK(r.out.empty());
  }
  auto root = run_cli({"run", "--user", "0", "--", "id"}, rt.name);
  CHECK(contains(root.err, "users.allow_root"));
  auto disk = run_cli({"run", "--user", "1000:6", "--", "id"}, rt.name);
  CHECK(contains(disk.err, "gid 6"));
  // A name could be root in the image: only numbers are taken.
  auto named = run_cli({"run", "--user", "root", "--", "id"}, rt.name);
  INFO(named);
  CHECK(named.code == 125);
  CHECK(contains(named.err, "invalid_request"));
  // The default user still runs.
  auto fine = run_cli({"run", "--", "id", "-u"}, rt.name);
  INFO(fine);
  CHECK(fine.code == 0);
  CHECK(fine.out == "1000\n");
}

TEST_CASE_METHOD(runtime_fixture, "corral run refuses system directories as workspaces",
                 "[runtime][security]") {
  auto usr = run_cli({"run", "--user", "0", "--workspace", "/usr/local/bin:rw", "--", "sh", "-c",
                      "echo x > /workspace/owned"},
                     rt.name);
  INFO(usr);
  CHECK(usr.code == 125);
  CHECK(contains(usr.err, "policy_violation"));
  CHECK_FALSE(fs::exists("/usr/local/bin/owned"));
  for (const char* dir : {"/usr/local/bin:rw", "/bin:rw", "/usr/bin", "/var/log:rw",
                          "/root/.ssh:rw", "/etc", "/var/lib/docker"}) {
    auto r = run_cli({"run", "--workspace", dir, "--", "true"}, rt.name);
    INFO("--workspace " << dir << "\n" << r);
    CHECK(r.code == 125);
    CHECK(contains(r.err, "policy_violation"));
  }
}

TEST_CASE_METHOD(runtime_fixture, "corral run refuses linked and non-UTF-8 workspace paths",
                 "[runtime][security]") {
  host_dir dir;
  fs::create_directories(dir.path / "real" / "project");
  fs::create_directory_symlink(dir.path / "real", dir.path / "link");

  auto linked = run_cli(
      {"run", "--workspace", (dir.path / "link" / "project").string() + ":rw", "--", "true"},
      rt.name);
  INFO(linked);
  CHECK(linked.code == 125);
  CHECK(contains(linked.err, "policy_violation"));
  CHECK(contains(linked.err, "symbolic link"));
  CHECK(contains(linked.err, (dir.path / "link").string()));

  // The engine's JSON would have turned the 0xff into U+FFFD and mounted another path.
  const auto odd = dir.path / "odd\xff";
  fs::create_directories(odd);
  auto bytes = run_cli({"run", "--workspace", odd.string() + ":rw", "--", "true"}, rt.name);
  INFO(bytes);
  CHECK(bytes.code == 125);
  CHECK(contains(bytes.err, "invalid_request"));
  CHECK(contains(bytes.err, "UTF-8"));

  // The real path works.
  auto real = run_cli(
      {"run", "--workspace", (dir.path / "real" / "project").string(), "--", "ls", "/workspace"},
      rt.name);
  INFO(real);
  CHECK(real.code == 0);
}

TEST_CASE_METHOD(runtime_fixture,
                 "root in a sandbox is no host user in an rw workspace, and its owner keeps access",
                 "[runtime][security][userns]") {
  // app/setup.sh starts the engine remapped: sandbox uids are host uids of no host user.
  const uint32_t base = remapped_root();
  INFO("the engine's remapped root: " << base);
  REQUIRE(base != 0);
  host_dir dir;
  const auto ws = dir.path / "project";
  fs::create_directories(ws);
  constexpr uid_t owner = 4242;  // the workspace's host owner (a user of the host's)
  REQUIRE(::chown(ws.c_str(), owner, owner) == 0);
  { std::ofstream(ws / "existing") << "from the owner\n"; }
  REQUIRE(::chown((ws / "existing").c_str(), owner, owner) == 0);
  rt.policy.users.allow_root = true;
  rt.policy.workspace_roots = {{dir.path.string(), true}};
  sandbox_spec spec;
  spec.workspace.host_path = ws.string();
  spec.workspace.access = access_mode::rw;
  spec.user = "0:0";
  REQUIRE_OK(acquire("as-root", spec));
  auto wrote = exec("as-root", sh("echo r > /workspace/by-root && mkdir /workspace/sub && "
                                  "echo s > /workspace/sub/f && echo more >> /workspace/existing"));
  REQUIRE_OK(wrote);
  INFO(wrote->stderr_data);
  CHECK(wrote->exit_code == 0);
  spec.user = "";
  REQUIRE_OK(acquire("as-user", spec));
  auto user_wrote = exec("as-user", sh("echo u > /workspace/by-user && id -u"));
  REQUIRE_OK(user_wrote);
  INFO(user_wrote->stderr_data);
  CHECK(user_wrote->exit_code == 0);
  CHECK(user_wrote->stdout_data == "1000\n");

  // On the host: uid 0's file belongs to the remapped root, uid 1000's to base + 1000, and
  // neither is a host user.
  struct stat st {};
  REQUIRE(::stat((ws / "by-root").c_str(), &st) == 0);
  CHECK(st.st_uid == base);
  CHECK(st.st_uid != 0);
  CHECK(::getpwuid(st.st_uid) == nullptr);
  REQUIRE(::stat((ws / "by-user").c_str(), &st) == 0);
  CHECK(st.st_uid == base + 1000);
  CHECK(::getpwuid(st.st_uid) == nullptr);

  // The owner reads and writes what the sandboxes made, and makes files in their directory.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(owner) != 0 || ::setuid(owner) != 0) _exit(10);
    for (const char* f : {"by-root", "by-user", "sub/f", "existing"}) {
      const int fd = ::open((ws / f).c_str(), O_RDWR | O_APPEND);
      if (fd < 0 || ::write(fd, "x\n", 2) != 2) _exit(11);
      ::close(fd);
    }
    const int made = ::open((ws / "sub" / "owner-made").c_str(), O_CREAT | O_WRONLY, 0644);
    _exit(made < 0 ? 12 : 0);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_OK(release("as-root"));
  CHECK_OK(release("as-user"));
}

TEST_CASE_METHOD(runtime_fixture, "a workspace swapped after the check is caught at start",
                 "[runtime][security]") {
  host_dir dir;
  const auto ws = dir.path / "ws";
  fs::create_directories(ws);
  sandbox_spec spec;
  spec.workspace.host_path = ws.string();
  spec.workspace.access = access_mode::rw;

  SECTION("unswapped: the checked directory is mounted and writable") {
    auto info = acquire("ws", spec);
    REQUIRE_OK(info);
    auto ins = inspect(info->container_id);
    REQUIRE_OK(ins);
    // Give the sandbox user the directory (as whichever host uid it is) after the check: the
    // directory stays the same one.
    const auto uid = host_uid(ins->state.pid, 1000);
    REQUIRE(::chown(ws.c_str(), uid, uid) == 0);
    auto write = exec("ws", sh("echo made > /workspace/made && id -u"));
    REQUIRE_OK(write);
    INFO(write->stderr_data);
    CHECK(write->exit_code == 0);
    struct stat st {};
    REQUIRE(::stat((ws / "made").c_str(), &st) == 0);
    CHECK(st.st_uid == uid);
    CHECK(st.st_uid != 0);
    CHECK_OK(release("ws"));
  }

  // The test seam runs between the plan and the create: what an attacker racing the start
  // would do.
  SECTION("another directory put in its place") {
    // Open to anyone, so that the sandbox's own `command` could leave a mark in it if it ran
    // before the check (it must not run at all).
    rt.before_create_for_tests = [](const corral::actors::sandbox_plan& p) {
      fs::rename(p.workspace.host_path, p.workspace.host_path + "-checked");
      fs::create_directory(p.workspace.host_path);
      fs::permissions(p.workspace.host_path, fs::perms::all);
    };
    spec.command = {"sh", "-c", "echo ran > /workspace/ran"};
    auto info = acquire("ws", spec);
    INFO(what(info));
    REQUIRE_FALSE(info);
    CHECK(info.error() == corral_errc::policy_violation);
    CHECK(contains(describe(info.error()), "changed between the check and the start"));
    CHECK(containers().empty());
    CHECK_FALSE(fs::exists(ws / "ran"));
  }
  SECTION("a link to another directory put in its place") {
    fs::create_directories(dir.path / "elsewhere");
    rt.before_create_for_tests = [elsewhere = dir.path /
                                              "elsewhere"](const corral::actors::sandbox_plan& p) {
      fs::rename(p.workspace.host_path, p.workspace.host_path + "-checked");
      fs::create_directory_symlink(elsewhere, p.workspace.host_path);
    };
    auto info = acquire("ws", spec);
    INFO(what(info));
    REQUIRE_FALSE(info);
    CHECK(info.error() == corral_errc::policy_violation);
    CHECK(contains(describe(info.error()), "changed between the check and the start"));
    CHECK(containers().empty());
  }
}
