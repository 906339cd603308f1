// Containers against the real engine: hardened create read back field by field, lifecycle
// (start/stop/wait/pause/rename/remove), logs, stats, list.
#include <algorithm>
#include <set>

#include "engine_fixture.hpp"

using namespace corral_test;

TEST_CASE_METHOD(engine_fixture, "containers: a hardened sandbox is created exactly as asked",
                 "[engine][containers]") {
  temp_dir data;
  data.write("hello.txt", "hello from the host\n");

  const std::string weird =
      "it's \"quoted\" 'single' $HOME ${PATH} `id` $(id -u) ; & && || | > < >> 2>&1 * ? [a] ~ # ! "
      "\\ \\n \\\" \t tab\nsecond line\r\nthird line = equals, ünïcödé";
  auto request = sandbox("hardened");
  request.env = {"WEIRD=" + weird, "EQUALS=a=b=c", "EMPTY=", "PLAIN=value"};
  request.host.nano_cpus = 500'000'000;  // 0.5 CPU
  request.host.cpu_shares = 512;
  request.host.binds = {data.path() + ":/data:ro"};
  request.labels["corral.extra"] = "spaces = and \"quotes\" and 'more'";
  const auto id = create(request);

  auto image = blocking<image_inspect_response>(
      [&](auto done) { docker().image_inspect(sandbox_image, done); });
  REQUIRE_OK(image);

  const auto info = inspect(id);
  CHECK(info.id == id);
  CHECK(info.name == "/" + request.name);
  CHECK(info.config_image == sandbox_image);
  CHECK(info.image == image->id);
  CHECK(info.state.status == "created");
  CHECK_FALSE(info.state.running);
  CHECK(info.user == "1000:1000");
  CHECK(info.working_dir == "/workspace");
  CHECK(info.cmd == request.cmd);

  auto expected_labels = image->labels;
  for (const auto& [k, v] : request.labels) expected_labels[k] = v;
  CHECK(info.labels == expected_labels);
  CHECK(info.labels.at("corral.managed-by") == "corral-test");
  CHECK(info.labels.at("corral.test") == test_name());

  // Ours byte for byte and in order, then the image's variables we did not set (PATH).
  auto expected_env = request.env;
  for (const auto& e : image->env) {
    const auto key = e.substr(0, e.find('=') + 1);
    const bool overridden =
        std::any_of(request.env.begin(), request.env.end(),
                    [&](const std::string& ours) { return ours.rfind(key, 0) == 0; });
    if (!overridden) expected_env.push_back(e);
  }
  CHECK(info.env == expected_env);

  const host_config& h = info.host;
  CHECK(h.network_mode == "none");
  CHECK(h.readonly_rootfs);
  CHECK(h.cap_drop == std::vector<std::string>{"ALL"});
  CHECK(h.cap_add.empty());
  CHECK(h.security_opt == std::vector<std::string>{"no-new-privileges"});
  CHECK(h.memory == 64 * mib);
  CHECK(h.memory_swap == 64 * mib);
  CHECK(h.nano_cpus == 500'000'000);
  CHECK(h.cpu_shares == 512);
  CHECK(h.pids_limit == 64);
  CHECK(h.init);
  CHECK_FALSE(h.auto_remove);
  CHECK(h.tmpfs == std::map<std::string, std::string>{
                       {"/tmp", "rw,noexec,nosuid,size=16m,uid=1000,gid=1000"}});
  CHECK(h.binds == std::vector<std::string>{data.path() + ":/data:ro"});

  // And the sandbox really is what the inspect says.
  start(id);
  const auto probe =
      exec(id, {"sh", "-c",
                "echo \"uid=$(id -u) gid=$(id -g)\"; "
                "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; "
                "cat /proc/1/comm; "
                "ls /sys/class/net; "
                "touch /probe 2>/dev/null && echo root-writable || echo root-readonly; "
                "touch /tmp/probe && echo tmp-writable || echo tmp-readonly; "
                "cat /data/hello.txt; "
                "touch /data/probe 2>/dev/null && echo data-writable || echo data-readonly; "
                "pwd; "
                "cat /sys/fs/cgroup/memory.max 2>/dev/null || "
                "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; "
                "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max"});
  CHECK(probe.err().empty());
  CHECK(probe.exit_code == 0);
  CHECK(probe.out() ==
        "uid=1000 gid=1000\n"
        "CapEff:\t0000000000000000\n"
        "NoNewPrivs:\t1\n"
        "docker-init\n"
        "lo\n"
        "root-readonly\n"
        "tmp-writable\n"
        "hello from the host\n"
        "data-readonly\n"
        "/workspace\n"
        "67108864\n"
        "64\n");

  const auto env = exec(id, {"sh", "-c", "printf %s \"$WEIRD\""});
  CHECK(env.exit_code == 0);
  CHECK(env.out() == weird);
  const auto more =
      exec(id, {"sh", "-c", "printf '%s|%s|%s' \"$EQUALS\" \"${EMPTY-unset}\" \"$PLAIN\""});
  CHECK(more.out() == "a=b=c||value");
}

