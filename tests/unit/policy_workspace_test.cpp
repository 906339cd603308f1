// The policy's workspace checks against a real file system (throw-away directories): what a
// workspace may be, the system and engine directories refused by resolved prefix, writable
// components, the start-time verification, and the policy's workspace roots. Split from
// policy_test.cpp by concern, as actors/policy_workspace.cpp is.
#include <catch2/catch.hpp>

#include "tests/unit/policy_test_support.hpp"

using namespace corral::unit_tests::policy_testing;

// -- plan_sandbox: workspace -----------------------------------------------------------------

TEST_CASE("policy: a workspace must be a real directory that does not hold the engine",
          "[policy]") {
  temp_dir tmp;

  SECTION("not absolute") {
    CHECK_REFUSED(plan(with_workspace("relative/dir")), invalid_request, "relative/dir");
    CHECK_REFUSED(plan(with_workspace("")), invalid_request, "workspace");
  }
  SECTION("missing") {
    const auto missing = (tmp.path / "nope").string();
    CHECK_REFUSED(plan(with_workspace(missing)), invalid_request, missing);
  }
  SECTION("a file") {
    const auto file = tmp.path / "file.txt";
    std::ofstream{file} << "x";
    CHECK_REFUSED(plan(with_workspace(file.string())), invalid_request, "not a directory");
  }
  SECTION("the host's root") {
    CHECK_REFUSED(plan(with_workspace("/")), policy_violation, "root");
    CHECK_REFUSED(plan(with_workspace("/tmp/..")), policy_violation, "root");
  }
  SECTION("the directory of the engine's socket") {
    CHECK_REFUSED(plan(with_workspace("/var/run")), policy_violation, "socket");
    CHECK_REFUSED(plan(with_workspace("/run")), policy_violation, "socket");
    CHECK_REFUSED(plan(with_workspace("/var/run/../run")), policy_violation, "socket");
  }
  SECTION("a directory that holds the socket, whatever its name") {
    // Wherever the socket really is (on Debian /var/run is a link to /run), mounting an
    // ancestor of it is refused.
    const auto socket_dir = fs::weakly_canonical(engine_socket).parent_path();
    for (auto dir = socket_dir; dir != dir.root_path(); dir = dir.parent_path()) {
      INFO("workspace: " << dir);
      CHECK(error_of(plan(with_workspace(dir.string()))) == corral_errc::policy_violation);
    }
  }
  SECTION("a symlink to the socket's directory") {
    const auto link = tmp.path / "innocent";
    fs::create_directory_symlink("/var/run", link);
    CHECK_REFUSED(plan(with_workspace(link.string())), policy_violation, "innocent");
    const auto chain = tmp.path / "chain";
    fs::create_directory_symlink(link, chain);
    CHECK(error_of(plan(with_workspace(chain.string()))) == corral_errc::policy_violation);
  }
  SECTION("the socket given by the runtime, not only the default one") {
    const auto engine_dir = tmp.path / "engine";
    fs::create_directories(engine_dir);
    std::ofstream{engine_dir / "docker.sock"} << "";
    const auto socket = (engine_dir / "docker.sock").string();
    const auto other = tmp.path / "other";
    fs::create_directories(other);
    auto plan_with = [&](const fs::path& dir) {
      return pol::plan_sandbox({}, "k", with_workspace(dir.string()), socket, now_ms);
    };
    CHECK(error_of(plan_with(engine_dir)) == corral_errc::policy_violation);
    CHECK(error_of(plan_with(tmp.path)) == corral_errc::policy_violation);
    CHECK(plan_with(other));
  }
  SECTION("a real directory is bound read-only at /workspace, with its identity") {
    fs::create_directories(tmp.path / "real");
    const auto p = plan(with_workspace((tmp.path / "real").string()));
    REQUIRE(p);
    CHECK(p->create.host.binds ==
          std::vector<std::string>{(tmp.path / "real").string() + ":/workspace:ro"});
    CHECK(p->create.working_dir == "/workspace");
    struct stat st {};
    REQUIRE(::stat((tmp.path / "real").c_str(), &st) == 0);
    CHECK(p->workspace.device == static_cast<uint64_t>(st.st_dev));
    CHECK(p->workspace.inode == static_cast<uint64_t>(st.st_ino));
    CHECK(p->workspace.host_path == (tmp.path / "real").string());
    CHECK(p->workspace.container_path == "/workspace");
  }
  SECTION("a link to a real directory is refused, naming the link") {
    fs::create_directories(tmp.path / "real");
    const auto link = tmp.path / "via-link";
    fs::create_directory_symlink(tmp.path / "real", link);
    CHECK_REFUSED(plan(with_workspace(link.string())), policy_violation, "via-link");
    CHECK_REFUSED(plan(with_workspace(link.string())), policy_violation, "symbolic link");
    // A link anywhere on the way, not only the last component.
    fs::create_directories(tmp.path / "real" / "sub");
    CHECK_REFUSED(plan(with_workspace((link / "sub").string())), policy_violation, "via-link");
  }
  SECTION("rw, a custom container path and an explicit workdir") {
    auto spec = with_workspace(tmp.path.string(), msg::access_mode::rw);
    spec.workspace.container_path = "/src";
    auto p = plan(spec);
    REQUIRE(p);
    CHECK(p->create.host.binds == std::vector<std::string>{tmp.path.string() + ":/src:rw"});
    CHECK(p->create.working_dir == "/src");
    spec.workdir = "/src/sub";
    p = plan(spec);
    REQUIRE(p);
    CHECK(p->create.working_dir == "/src/sub");
  }
  SECTION("the container path must be absolute and normal") {
    for (const char* bad : {"", "relative", "/", "/a/../b", "/a/./b", "a/../b"}) {
      auto spec = with_workspace(tmp.path.string());
      spec.workspace.container_path = bad;
      INFO("container path: " << bad);
      CHECK(error_of(plan(spec)) == corral_errc::invalid_request);
    }
  }
  SECTION("access none mounts nothing, whatever the path says") {
    const auto p = plan(with_workspace("/var/run", msg::access_mode::none));
    REQUIRE(p);
    CHECK(p->create.host.binds.empty());
    CHECK(p->create.working_dir.empty());
  }
}

