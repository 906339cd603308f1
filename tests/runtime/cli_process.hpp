// The corral binary run as a real process (CORRAL_CLI_PATH), for the CLI and security tests.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>

#include "runtime_fixture.hpp"

extern char** environ;

namespace corral::runtime_tests {

struct cli_result {
  int code = -1;
  std::string out;
  std::string err;
};

inline std::ostream& operator<<(std::ostream& os, const cli_result& r) {
  return os << "exit " << r.code << "\n--- stdout\n" << r.out << "--- stderr\n" << r.err << "---";
}

// The environment and argv of a corral child: ours with CORRAL_RUNTIME=runtime and no
// CORRAL_NODE, and CORRAL_CLI_PATH with `args`. The char* views point into the strings.
struct cli_invocation {
  std::vector<std::string> env_strings, argv_strings;
  std::vector<char*> envp, argv;

  cli_invocation(const std::vector<std::string>& args, const std::string& runtime) {
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string_view entry{*e};
      if (entry.rfind("CORRAL_RUNTIME=", 0) == 0 || entry.rfind("CORRAL_NODE=", 0) == 0) continue;
      env_strings.emplace_back(entry);
    }
    env_strings.push_back("CORRAL_RUNTIME=" + runtime);
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    argv_strings = {CORRAL_CLI_PATH};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    for (auto& s : argv_strings) argv.push_back(s.data());
    argv.push_back(nullptr);
  }
  cli_invocation(const cli_invocation&) = delete;
  cli_invocation& operator=(const cli_invocation&) = delete;
};

// Runs the corral binary with `args`, CORRAL_RUNTIME=runtime and no CORRAL_NODE; captures
// stdout, stderr and the exit code (-signal if it died of one). Tests call it from several
// threads at once, and Catch2's macros are not thread-safe (INFO from eight threads corrupted
// its message stack: "double free or corruption"): failures to start or finish are told in the
// result (code -1, the reason in `err`) for the calling test to check.
inline cli_result run_cli(const std::vector<std::string>& args, const std::string& runtime,
                          std::chrono::seconds limit = 90s) {
  cli_invocation call(args, runtime);

  cli_result r;
  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    r.err = std::string("pipe2: ") + std::strerror(errno);
    return r;
  }
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    r.err = std::string("pipe2: ") + std::strerror(errno);
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return r;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  pid_t pid = 0;
  const int spawned =
      ::posix_spawn(&pid, CORRAL_CLI_PATH, &actions, nullptr, call.argv.data(), call.envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (spawned != 0) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    r.err = std::string("spawning ") + CORRAL_CLI_PATH + ": " + std::strerror(spawned);
    return r;
  }

  const auto deadline = steady::now() + limit;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  int open_fds = 2;
  bool killed = false;
  while (open_fds > 0) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now()).count();
    if (left <= 0 && !killed) {
      ::kill(pid, SIGKILL);
      killed = true;
    }
    const int n = ::poll(fds, 2, left > 0 ? static_cast<int>(left) : 1000);
    if (n < 0 && errno == EINTR) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[65536];
      const auto got = ::read(fds[i].fd, buf, sizeof buf);
      if (got > 0) {
        sinks[i]->append(buf, static_cast<std::size_t>(got));
      } else {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  if (killed) {
    r.code = -1;
    r.err += "\n(corral did not finish within " + std::to_string(limit.count()) + " s: killed)";
  }
  return r;
}

}  // namespace corral::runtime_tests
