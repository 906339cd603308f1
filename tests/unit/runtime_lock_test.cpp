// runtime_lock: a runtime name is held once per engine, by one process, until it exits.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <variant>

#include "actors/runtime_lock.hpp"

namespace actors = corral::actors;

namespace {

// A lock directory of the test's own, removed with it.
struct temp_lock_dir {
  temp_lock_dir() {
    char pattern[] = "/tmp/corral-lock-test-XXXXXX";
    REQUIRE(::mkdtemp(pattern) != nullptr);  // 0700
    path = pattern;
  }
  ~temp_lock_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string path;
};

bool held(const std::variant<actors::runtime_lock, actors::runtime_lock_refusal>& taken) {
  return std::holds_alternative<actors::runtime_lock>(taken);
}

const actors::runtime_lock_refusal& refusal(
    const std::variant<actors::runtime_lock, actors::runtime_lock_refusal>& taken) {
  return std::get<actors::runtime_lock_refusal>(taken);
}

}  // namespace

TEST_CASE("runtime lock: one holder per engine and name, free again once released",
          "[runtime_lock]") {
  temp_lock_dir dir;
  auto first = actors::lock_runtime_name("/run/engine-a.sock", "node-a", dir.path);
  REQUIRE(held(first));

  auto again = actors::lock_runtime_name("/run/engine-a.sock", "node-a", dir.path);
  REQUIRE_FALSE(held(again));
  CHECK(refusal(again).held_elsewhere);
  CHECK(refusal(again).holder == ::getpid());
  CHECK(refusal(again).path == std::get<actors::runtime_lock>(first).path());

  // Another name, or the same name on another engine, is another runtime.
  CHECK(held(actors::lock_runtime_name("/run/engine-a.sock", "node-b", dir.path)));
  CHECK(held(actors::lock_runtime_name("/run/engine-b.sock", "node-a", dir.path)));

  const auto file = std::get<actors::runtime_lock>(first).path();
  first = actors::lock_runtime_name("/run/engine-c.sock", "other", dir.path);  // releases
  CHECK_FALSE(std::filesystem::exists(file));  // names that come and go leave nothing
  CHECK(held(actors::lock_runtime_name("/run/engine-a.sock", "node-a", dir.path)));
}

TEST_CASE("runtime lock: two paths to one socket are one engine", "[runtime_lock]") {
  temp_lock_dir dir;
  const std::string socket = dir.path + "/engine.sock";
  REQUIRE(std::system(("touch " + socket).c_str()) == 0);
  std::filesystem::create_symlink(socket, dir.path + "/alias.sock");
  auto first = actors::lock_runtime_name(socket, "n", dir.path);
  REQUIRE(held(first));
  auto through_link = actors::lock_runtime_name(dir.path + "/alias.sock", "n", dir.path);
  REQUIRE_FALSE(held(through_link));
  CHECK(refusal(through_link).held_elsewhere);
}

TEST_CASE("runtime lock: another process's hold names its pid and ends with the process",
          "[runtime_lock]") {
  temp_lock_dir dir;
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    auto taken = actors::lock_runtime_name("/run/engine.sock", "shared", dir.path);
    const char ok = std::holds_alternative<actors::runtime_lock>(taken) ? '1' : '0';
    if (::write(ready[1], &ok, 1) != 1) ::_exit(2);
    for (;;) ::pause();  // holds the lock until killed
  }
  ::close(ready[1]);
  char ok = 0;
  REQUIRE(::read(ready[0], &ok, 1) == 1);
  ::close(ready[0]);
  REQUIRE(ok == '1');

  auto refused = actors::lock_runtime_name("/run/engine.sock", "shared", dir.path);
  REQUIRE_FALSE(held(refused));
  CHECK(refusal(refused).held_elsewhere);
  CHECK(refusal(refused).holder == child);

  // kill -9: no cleanup of its own, the kernel drops the lock.
  REQUIRE(::kill(child, SIGKILL) == 0);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(held(actors::lock_runtime_name("/run/engine.sock", "shared", dir.path)));
}

TEST_CASE("runtime lock: a directory others may write in is refused", "[runtime_lock]") {
  temp_lock_dir dir;
  REQUIRE(::chmod(dir.path.c_str(), 0777) == 0);
  auto taken = actors::lock_runtime_name("/run/engine.sock", "n", dir.path);
  REQUIRE_FALSE(held(taken));
  CHECK_FALSE(refusal(taken).held_elsewhere);
  CHECK(refusal(taken).reason.find("writable by it alone") != std::string::npos);

  temp_lock_dir parent;
  const std::string made = parent.path + "/corral";
  CHECK(held(actors::lock_runtime_name("/run/engine.sock", "n", made)));
  struct stat st {};
  REQUIRE(::stat(made.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
}