TEST_CASE_METHOD(engine_fixture,
                 "containers: start and stop say already when there is nothing to do",
                 "[engine][containers]") {
  const auto id = create(sandbox("lifecycle"));

  auto first = blocking<change_outcome>([&](auto done) { docker().container_start(id, done); });
  REQUIRE_OK(first);
  CHECK(*first == change_outcome::done);
  CHECK(inspect(id).state.running);

  auto again = blocking<change_outcome>([&](auto done) { docker().container_start(id, done); });
  REQUIRE_OK(again);
  CHECK(*again == change_outcome::already);

  auto stopped =
      blocking<change_outcome>([&](auto done) { docker().container_stop(id, 2s, done); });
  REQUIRE_OK(stopped);
  CHECK(*stopped == change_outcome::done);
  const auto after = inspect(id);
  CHECK_FALSE(after.state.running);
  CHECK(after.state.status == "exited");

  auto stopped_again =
      blocking<change_outcome>([&](auto done) { docker().container_stop(id, 2s, done); });
  REQUIRE_OK(stopped_again);
  CHECK(*stopped_again == change_outcome::already);

  // Kill: the signal reaches the container (through docker-init); a stopped one is a 409.
  start(id);
  auto killed = blocking<void>([&](auto done) { docker().container_kill(id, "SIGKILL", done); });
  REQUIRE_OK(killed);
  CHECK(wait(id).status_code == 137);
  auto kill_again =
      blocking<void>([&](auto done) { docker().container_kill(id, "SIGKILL", done); });
  REQUIRE_FALSE(kill_again.ok());
  CHECK(kill_again.err().code == errc::conflict);
  CHECK(kill_again.err().message.find("is not running") != std::string::npos);
}

TEST_CASE_METHOD(engine_fixture, "containers: wait returns the exit code of the main process",
                 "[engine][containers]") {
  const auto id = create(sandbox("wait", {"sh", "-c", "exit 7"}));

  // next-exit, asked before the start, cannot miss the exit.
  pending<container_wait_response> next_exit;
  docker().container_wait(id, wait_condition::next_exit, 30s, next_exit.done());
  // The engine registers the wait when it reads the request: give it a moment.
  std::this_thread::sleep_for(200ms);
  start(id);
  auto waited = next_exit.get(30s, "wait next-exit");
  REQUIRE_OK(waited);
  CHECK(waited->status_code == 7);
  CHECK(waited->error.empty());

  // not-running on a container that has already exited answers at once, with the code.
  const auto not_running = wait(id, wait_condition::not_running);
  CHECK(not_running.status_code == 7);

  const auto info = inspect(id);
  CHECK(info.state.status == "exited");
  CHECK(info.state.exit_code == 7);
  CHECK_FALSE(info.state.oom_killed);
}

