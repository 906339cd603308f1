// Bad input gets a typed error that names the problem, and never a container.
#include <filesystem>

#include "runtime_fixture.hpp"

using namespace corral::runtime_tests;

namespace {

// The error of an acquire that must fail, with its description for the assertions.
struct refusal {
  caf::error err;
  std::string text;
};

// A host directory for the length of a test.
struct temp_dir {
  std::filesystem::path path;
  explicit temp_dir(std::filesystem::path p) : path(std::move(p)) {
    std::filesystem::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace

TEST_CASE_METHOD(runtime_fixture, "bad sandbox specs are refused with a typed error",
                 "[runtime][input]") {
  auto refused = [&](const std::string& key, const sandbox_spec& spec) {
    auto r = acquire(key, spec);
    INFO("key " << key << ": " << what(r));
    REQUIRE_FALSE(r);
    return refusal{r.error(), describe(r.error())};
  };

  SECTION("an image outside the allowlist") {
    sandbox_spec spec;
    spec.image = "alpine:3";
    auto r = refused("img", spec);
    CHECK(r.err == corral_errc::policy_violation);
    CHECK(contains(r.text, "alpine:3"));
    CHECK(contains(r.text, "allowlist"));
  }

  SECTION("a malformed image reference") {
    sandbox_spec spec;
    spec.image = "UPPER/Case::x";
    auto r = refused("img", spec);
    CHECK(r.err == corral_errc::invalid_request);
    CHECK(contains(r.text, "UPPER/Case::x"));
  }

  SECTION("limits: negative, absurd, and zero for the default") {
    sandbox_spec negative;
    negative.memory_bytes = -1;
    auto r = refused("mem", negative);
    CHECK(r.err == corral_errc::invalid_request);
    CHECK(contains(r.text, "memory"));

    sandbox_spec huge;
    huge.memory_bytes = 1LL << 40;
    r = refused("mem", huge);
    CHECK(r.err == corral_errc::policy_violation);
    CHECK(contains(r.text, "memory"));

    sandbox_spec pids;
    pids.pids_limit = 1'000'000'000;
    r = refused("pids", pids);
    CHECK(r.err == corral_errc::policy_violation);
    CHECK(contains(r.text, "pids"));

    sandbox_spec negative_timeout;
    negative_timeout.exec_timeout = caf::timespan{-1s};
    r = refused("timeout", negative_timeout);
    CHECK(r.err == corral_errc::invalid_request);
    CHECK(contains(r.text, "exec timeout"));

    sandbox_spec zero;  // every limit zero: the strict defaults
    zero.pids_limit = 0;
    zero.memory_bytes = 0;
    auto ok = acquire("zero", zero);
    REQUIRE_OK(ok);
    CHECK(ok->pids_limit == rt.policy.defaults.pids);
    CHECK(ok->memory_bytes == rt.policy.defaults.memory);
    CHECK_OK(release("zero"));
  }

  SECTION("workspaces") {
    sandbox_spec missing;
    missing.workspace.host_path = "/nonexistent/corral/workspace";
    missing.workspace.access = access_mode::ro;
    auto r = refused("ws", missing);
    CHECK(r.err == corral_errc::invalid_request);
    CHECK(contains(r.text, "/nonexistent/corral/workspace"));
    CHECK(contains(r.text, "does not exist"));

    sandbox_spec socket_dir;
    socket_dir.workspace.host_path = "/var/run";
    socket_dir.workspace.access = access_mode::rw;
    r = refused("ws", socket_dir);
    CHECK(r.err == corral_errc::policy_violation);
    CHECK(contains(r.text, "/var/run"));

    sandbox_spec root;
    root.workspace.host_path = "/";
    root.workspace.access = access_mode::ro;
    r = refused("ws", root);
    CHECK(r.err == corral_errc::policy_violation);
    CHECK(contains(r.text, "root"));

    // A real directory is mounted read-only: readable, not writable.
    const temp_dir dir{std::filesystem::temp_directory_path() / rt.name};
    std::ofstream(dir.path / "hello.txt") << "from the host\n";
    sandbox_spec fine;
    fine.workspace.host_path = dir.path.string();
    fine.workspace.access = access_mode::ro;
    auto ws = acquire("ws", fine);
    REQUIRE_OK(ws);
    auto read = exec("ws", {"cat", "/workspace/hello.txt"});
    REQUIRE_OK(read);
    CHECK(read->stdout_data == "from the host\n");
    auto write = exec("ws", sh("echo x > /workspace/new.txt"));
    REQUIRE_OK(write);
    CHECK(write->exit_code != 0);
    CHECK(contains(write->stderr_data, "Read-only file system"));
    CHECK_OK(release("ws"));
  }

  SECTION("keys") {
    auto r = refused("../x", {});
    CHECK(r.err == corral_errc::invalid_request);
    CHECK(contains(r.text, "../x"));
    r = refused("", {});
    CHECK(r.err == corral_errc::invalid_request);
    r = refused(std::string(129, 'k'), {});
    CHECK(r.err == corral_errc::invalid_request);
  }

  CHECK(containers().empty());
}

TEST_CASE_METHOD(runtime_fixture, "reserved env keys are stripped from a sandbox",
                 "[runtime][input]") {
  sandbox_spec spec;
  spec.env["LD_PRELOAD"] = "/tmp/evil.so";
  spec.env["HTTP_PROXY"] = "http://10.0.0.1:3128";
  spec.env["CORRAL_EXEC"] = "forged";
  spec.env["FINE"] = "yes";
  auto info = acquire("env", spec);
  REQUIRE_OK(info);
  CHECK(info->warnings.size() == 3);
  for (const std::string key : {"LD_PRELOAD", "HTTP_PROXY", "CORRAL_EXEC"}) {
    bool named = false;
    for (const auto& w : info->warnings) named = named || contains(w, key);
    CHECK(named);
  }
  auto r = exec("env", {"env"});
  REQUIRE_OK(r);
  CHECK(contains(r->stdout_data, "FINE=yes\n"));
  CHECK_FALSE(contains(r->stdout_data, "LD_PRELOAD"));
  CHECK_FALSE(contains(r->stdout_data, "HTTP_PROXY"));
  CHECK_FALSE(contains(r->stdout_data, "forged"));
  CHECK_OK(release("env"));
}

TEST_CASE_METHOD(runtime_fixture, "unknown, invalid and released keys", "[runtime][input]") {
  auto ex = exec("nobody", {"true"});
  REQUIRE_FALSE(ex);
  CHECK(ex.error() == corral_errc::not_found);
  CHECK(contains(describe(ex.error()), "nobody"));
  auto lk = lookup("nobody");
  REQUIRE_FALSE(lk);
  CHECK(lk.error() == corral_errc::not_found);
  auto rl = release("nobody");
  REQUIRE_FALSE(rl);
  CHECK(rl.error() == corral_errc::not_found);

  auto bad = exec("../x", {"true"});
  REQUIRE_FALSE(bad);
  CHECK(bad.error() == corral_errc::invalid_request);
  auto bad_lookup = lookup("a/b/c");
  REQUIRE_FALSE(bad_lookup);
  CHECK(bad_lookup.error() == corral_errc::invalid_request);

  // Bad execs on a live sandbox.
  REQUIRE_OK(acquire("live"));
  auto empty = exec("live", std::vector<std::string>{});
  REQUIRE_FALSE(empty);
  CHECK(empty.error() == corral_errc::invalid_request);
  auto negative = exec("live", make_exec({"true"}, caf::timespan{-1s}));
  REQUIRE_FALSE(negative);
  CHECK(negative.error() == corral_errc::invalid_request);
  auto workdir = make_exec({"pwd"});
  workdir.workdir = "../etc";
  auto wd = exec("live", workdir);
  REQUIRE_FALSE(wd);
  CHECK(wd.error() == corral_errc::invalid_request);

  // Released: the key is unknown again, at once.
  auto released = release("live");
  REQUIRE_OK(released);
  CHECK(released->status == sandbox_status::removed);
  auto after = exec("live", {"true"});
  INFO(what(after));
  REQUIRE_FALSE(after);
  CHECK(after.error() == corral_errc::not_found);
  auto gone = lookup("live");
  REQUIRE_FALSE(gone);
  CHECK(gone.error() == corral_errc::not_found);
  CHECK(containers().empty());
}

TEST_CASE_METHOD(runtime_fixture, "a missing engine socket is engine_unavailable at once",
                 "[runtime][input]") {
  rt.socket_path = "/nonexistent.sock";
  const auto t0 = steady::now();
  auto r = acquire("k");
  const auto took = steady::now() - t0;
  REQUIRE_FALSE(r);
  CHECK(r.error() == corral_errc::engine_unavailable);
  CHECK(contains(describe(r.error()), "/nonexistent.sock"));
  CHECK(took < 5s);
  // Everything else answers too, rather than hanging.
  auto l = list();
  REQUIRE_OK(l);
  CHECK(l->empty());
  auto ex = exec("k", {"true"});
  REQUIRE_FALSE(ex);
  CHECK(ex.error() == corral_errc::not_found);
}
