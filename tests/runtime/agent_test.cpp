// The sandbox agent (app/agent/) on the real engine, attacked as a hostile command and a
// careless client would: escapes from a timeout, a client killed mid-command, a lifetime with
// no corral process left, unread output, secrets, and the agent itself as the target.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "cli_process.hpp"
#include "messages/agent_protocol.hpp"

using namespace corral::runtime_tests;
namespace fs = std::filesystem;

namespace {

// The corral binary started in the background (stdout to `out_fd`, or /dev/null), for the
// tests that kill it or never read it.
pid_t spawn_cli(const std::vector<std::string>& args, const std::string& runtime, int out_fd = -1) {
  cli_invocation call(args, runtime);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  if (out_fd >= 0)
    posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
  else
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  const int spawned =
      ::posix_spawn(&pid, CORRAL_CLI_PATH, &actions, nullptr, call.argv.data(), call.envp.data());
  posix_spawn_file_actions_destroy(&actions);
  REQUIRE(spawned == 0);
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

// The processes of the sandbox's user, but the probe's own `ps`: what a command left.
std::string user_processes(runtime_fixture& f, const std::string& key) {
  auto ps = f.exec(key, {"ps", "-o", "user,args"});
  REQUIRE_OK(ps);
  std::string left;
  std::istringstream lines(ps->stdout_data);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("sandbox", 0) != 0) continue;
    if (line.find("ps -o user,args") != std::string::npos) continue;
    left += line + "\n";
  }
  return left;
}

}  // namespace

TEST_CASE_METHOD(runtime_fixture, "every escape from a timeout dies at it", "[runtime][agent]") {
  REQUIRE_OK(acquire("esc"));
  // A new session, an emptied environment, a double fork, a process that ignores SIGTERM and
  // one that stopped itself: all below the command, all meant to outlive it.
  const std::string script =
      "env -i sh -c 'while :; do :; done' >/dev/null 2>&1 </dev/null &"
      "setsid sh -c 'trap \"\" TERM; sleep 300' &"
      "sh -c '(sleep 301 &) ; exit 0' &"
      "sh -c 'kill -STOP $$; sleep 302' &"
      "sleep 60";
  const auto t0 = steady::now();
  auto r = exec("esc", make_exec(sh(script), caf::timespan{2s}));
  REQUIRE_OK(r);
  CHECK(r->end == exec_end::timed_out);
  CHECK(r->exit_code == 124);
  CHECK(steady::now() - t0 < 6s);
  CHECK(user_processes(*this, "esc").empty());

  SECTION("and so does what a command leaves running when it exits") {
    auto quick = exec("esc", sh("sleep 303 & setsid sleep 304 & echo done"));
    REQUIRE_OK(quick);
    CHECK(quick->stdout_data == "done\n");
    CHECK(user_processes(*this, "esc").empty());
  }
}

TEST_CASE_METHOD(runtime_fixture,
                 "a client SIGKILLed mid-exec: its command's tree dies, the sandbox serves on",
                 "[runtime][agent][cli]") {
  auto created = run_cli({"create", "orphan"}, rt.name);
  INFO(created);
  REQUIRE(created.code == 0);
  const pid_t client = spawn_cli(
      {"exec", "--timeout", "60s", "orphan", "--", "sh", "-c", "setsid sleep 305 & sleep 306"},
      rt.name);
  auto processes = [&] { return run_cli({"exec", "orphan", "--", "ps", "-o", "args"}, rt.name); };
  // Running (both sleeps, the setsid one included) before the client dies.
  REQUIRE(eventually(10s, [&] {
    const auto ps = processes().out;
    return contains(ps, "sleep 306") && contains(ps, "sleep 305");
  }));
  ::kill(client, SIGKILL);
  CHECK(wait_exit(client) == -SIGKILL);
  // No corral process owns the command now: the agent ends its tree at once, long before its
  // 60 s deadline (which it would enforce in any case). "At once": within 3 s, CLI starts included.
  const auto killed_at = steady::now();
  CHECK(eventually(10s, [&] {
    const auto after = processes();
    return after.code == 0 && !contains(after.out, "sleep 30");
  }));
  CHECK(steady::now() - killed_at < 3s);
  CHECK(run_cli({"rm", "orphan"}, rt.name).code == 0);
}