TEST_CASE("policy: system directories are refused by resolved prefix", "[policy]") {
  // Each refused whether or not it exists here: the rules apply to the resolved path.
  for (const char* dir : {"/etc",
                          "/etc/ssh",
                          "/usr",
                          "/usr/local/bin",
                          "/usr/bin",
                          "/bin",
                          "/sbin",
                          "/lib",
                          "/lib32",
                          "/lib64",
                          "/libx32",
                          "/bin/../usr/share",
                          "/boot",
                          "/dev",
                          "/dev/shm",
                          "/proc/self",
                          "/sys/fs",
                          "/run/user",
                          "/var",
                          "/var/log",
                          "/var/lib",
                          "/var/spool/cron",
                          "/var/lib/docker/volumes/x/_data",
                          "/var/lib/containerd",
                          "/run/containerd",
                          "/root",
                          "/root/.ssh",
                          "/home",
                          "/opt",
                          "/srv"}) {
    INFO("workspace: " << dir);
    const auto err = error_of(plan(with_workspace(dir, msg::access_mode::rw)));
    CHECK(err == corral_errc::policy_violation);
  }
  CHECK_REFUSED(plan(with_workspace("/usr/local/bin")), policy_violation, "/usr");
  CHECK_REFUSED(plan(with_workspace("/var/log")), policy_violation, "/var");
  CHECK_REFUSED(plan(with_workspace("/root/.ssh")), policy_violation, "/root");
  // Merged /usr: /bin is a link to /usr/bin on Debian 12, refused either way.
  CHECK_REFUSED(plan(with_workspace("/bin")), policy_violation, "/bin");
}