TEST_CASE_METHOD(engine_fixture, "containers: logs keep stdout and stderr apart",
                 "[engine][containers]") {
  const auto id = run(sandbox(
      "logs", {"sh", "-c",
               "echo out1; echo err1 >&2; printf 'out2 no newline'; printf 'err2\\0binary' >&2"}));
  CHECK(wait(id).status_code == 0);

  auto logs = blocking<exec_output>(
      [&](auto done) { docker().container_logs(id, container_logs_options{}, done); });
  REQUIRE_OK(logs);
  CHECK(logs->stdout_data.data == "out1\nout2 no newline");
  CHECK(logs->stderr_data.data == std::string("err1\nerr2\0binary", 16));
  CHECK_FALSE(logs->stdout_data.truncated);
  CHECK_FALSE(logs->stderr_data.truncated);

  container_logs_options only_stderr;
  only_stderr.stdout_stream = false;
  only_stderr.max_stderr = 3;  // the cap applies to logs as well
  auto err_only =
      blocking<exec_output>([&](auto done) { docker().container_logs(id, only_stderr, done); });
  REQUIRE_OK(err_only);
  CHECK(err_only->stdout_data.data.empty());
  CHECK(err_only->stderr_data.data == "err");
  CHECK(err_only->stderr_data.truncated);
  CHECK(err_only->stderr_data.total == 16);
}

TEST_CASE_METHOD(engine_fixture, "containers: pause, unpause, rename and remove",
                 "[engine][containers]") {
  auto request = sandbox("pause");
  const auto id = run(request);

  auto paused = blocking<void>([&](auto done) { docker().container_pause(id, done); });
  REQUIRE_OK(paused);
  auto info = inspect(id);
  CHECK(info.state.paused);
  CHECK(info.state.status == "paused");

  auto unpaused = blocking<void>([&](auto done) { docker().container_unpause(id, done); });
  REQUIRE_OK(unpaused);
  info = inspect(id);
  CHECK_FALSE(info.state.paused);
  CHECK(info.state.running);
  CHECK(info.state.status == "running");

  // Unpausing a container that is not paused is an error, not a success. Engine 20.10 sends
  // it as a 500 (newer engines: 409), with its message.
  auto unpause_again = blocking<void>([&](auto done) { docker().container_unpause(id, done); });
  REQUIRE_FALSE(unpause_again.ok());
  CHECK((unpause_again.err().code == errc::conflict ||
         unpause_again.err().code == errc::engine_error));
  CHECK(unpause_again.err().message.find("is not paused") != std::string::npos);

  const std::string new_name = request.name + "-renamed";
  auto renamed = blocking<void>([&](auto done) { docker().container_rename(id, new_name, done); });
  REQUIRE_OK(renamed);
  CHECK(inspect(id).name == "/" + new_name);
  CHECK(inspect(new_name).id == id);  // the new name resolves
  auto old_name = blocking<container_inspect_response>(
      [&](auto done) { docker().container_inspect(request.name, done); });
  REQUIRE_FALSE(old_name.ok());
  CHECK(old_name.err().code == errc::not_found);

  // Removing a running container without force is refused; with force it goes.
  auto refused = blocking<void>([&](auto done) { docker().container_remove(id, false, done); });
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.err().code == errc::conflict);
  CHECK(refused.err().message.find("running") != std::string::npos);

  remove(id, true);
  auto gone = blocking<container_inspect_response>(
      [&](auto done) { docker().container_inspect(id, done); });
  REQUIRE_FALSE(gone.ok());
  CHECK(gone.err().code == errc::not_found);
  auto removed_again =
      blocking<void>([&](auto done) { docker().container_remove(id, true, done); });
  REQUIRE_FALSE(removed_again.ok());
  CHECK(removed_again.err().code == errc::not_found);
}