TEST_CASE_METHOD(runtime_fixture, "a lifetime ends the sandbox with no corral process running",
                 "[runtime][agent][cli]") {
  // The lifetime counts from the sandbox's configure, inside `create`: not before the CLI
  // started, not after it returned (a loaded machine once took 0.5 s between the two).
  const auto asked_at = steady::now();
  auto created = run_cli({"create", "lt", "--lifetime", "3s"}, rt.name);
  INFO(created);
  REQUIRE(created.code == 0);
  const auto created_at = steady::now();
  REQUIRE(containers().size() == 1);
  const auto id = containers().at(0).id;
  // Ends by itself, at its lifetime: not before 3 s, and within a few seconds after.
  CHECK(eventually(10s, [&] {
    auto ins = inspect(id);
    return !ins || !ins->state.running;
  }));
  const auto ended = steady::now();
  CHECK(ended - asked_at >= 3s);
  CHECK(ended - created_at < 8s);
  auto late = run_cli({"exec", "lt", "--", "echo", "still-alive"}, rt.name);
  INFO(late);
  CHECK(late.code != 0);
  CHECK_FALSE(contains(late.out, "still-alive"));
  // The next process found it ended and removed it (the fixture checks nothing is left).
  run_cli({"rm", "lt"}, rt.name);
}

TEST_CASE_METHOD(runtime_fixture, "output is capped at the source, live and stored",
                 "[runtime][agent][cli]") {
  auto r =
      run_cli({"run", "--max-output", "1k", "--", "sh", "-c", "yes | head -c 200000000"}, rt.name);
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK(r.out.size() == 1024);
  CHECK(contains(r.err, "kept 1024 of 200000000 bytes"));

  SECTION("a reader that never reads keeps the CLI small") {
    int pipe_fds[2];
    REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
    const pid_t cli = spawn_cli({"run", "--timeout", "20s", "--max-output", "16m", "--", "yes"},
                                rt.name, pipe_fds[1]);
    ::close(pipe_fds[1]);
    // The CLI's RSS, sampled while `yes` floods for 6 s and nobody reads: its peak is the check
    // (a sampling period, not a sleep standing for a condition).
    int64_t rss_kib = -1;
    for (const auto until = steady::now() + 6s; steady::now() < until;) {
      std::ifstream status("/proc/" + std::to_string(cli) + "/status");
      for (std::string line; std::getline(status, line);)
        if (line.rfind("VmRSS:", 0) == 0)
          rss_kib = std::max<int64_t>(rss_kib, std::stoll(line.substr(6)));
      std::this_thread::sleep_for(200ms);
    }
    INFO("CLI peak RSS " << rss_kib << " KiB");
    CHECK(rss_kib > 0);
    CHECK(rss_kib < 64 * 1024);
    // A SIGTERM releases the sandbox (nothing left: the fixture checks).
    ::kill(cli, SIGTERM);
    CHECK(wait_exit(cli) == 128 + SIGTERM);
    ::close(pipe_fds[0]);
  }
}

TEST_CASE_METHOD(runtime_fixture, "secrets stay out of the container's config and PID 1",
                 "[runtime][agent][security]") {
  sandbox_spec spec;
  spec.env = {{"SANDBOX_TOKEN", "s3cr3t-sandbox"}};
  auto info = acquire("sec", spec);
  REQUIRE_OK(info);
  exec_request req = make_exec(sh("echo $SANDBOX_TOKEN $CALL_TOKEN"));
  req.env = {{"CALL_TOKEN", "s3cr3t-call"}};
  auto both = exec("sec", req);
  REQUIRE_OK(both);
  CHECK(both->stdout_data == "s3cr3t-sandbox s3cr3t-call\n");

  auto ins = inspect(info->container_id);
  REQUIRE_OK(ins);
  for (const auto& e : ins->env) CHECK_FALSE(contains(e, "s3cr3t"));
  for (const auto& c : ins->cmd) CHECK_FALSE(contains(c, "s3cr3t"));
  for (const auto& [k, v] : ins->labels) CHECK_FALSE(contains(v, "s3cr3t"));

  // PID 1's environment is refused; no process holds the call's token once its command ended.
  auto probe = exec("sec", sh("cat /proc/1/environ >/dev/null 2>&1 || echo refused; "
                              "for e in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $e; done "
                              "2>/dev/null | grep -c s3cr3t-call"));
  REQUIRE_OK(probe);
  CHECK(probe->stdout_data == "refused\n0\n");
}

