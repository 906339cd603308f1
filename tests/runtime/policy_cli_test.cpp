// The operator's policy through the corral binary: `corral policy check`, and --policy for
// the embedded runtime (workspace roots, the run lifetime).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "cli_process.hpp"

using namespace corral::runtime_tests;
namespace fs = std::filesystem;

namespace {

// A directory owned by us, not writable by others, removed with what it holds.
struct policy_dir {
  fs::path path;
  policy_dir() {
    std::string pattern = (fs::temp_directory_path() / "corral-policy-cli-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = fs::canonical(pattern);
  }
  ~policy_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  policy_dir(const policy_dir&) = delete;
  policy_dir& operator=(const policy_dir&) = delete;
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name) << text;
    return (path / name).string();
  }
};

}  // namespace

TEST_CASE("corral policy check prints the effective policy, or the error", "[runtime][policy]") {
  policy_dir dir;
  const auto good = dir.write("good.json", R"({
  "images": ["corral/"],
  "users": {"uids": {"min": 1000, "max": 60000}, "gids": {"min": 1000, "max": 60000}, "allow_root": false},
  "workspace_roots": [{"path": "/srv/corral/workspaces", "writable": true}],
  "networks": ["none"],
  "capabilities": [],
  "limits": {"memory": "2g", "cpus": 2, "pids": 1024, "timeout": "1h", "lifetime": "24h", "max_output": "16m"},
  "defaults": {"memory": "512m", "cpus": 1, "pids": 256, "timeout": "10m", "max_output": "1m"},
  "writable_root": false,
  "budget": {"sandboxes": 64, "memory": "32g", "execs": 256},
  "per_principal": {"sandboxes": 16, "execs": 32, "queued_execs": 64},
  "run_lifetime": "1h",
  "admins": []
})");
  const auto ok = run_cli({"policy", "check", good}, "unused");
  INFO(ok);
  CHECK(ok.code == 0);
  CHECK(ok.err.empty());
  for (const char* part :
       {R"("workspace_roots": [{"path": "/srv/corral/workspaces", "writable": true}])",
        R"("timeout": "10m")", R"("image": "corral/sandbox:busybox")", R"("env_allowlist": [])",
        R"("idle": "0s")", R"("run_lifetime": "1h")"}) {
    CHECK(contains(ok.out, part));
  }
  // What it prints is itself a good policy file.
  const auto printed = dir.write("printed.json", ok.out);
  const auto again = run_cli({"policy", "check", printed}, "unused");
  CHECK(again.code == 0);
  CHECK(again.out == ok.out);

  const auto bad = dir.write("bad.json", "{\n  \"limits\": {\n    \"memory\": \"2x\"\n  }\n}\n");
  const auto refused = run_cli({"policy", "check", bad}, "unused");
  INFO(refused);
  CHECK(refused.code == 125);
  CHECK(refused.out.empty());
  CHECK(contains(refused.err, bad + ":3: limits.memory: \"2x\" is not a size"));

  const auto dup = dir.write("dup.json", "{\"admins\": [],\n\"admins\": []}");
  const auto duplicate = run_cli({"policy", "check", dup}, "unused");
  CHECK(duplicate.code == 125);
  CHECK(contains(duplicate.err, dup + ":2: admins: duplicate key"));

  CHECK(run_cli({"policy", "check"}, "unused").code == 125);
  CHECK(run_cli({"policy", "verify", good}, "unused").code == 125);
}

TEST_CASE_METHOD(runtime_fixture, "the embedded CLI takes its workspace roots from --policy",
                 "[runtime][policy]") {
  policy_dir dir;
  fs::create_directory(dir.path / "root");
  fs::create_directory(dir.path / "root" / "project");
  fs::create_directory(dir.path / "outside");
  const auto policy =
      dir.write("policy.json", R"({"workspace_roots": [{"path": ")" + (dir.path / "root").string() +
                                   R"(", "writable": true}]})");
  std::ofstream(dir.path / "root" / "project" / "f") << "hi\n";
  const auto inside =
      run_cli({"--policy", policy, "run", "--workspace",
               (dir.path / "root" / "project").string() + ":rw", "--", "cat", "/workspace/f"},
              rt.name);
  INFO(inside);
  CHECK(inside.code == 0);
  CHECK(inside.out == "hi\n");

  const auto outside = run_cli(
      {"--policy", policy, "run", "--workspace", (dir.path / "outside").string(), "--", "true"},
      rt.name);
  INFO(outside);
  CHECK(outside.code == 125);
  CHECK(contains(outside.err, "outside every workspace root"));
  CHECK(contains(outside.err, "(policy key workspace_roots would allow it)"));

  // Without --policy (and no /etc/corral/policy.json): the embedded default, anywhere
  // outside the system directories.
  if (!fs::exists("/etc/corral/policy.json")) {
    const auto anywhere =
        run_cli({"run", "--workspace", (dir.path / "outside").string(), "--", "true"}, rt.name);
    INFO(anywhere);
    CHECK(anywhere.code == 0);
  }

  const auto bad = dir.write("bad.json", R"({"networks": ["host"]})");
  const auto refused = run_cli({"--policy", bad, "ls"}, rt.name);
  INFO(refused);
  CHECK(refused.code == 125);
  CHECK(contains(refused.err, "networks[0]: \"host\" is never allowed"));
}

TEST_CASE_METHOD(runtime_fixture, "a corral run sandbox gets run_lifetime", "[runtime][policy]") {
  policy_dir dir;
  const auto policy = dir.write("policy.json", R"({"run_lifetime": "2s"})");
  const auto start = std::chrono::steady_clock::now();
  const auto r = run_cli({"--policy", policy, "run", "--", "sleep", "30"}, rt.name);
  INFO(r);
  CHECK(r.code != 0);  // the sandbox ended under the command
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(20));
  // A lifetime asked for wins.
  const auto asked =
      run_cli({"--policy", policy, "run", "--lifetime", "1m", "--", "sleep", "3"}, rt.name);
  INFO(asked);
  CHECK(asked.code == 0);
}