TEST_CASE_METHOD(engine_fixture,
                 "containers: a missing container is not_found with the engine's message",
                 "[engine][containers]") {
  const std::string missing = "corral-test-missing-" + run_id();
  auto inspected = blocking<container_inspect_response>(
      [&](auto done) { docker().container_inspect(missing, done); });
  REQUIRE_FALSE(inspected.ok());
  CHECK(inspected.err().code == errc::not_found);
  CHECK(inspected.err().http_status == 404);
  CHECK(inspected.err().message == "No such container: " + missing);
  CHECK(inspected.err().describe().find("No such container: " + missing) != std::string::npos);

  auto started =
      blocking<change_outcome>([&](auto done) { docker().container_start(missing, done); });
  REQUIRE_FALSE(started.ok());
  CHECK(started.err().code == errc::not_found);

  auto stopped =
      blocking<change_outcome>([&](auto done) { docker().container_stop(missing, 1s, done); });
  REQUIRE_FALSE(stopped.ok());
  CHECK(stopped.err().code == errc::not_found);

  auto removed = blocking<void>([&](auto done) { docker().container_remove(missing, true, done); });
  REQUIRE_FALSE(removed.ok());
  CHECK(removed.err().code == errc::not_found);

  auto logs = blocking<exec_output>(
      [&](auto done) { docker().container_logs(missing, container_logs_options{}, done); });
  REQUIRE_FALSE(logs.ok());
  CHECK(logs.err().code == errc::not_found);
}

TEST_CASE_METHOD(engine_fixture, "containers: one-shot stats report the memory limit",
                 "[engine][containers]") {
  const auto id = run(sandbox("stats"));
  auto stats = blocking<container_stats>([&](auto done) { docker().container_stats(id, done); });
  REQUIRE_OK(stats);
  CHECK(stats->memory_limit == 64 * mib);
  CHECK(stats->memory_usage > 0);
  CHECK(stats->memory_usage <= stats->memory_limit);
  CHECK(stats->pids_current >= 2);  // docker-init and sleep
  CHECK(stats->pids_current <= 64);
  CHECK(stats->cpu_total_usage > 0);
  CHECK(stats->online_cpus >= 1);
}

TEST_CASE_METHOD(engine_fixture,
                 "containers: list with a label filter finds exactly this test's containers",
                 "[engine][containers]") {
  std::set<std::string> running;
  running.insert(run(sandbox("list-a")));
  running.insert(run(sandbox("list-b")));
  const auto created_only = create(sandbox("list-c"));

  auto all = blocking<std::vector<container_summary>>(
      [&](auto done) { docker().container_list(own_filter(), done); });
  REQUIRE_OK(all);
  std::set<std::string> listed;
  for (const auto& c : *all) {
    listed.insert(c.id);
    CHECK(c.labels.at("corral.test") == test_name());
    CHECK(c.labels.at("corral.managed-by") == "corral-test");
    REQUIRE(c.names.size() == 1);
    CHECK(c.names[0].rfind("/corral-test-list-", 0) == 0);
    CHECK(c.image == sandbox_image);
    CHECK(c.created > 0);
  }
  auto expected = running;
  expected.insert(created_only);
  CHECK(listed == expected);
  CHECK(all->size() == 3);

  // Filters combine: only the running ones.
  auto running_only = own_filter();
  running_only.filters["status"] = {"running"};
  auto some = blocking<std::vector<container_summary>>(
      [&](auto done) { docker().container_list(running_only, done); });
  REQUIRE_OK(some);
  std::set<std::string> listed_running;
  for (const auto& c : *some) {
    listed_running.insert(c.id);
    CHECK(c.state == "running");
  }
  CHECK(listed_running == running);

  // all=false hides the created-only one, like `docker ps`.
  auto shown = own_filter();
  shown.all = false;
  auto visible = blocking<std::vector<container_summary>>(
      [&](auto done) { docker().container_list(shown, done); });
  REQUIRE_OK(visible);
  CHECK(visible->size() == 2);
}