TEST_CASE_METHOD(runtime_fixture, "a hostile command cannot reach the agent",
                 "[runtime][agent][security]") {
  REQUIRE_OK(acquire("hostile"));
  // Each attempt prints its name and whether it worked.
  const std::string script =
      "try() { name=$1; shift; if \"$@\" >/dev/null 2>&1; then echo \"$name: yes\"; "
      "else echo \"$name: no\"; fi; }\n"
      "try list-run-dir ls /corral/run\n"
      "try socket-exists test -e /corral/run/agent.sock\n"
      "try via-proc-root ls /proc/1/root/corral/run\n"
      "try via-proc-fd ls /proc/1/fd\n"
      "try environ cat /proc/1/environ\n"
      "try memory head -c 1 /proc/1/mem\n"
      "try maps cat /proc/1/maps\n"
      "try signal-agent kill -0 1\n"
      "try kill-agent kill -9 1\n"
      "try kill-keeper kill -9 $PPID\n"
      "try write-agent-binary sh -c 'echo x >> /corral/agent'\n";
  auto r = exec("hostile", sh(script));
  REQUIRE_OK(r);
  INFO(r->stdout_data << r->stderr_data);
  CHECK(r->exit_code == 0);
  CHECK_FALSE(contains(r->stdout_data, ": yes"));
  CHECK(contains(r->stdout_data, "kill-keeper: no\n"));
  // The agent is untouched: the sandbox still serves.
  auto after = exec("hostile", {"echo", "still-serving"});
  REQUIRE_OK(after);
  CHECK(after->stdout_data == "still-serving\n");
}

TEST_CASE_METHOD(runtime_fixture, "a root command cannot speak to its sandbox's agent",
                 "[runtime][agent][security]") {
  // With `allow_root`, the sandbox user is the container's root, which owns the run directory
  // and the agent's socket: only the agent's check of its peer (outside the sandbox's pid
  // namespace, or nothing) keeps it from a welcome and from starting commands without limits.
  const probe_dir dir(CORRAL_AGENT_PROBE_PATH);
  auto spec = dir.root_spec(rt);
  REQUIRE_OK(acquire("root-probe", spec));
  auto who = exec("root-probe", sh("id -u; ls -ld /corral/run/agent.sock"));
  REQUIRE_OK(who);
  INFO(who->stdout_data << who->stderr_data);
  REQUIRE(who->stdout_data.rfind("0\n", 0) == 0);  // root, the socket's owner
  auto probe = exec("root-probe", {"/workspace/probe", "/corral/run/agent.sock"});
  REQUIRE_OK(probe);
  INFO(probe->stdout_data << probe->stderr_data);
  CHECK(probe->stdout_data == "closed\n");
  CHECK(probe->exit_code == 1);
  // The agent still serves corral.
  auto after = exec("root-probe", {"echo", "still-serving"});
  REQUIRE_OK(after);
  CHECK(after->stdout_data == "still-serving\n");
  CHECK_OK(release("root-probe"));
}

namespace {

// The key a sandbox's agent socket claims in its welcome (asked from the host, as corral asks).
std::string welcome_key(const std::string& socket_path) {
  namespace proto = corral::agent_protocol;
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (fd >= 0) ::close(fd);
    return "";
  }
  const auto hello = proto::writer(proto::frame::hello, 0).u32(proto::version).finish();
  std::string in;
  if (::write(fd, hello.data(), hello.size()) == static_cast<ssize_t>(hello.size())) {
    char buf[4096];
    for (int reads = 0; reads < 10; ++reads) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 1000) <= 0) break;
      const auto n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      in.append(buf, static_cast<std::size_t>(n));
      std::size_t used = 0;
      bool bad = false;
      if (auto f = proto::next_frame(in, used, bad); f && f->type == proto::frame::welcome) {
        proto::reader r(f->payload);
        (void)r.u32();
        (void)r.str();
        ::close(fd);
        return r.str();
      }
    }
  }
  ::close(fd);
  return "";
}

}  // namespace

