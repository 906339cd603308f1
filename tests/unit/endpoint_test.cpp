// resolve_engine_socket(): DOCKER_HOST (unix:// only), then /var/run/docker.sock, then
// ~/.docker/run/docker.sock.
//
// The fallbacks depend on whether this machine has /var/run/docker.sock. Each test checks
// the branch the machine is in, so it is deterministic either way (CI starts the engine
// first, so there the system socket exists).
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "docker/client.hpp"

namespace docker = corral::docker;
namespace fs = std::filesystem;
using docker::errc;

namespace {

const std::string system_socket = "/var/run/docker.sock";

bool has_system_socket() {
  std::error_code ec;
  return fs::exists(system_socket, ec);
}

// A temporary $HOME, removed at scope exit.
struct temp_home {
  temp_home() {
    std::string pattern = (fs::temp_directory_path() / "corral-home-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~temp_home() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  // Creates ~/.docker/run/docker.sock (a plain file does: only existence is checked).
  std::string make_user_socket() const {
    fs::create_directories(path + "/.docker/run");
    const std::string socket = path + "/.docker/run/docker.sock";
    std::ofstream(socket).put('\0');
    return socket;
  }
  std::string path;
};

}  // namespace

TEST_CASE("DOCKER_HOST=unix:///path gives the path", "[endpoint]") {
  auto r = docker::resolve_engine_socket("unix:///x", nullptr);
  REQUIRE(r.ok());
  CHECK(*r == "/x");

  auto deep = docker::resolve_engine_socket("unix:///run/user/1000/docker.sock", "/home/u");
  REQUIRE(deep.ok());
  CHECK(*deep == "/run/user/1000/docker.sock");
}

TEST_CASE("DOCKER_HOST wins over an existing socket in $HOME", "[endpoint]") {
  temp_home home;
  home.make_user_socket();
  auto r = docker::resolve_engine_socket("unix:///elsewhere.sock", home.path.c_str());
  REQUIRE(r.ok());
  CHECK(*r == "/elsewhere.sock");
}

TEST_CASE("DOCKER_HOST with another scheme is invalid_request naming DOCKER_HOST", "[endpoint]") {
  const char* host =
      GENERATE("tcp://1.2.3.4:2375", "ssh://user@host", "npipe:////./pipe/docker_engine", "fd://",
               "/var/run/docker.sock", "UNIX:///x", "unix:/x");
  auto r = docker::resolve_engine_socket(host, "/home/u");
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::invalid_request);
  CHECK(r.err().message.find("DOCKER_HOST") != std::string::npos);
  CHECK(r.err().message.find(host) != std::string::npos);
}

TEST_CASE("DOCKER_HOST=unix:// with no path is an error", "[endpoint]") {
  auto r = docker::resolve_engine_socket("unix://", "/home/u");
  REQUIRE_FALSE(r.ok());
  CHECK(r.err().code == errc::invalid_request);
  CHECK(r.err().message.find("DOCKER_HOST") != std::string::npos);
}

TEST_CASE("unset or empty DOCKER_HOST falls back to the system socket, then $HOME", "[endpoint]") {
  const char* unset = GENERATE(static_cast<const char*>(nullptr), "");
  temp_home home;
  if (has_system_socket()) {
    // The system socket comes first, whether or not $HOME has one.
    auto r = docker::resolve_engine_socket(unset, home.path.c_str());
    REQUIRE(r.ok());
    CHECK(*r == system_socket);
    home.make_user_socket();
    auto again = docker::resolve_engine_socket(unset, home.path.c_str());
    REQUIRE(again.ok());
    CHECK(*again == system_socket);
    auto no_home = docker::resolve_engine_socket(unset, nullptr);
    REQUIRE(no_home.ok());
    CHECK(*no_home == system_socket);
  } else {
    // Neither exists: engine_unavailable naming both places.
    auto none = docker::resolve_engine_socket(unset, home.path.c_str());
    REQUIRE_FALSE(none.ok());
    CHECK(none.err().code == errc::engine_unavailable);
    CHECK(none.err().message.find(system_socket) != std::string::npos);
    CHECK(none.err().message.find(home.path + "/.docker/run/docker.sock") != std::string::npos);
    // The user's socket is found.
    const std::string user_socket = home.make_user_socket();
    auto r = docker::resolve_engine_socket(unset, home.path.c_str());
    REQUIRE(r.ok());
    CHECK(*r == user_socket);
    // No $HOME: only the system socket is looked for.
    auto no_home = docker::resolve_engine_socket(unset, nullptr);
    REQUIRE_FALSE(no_home.ok());
    CHECK(no_home.err().code == errc::engine_unavailable);
    CHECK(no_home.err().message.find(".docker") == std::string::npos);
  }
}

TEST_CASE("the no-argument form reads DOCKER_HOST from the environment", "[endpoint]") {
  // Only DOCKER_HOST set to a unix path is independent of the machine; restore it after.
  const char* before = std::getenv("DOCKER_HOST");
  const std::string saved = before ? before : "";
  ::setenv("DOCKER_HOST", "unix:///from/env.sock", 1);
  auto r = docker::resolve_engine_socket();
  ::setenv("DOCKER_HOST", "tcp://10.0.0.1:2375", 1);
  auto tcp = docker::resolve_engine_socket();
  if (before)
    ::setenv("DOCKER_HOST", saved.c_str(), 1);
  else
    ::unsetenv("DOCKER_HOST");

  REQUIRE(r.ok());
  CHECK(*r == "/from/env.sock");
  REQUIRE_FALSE(tcp.ok());
  CHECK(tcp.err().code == errc::invalid_request);
}