TEST_CASE("policy: the engine's data root is never a workspace, nor anything above it",
          "[policy]") {
  temp_dir tmp;
  fs::create_directories(tmp.path / "state" / "docker" / "volumes");
  fs::create_directories(tmp.path / "state" / "other");
  pol::runtime_config cfg;
  cfg.engine_data_root = (tmp.path / "state" / "docker").string();
  auto at = [&](const fs::path& p) { return plan(with_workspace(p.string()), cfg); };
  CHECK_REFUSED(at(tmp.path / "state" / "docker"), policy_violation, "engine");
  CHECK_REFUSED(at(tmp.path / "state" / "docker" / "volumes"), policy_violation, "engine");
  CHECK_REFUSED(at(tmp.path / "state"), policy_violation, "engine");
  CHECK_REFUSED(at(tmp.path), policy_violation, "engine");
  CHECK(at(tmp.path / "state" / "other"));
}

TEST_CASE("policy: workspaces below /var/tmp and home directories are allowed", "[policy]") {
  SECTION("/var/tmp: below it yes, the shared directory itself no") {
    std::string pattern = "/var/tmp/corral-policy-XXXXXX";
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    const auto p = plan(with_workspace(pattern, msg::access_mode::rw));
    CHECK(p);
    std::error_code ec;
    fs::remove_all(pattern, ec);
    CHECK_REFUSED(plan(with_workspace("/var/tmp")), policy_violation, "writable");
    // Not refused by location: only because it is not there.
    CHECK_REFUSED(plan(with_workspace("/var/tmp/corral-no-such-dir")), invalid_request,
                  "does not exist");
  }
  SECTION("a project below /home") {
    CHECK_REFUSED(plan(with_workspace("/home/corral-nobody/project")), invalid_request,
                  "does not exist");
    if (fs::is_directory("/home")) {
      std::string pattern = "/home/corral-policy-XXXXXX";
      REQUIRE(::mkdtemp(pattern.data()) != nullptr);
      fs::create_directories(fs::path(pattern) / "project");
      fs::permissions(fs::path(pattern) / "project", fs::perms(0755));
      CHECK(plan(with_workspace(pattern + "/project", msg::access_mode::rw)));
      CHECK(plan(with_workspace(pattern, msg::access_mode::rw)));
      std::error_code ec;
      fs::remove_all(pattern, ec);
    }
  }
}

TEST_CASE("policy: no workspace component may be writable by others", "[policy]") {
  temp_dir tmp;
  fs::create_directories(tmp.path / "shared" / "project");
  SECTION("a group-writable component") {
    fs::permissions(tmp.path / "shared", fs::perms(0775));
    CHECK_REFUSED(plan(with_workspace((tmp.path / "shared" / "project").string())),
                  policy_violation, (tmp.path / "shared").string() + "' is writable");
  }
  SECTION("an other-writable workspace itself") {
    fs::permissions(tmp.path / "shared" / "project", fs::perms(0757));
    CHECK_REFUSED(plan(with_workspace((tmp.path / "shared" / "project").string())),
                  policy_violation, "writable by its group or others");
  }
  SECTION("a sticky directory is fine above what is ours, not above someone else's") {
    fs::permissions(tmp.path / "shared", fs::perms(01777));
    CHECK(plan(with_workspace((tmp.path / "shared" / "project").string())));
    // The sticky directory itself is no workspace: others may add to it and rename in it.
    CHECK_REFUSED(plan(with_workspace((tmp.path / "shared").string())), policy_violation,
                  "writable");
    if (::geteuid() == 0) {
      REQUIRE(::chown((tmp.path / "shared" / "project").c_str(), 12345, 12345) == 0);
      CHECK_REFUSED(plan(with_workspace((tmp.path / "shared" / "project").string())),
                    policy_violation, (tmp.path / "shared").string());
    }
  }
  SECTION("'.' and '..' are not taken apart: the real path is wanted") {
    CHECK_REFUSED(plan(with_workspace((tmp.path / "shared" / ".." / "shared").string())),
                  invalid_request, "'..'");
    CHECK_REFUSED(plan(with_workspace((tmp.path / "." / "shared").string())), invalid_request,
                  "'.'");
  }
}