TEST_CASE_METHOD(runtime_fixture, "a sandbox that impersonates its agent cannot take another key",
                 "[runtime][agent][security]") {
  // A root sandbox user (allow_root) owns the run directory: its `command` puts a listener of
  // its own in the agent's place, answering with another key's name. A process that adopts the
  // sandbox later believes a welcome's key only if the container's name is that key's claim.
  const probe_dir dir(CORRAL_AGENT_PROBE_PATH);
  auto spec = dir.root_spec(rt);
  spec.command = {"/workspace/probe", "--impersonate", "victim"};
  rt.keep_sandboxes_on_shutdown = true;  // the restart below adopts it
  auto made = acquire("attacker", spec);
  REQUIRE_OK(made);
  auto ins = inspect(made->container_id);
  REQUIRE_OK(ins);
  const auto sandbox_id = ins->labels.at(corral::actors::label_sandbox_id);
  const auto socket = rt.agent_run_root + "/" + sandbox_id + "/agent.sock";
  // The impersonation is in place (what any later process would meet).
  REQUIRE(eventually(10s, [&] { return welcome_key(socket) == "victim"; }));
  // A restart: the new supervisor adopts the runtime's containers through their agents.
  REQUIRE(stop_supervisor());
  rt.keep_sandboxes_on_shutdown = false;
  REQUIRE(inspect(made->container_id));  // kept for the restart
  auto victim = lookup("victim");
  INFO(what(victim));
  CHECK_FALSE(victim);
  if (!victim) CHECK(victim.error() == corral_errc::not_found);
  CHECK_FALSE(lookup("attacker"));
  CHECK(inspect(made->container_id));  // left alone, not removed under the lie either
  // Left alone, not adopted under the lie (nor released by this runtime): removed here.
  auto removed = corral::docker::blocking<void>(
      [&](auto done) { engine().container_remove(made->container_id, true, std::move(done)); });
  CHECK(static_cast<bool>(removed));
  std::error_code ec;
  fs::remove_all(rt.agent_run_root + "/" + sandbox_id, ec);
}

TEST_CASE_METHOD(runtime_fixture, "spawn failures are 127 and 126 with the reason",
                 "[runtime][agent]") {
  REQUIRE_OK(acquire("spawn"));
  auto missing = exec("spawn", {"no-such-command"});
  REQUIRE_OK(missing);
  CHECK(missing->exit_code == 127);
  CHECK(contains(missing->stderr_data, "no-such-command"));
  auto not_exec = exec("spawn", {"/etc/passwd"});
  REQUIRE_OK(not_exec);
  CHECK(not_exec->exit_code == 126);
  auto killed = exec("spawn", sh("kill -9 $$"));
  REQUIRE_OK(killed);
  CHECK(killed->exit_code == 137);
}

TEST_CASE_METHOD(runtime_fixture, "an agent killed from outside ends the sandbox as lost",
                 "[runtime][agent]") {
  auto info = acquire("victim");
  REQUIRE_OK(info);
  auto pending = self->request(sup(), caf::timespan{60s}, exec_atom_v, std::string("victim"),
                               make_exec({"sleep", "30"}));
  // The command runs before the agent is killed.
  REQUIRE(eventually(10s, [&] {
    auto ps = exec("victim", {"ps", "-o", "args"});
    return ps && contains(ps->stdout_data, "sleep 30");
  }));
  auto ins = inspect(info->container_id);
  REQUIRE_OK(ins);
  REQUIRE(ins->state.pid > 0);
  REQUIRE(::kill(static_cast<pid_t>(ins->state.pid), SIGKILL) == 0);
  exec_result result;
  bool answered = false;
  pending.receive([&](exec_result& r) { result = std::move(r), answered = true; },
                  [&](caf::error& err) { FAIL_CHECK("exec failed: " << describe(err)); });
  REQUIRE(answered);
  CHECK(result.end == exec_end::sandbox_lost);
  auto later = exec("victim", {"true"});
  REQUIRE_FALSE(later);
  CHECK((later.error() == corral_errc::sandbox_lost || later.error() == corral_errc::not_found));
  CHECK(eventually(5s, [&] { return containers().empty(); }));
}

TEST_CASE_METHOD(runtime_fixture, "eight CLI processes exec into one sandbox at once",
                 "[runtime][agent][cli]") {
  REQUIRE(run_cli({"create", "shared"}, rt.name).code == 0);
  std::vector<std::future<cli_result>> runs;
  for (int i = 1; i <= 8; ++i) {
    runs.push_back(std::async(std::launch::async, [this, i] {
      const auto n = std::to_string(i);
      return run_cli({"exec", "shared", "--", "sh", "-c",
                      "echo out-" + n + "; sleep 0.3; echo err-" + n + " >&2; exit " + n},
                     rt.name);
    }));
  }
  for (int i = 1; i <= 8; ++i) {
    auto r = runs[i - 1].get();
    INFO(r);
    CHECK(r.code == i);
    CHECK(r.out == "out-" + std::to_string(i) + "\n");
    CHECK(contains(r.err, "err-" + std::to_string(i) + "\n"));
  }
  CHECK(run_cli({"rm", "shared"}, rt.name).code == 0);
}