TEST_CASE("policy: the workspace mount is verified against the checked directory", "[policy]") {
  temp_dir tmp;
  fs::create_directories(tmp.path / "ws");
  fs::create_directories(tmp.path / "other");
  auto p = plan(with_workspace((tmp.path / "ws").string()));
  REQUIRE(p);
  // Our own process: /proc/<pid>/root is "/", so the container path may be the host path.
  auto id = p->workspace;
  id.container_path = (tmp.path / "ws").string();
  const auto pid = static_cast<int64_t>(::getpid());
  CHECK_FALSE(pol::verify_workspace_mount(id, pid));

  // Swapped: another directory now at that path.
  fs::rename(tmp.path / "ws", tmp.path / "ws-old");
  fs::rename(tmp.path / "other", tmp.path / "ws");
  CHECK_REFUSED(pol::verify_workspace_mount(id, pid), policy_violation, "changed");
  // Swapped for a link to the original: still another path, but the same directory.
  fs::remove(tmp.path / "ws");
  fs::create_directory_symlink(tmp.path / "ws-old", tmp.path / "ws");
  CHECK_FALSE(pol::verify_workspace_mount(id, pid));
  // Cannot look: that is a refusal too.
  fs::remove(tmp.path / "ws");
  CHECK_REFUSED(pol::verify_workspace_mount(id, pid), policy_violation, "could not be verified");
  CHECK_REFUSED(pol::verify_workspace_mount(id, 0), policy_violation, "no process");
}

// -- the policy's workspace roots ------------------------------------------------------------

TEST_CASE("policy: workspaces only below the policy's workspace roots", "[policy]") {
  temp_dir tmp;
  fs::create_directory(tmp.path / "inside");
  fs::create_directory(tmp.path / "ro");
  temp_dir elsewhere;
  SECTION("no roots (a node's default): no workspace at all") {
    pol::runtime_config cfg;
    cfg.policy = pol::policy::node_default();
    CHECK_REFUSED(plan(with_workspace(tmp.path.string()), cfg), policy_violation,
                  "(policy key workspace_roots would allow it)");
  }
  SECTION("below a root, and not outside it") {
    pol::runtime_config cfg;
    cfg.policy.workspace_roots = {{tmp.path.string(), true}};
    CHECK(plan(with_workspace((tmp.path / "inside").string(), msg::access_mode::rw), cfg));
    CHECK(plan(with_workspace(tmp.path.string()), cfg));
    CHECK_REFUSED(plan(with_workspace(elsewhere.path.string()), cfg), policy_violation,
                  "outside every workspace root (" + tmp.path.string() + ")");
    CHECK_REFUSED(plan(with_workspace(elsewhere.path.string()), cfg), policy_violation,
                  "(policy key workspace_roots would allow it)");
  }
  SECTION("a read-only root allows only :ro") {
    pol::runtime_config cfg;
    cfg.policy.workspace_roots = {{elsewhere.path.string(), true},
                                  {(tmp.path / "ro").string(), false}};
    CHECK(plan(with_workspace((tmp.path / "ro").string(), msg::access_mode::ro), cfg));
    CHECK_REFUSED(plan(with_workspace((tmp.path / "ro").string(), msg::access_mode::rw), cfg),
                  policy_violation, "(policy key workspace_roots[1].writable would allow it)");
  }
  SECTION("a root of / still never allows the host's system directories") {
    pol::runtime_config cfg;
    cfg.policy.workspace_roots = {{"/", true}};
    CHECK_REFUSED(plan(with_workspace("/etc"), cfg), policy_violation, "system directories");
  }
}
