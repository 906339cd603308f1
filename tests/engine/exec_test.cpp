// Exec against the real engine: separated streams and exit codes, stdin, output caps with
// bounded memory, errors, and many execs at once.
#include <atomic>

#include "engine_fixture.hpp"

using namespace corral_test;

TEST_CASE_METHOD(engine_fixture, "exec: stdout and stderr are separated and the exit code is read",
                 "[engine][exec]") {
  const auto id = run(sandbox("exec-streams"));
  const auto r = exec(id, {"sh", "-c", "echo out; echo err >&2; exit 3"});
  CHECK(r.out() == "out\n");
  CHECK(r.err() == "err\n");
  CHECK(r.exit_code == 3);
  CHECK_FALSE(r.output.stdout_data.truncated);
  CHECK(r.output.stdout_data.total == 4);
  CHECK(r.output.stderr_data.total == 4);

  // Exec options reach the process: env, working dir, user.
  exec_create_request options;
  options.env = {"GREETING=hi there"};
  options.working_dir = "/tmp";
  options.user = "1000:1000";
  const auto env =
      exec(id, {"sh", "-c", "echo \"$GREETING from $(pwd) as $(id -u)\""}, {}, options);
  CHECK(env.out() == "hi there from /tmp as 1000\n");
  CHECK(env.exit_code == 0);
}

TEST_CASE_METHOD(engine_fixture,
                 "exec: a missing binary exits 126 or 127 with the runtime's message",
                 "[engine][exec]") {
  const auto id = run(sandbox("exec-missing"));
  const auto r = exec(id, {"corral-no-such-binary"});
  CHECK((r.exit_code == 126 || r.exit_code == 127));
  const std::string said = r.out() + r.err();
  INFO("output: " << said);
  CHECK(said.find("executable file not found") != std::string::npos);

  // The container is unharmed.
  CHECK(exec(id, {"echo", "still here"}).out() == "still here\n");
}

TEST_CASE_METHOD(engine_fixture, "exec: stdin is delivered byte for byte and then closed",
                 "[engine][exec]") {
  const auto id = run(sandbox("exec-stdin"));

  std::string input;
  for (int round = 0; input.size() < 200 * 1024; ++round) {
    for (int b = 0; b < 256; ++b) input.push_back(static_cast<char>((b + round * 7) & 0xff));
  }
  input.append("\r\n\x1b[0m\x04\x03 the end");  // control bytes a TTY would eat
  REQUIRE(input.size() > 64 * 1024);

  exec_start_options options;
  options.stdin_data = input;
  options.max_stdout = 1 << 20;
  const auto r = exec(id, {"cat"}, options);
  CHECK(r.exit_code == 0);
  CHECK(r.err().empty());
  CHECK(r.out().size() == input.size());
  CHECK(r.out() == input);

  // An empty stdin is an immediate EOF.
  exec_start_options empty;
  empty.stdin_data = std::string();
  const auto nothing = exec(id, {"cat"}, empty);
  CHECK(nothing.exit_code == 0);
  CHECK(nothing.out().empty());
  CHECK(nothing.output.stdout_data.total == 0);
}

TEST_CASE_METHOD(engine_fixture,
                 "exec: a process that leaves its stdin unread ends the call at once",
                 "[engine][exec]") {
  // The process exits while our upload is still blocked on a full socket: the call must end
  // with the output and exit code as soon as the engine ends the stream, not at the deadline.
  // Racy by nature (where the upload is when the stream ends), so asked several times.
  const auto id = run(sandbox("exec-stdin-unread"));
  for (int round = 0; round < 4; ++round) {
    INFO("round " << round);
    exec_start_options partial_in;
    partial_in.stdin_data = std::string(8 << 20, 'x');
    partial_in.timeout = 6s;
    auto began = std::chrono::steady_clock::now();
    const auto partial = exec(id, {"head", "-c", "10"}, partial_in);
    auto took = std::chrono::steady_clock::now() - began;
    CHECK(partial.exit_code == 0);
    CHECK(partial.out() == std::string(10, 'x'));
    CHECK(took < 4s);

    exec_start_options unread_in;
    unread_in.stdin_data = std::string(8 << 20, 'x');
    unread_in.timeout = 6s;
    began = std::chrono::steady_clock::now();
    const auto unread = exec(id, {"sh", "-c", "echo done; exit 4"}, unread_in);
    took = std::chrono::steady_clock::now() - began;
    CHECK(unread.exit_code == 4);
    CHECK(unread.out() == "done\n");
    CHECK(took < 4s);
  }
}

TEST_CASE_METHOD(engine_fixture, "exec: a deadline or a cancel ends our side, not the process",
                 "[engine][exec]") {
  const auto id = run(sandbox("exec-deadline"));
  exec_create_request request;
  request.cmd = {"sh", "-c", "echo started; exec sleep 60"};
  request.user = "1000:1000";

  auto created =
      blocking<exec_create_response>([&](auto done) { docker().exec_create(id, request, done); });
  REQUIRE_OK(created);
  exec_start_options options;
  options.timeout = 1s;
  const auto began = std::chrono::steady_clock::now();
  auto timed_out = blocking<exec_output>(
      [&](auto done) { docker().exec_start(created->id, std::move(options), done); });
  const auto took = std::chrono::steady_clock::now() - began;
  REQUIRE_FALSE(timed_out.ok());
  CHECK(timed_out.err().code == errc::timeout);
  CHECK(took >= 1s);
  CHECK(took < 5s);
  // The engine has no way to stop an exec: the process lives on until corral kills it.
  auto still =
      blocking<exec_inspect_response>([&](auto done) { docker().exec_inspect(created->id, done); });
  REQUIRE_OK(still);
  CHECK(still->running);
  CHECK(still->pid > 0);

  // Cancelling an attached start by its id ends it with cancelled.
  auto second =
      blocking<exec_create_response>([&](auto done) { docker().exec_create(id, request, done); });
  REQUIRE_OK(second);
  pending<exec_output> cancelled_start;
  auto seen_output = std::make_shared<std::promise<void>>();
  exec_start_options live;
  live.timeout = 30s;
  live.on_output = [seen_output, first = true](stream_kind, std::string_view) mutable {
    if (std::exchange(first, false)) seen_output->set_value();
  };
  const auto stream = docker().exec_start(second->id, std::move(live), cancelled_start.done());
  REQUIRE(seen_output->get_future().wait_for(10s) == std::future_status::ready);  // it is running
  docker().cancel(stream);
  auto cancelled = cancelled_start.get(5s, "cancelled exec_start");
  REQUIRE_FALSE(cancelled.ok());
  CHECK(cancelled.err().code == errc::cancelled);

  // The container is still fine for the next command.
  CHECK(exec(id, {"echo", "next"}).out() == "next\n");
}

TEST_CASE_METHOD(engine_fixture, "exec: output over the cap is counted and dropped, not buffered",
                 "[engine][exec]") {
  const auto id = run(sandbox("exec-cap"));
  // Warm up the client's buffers and pool so the measurement sees only the big exec.
  CHECK(exec(id, {"head", "-c", "1048576", "/dev/zero"}).output.stdout_data.total == 1 << 20);

  constexpr uint64_t produced = 10 * 1024 * 1024;
  const int64_t rss_before = resident_bytes();
  REQUIRE(rss_before > 0);

  exec_start_options options;
  options.max_stdout = 1 << 20;
  options.max_stderr = 1024;
  const auto r = exec(id, {"head", "-c", std::to_string(produced), "/dev/zero"}, options);

  const int64_t rss_after = resident_bytes();
  CHECK(r.exit_code == 0);
  CHECK(r.output.stdout_data.data.size() == std::size_t{1} << 20);
  CHECK(r.output.stdout_data.truncated);
  CHECK(r.output.stdout_data.total == produced);
  CHECK(r.out().find_first_not_of('\0') == std::string::npos);
  CHECK(r.err().empty());
  INFO("VmRSS before " << rss_before << " after " << rss_after);
  CHECK(rss_after - rss_before < 8 * mib);

  // The live observer sees every byte, before the cap.
  std::atomic<uint64_t> seen{0};
  exec_start_options live;
  live.max_stdout = 16;
  live.on_output = [&seen](stream_kind kind, std::string_view bytes) {
    if (kind == stream_kind::stdout_stream) seen += bytes.size();
  };
  const auto streamed = exec(id, {"head", "-c", "300000", "/dev/zero"}, live);
  CHECK(seen == 300000);
  CHECK(streamed.out().size() == 16);
  CHECK(streamed.output.stdout_data.total == 300000);
}

TEST_CASE_METHOD(engine_fixture, "exec: in a stopped container it is a clean conflict",
                 "[engine][exec]") {
  const auto id = run(sandbox("exec-stopped"));
  auto stopped =
      blocking<change_outcome>([&](auto done) { docker().container_stop(id, 2s, done); });
  REQUIRE_OK(stopped);

  exec_create_request request;
  request.cmd = {"echo", "never"};
  auto created =
      blocking<exec_create_response>([&](auto done) { docker().exec_create(id, request, done); });
  REQUIRE_FALSE(created.ok());
  CHECK(created.err().code == errc::conflict);
  CHECK(created.err().http_status == 409);
  CHECK(created.err().message.find("is not running") != std::string::npos);

  // And in a container that does not exist: not_found.
  auto missing = blocking<exec_create_response>(
      [&](auto done) { docker().exec_create("corral-test-missing-" + run_id(), request, done); });
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.err().code == errc::not_found);

  // An exec id that does not exist.
  auto no_exec = blocking<exec_inspect_response>(
      [&](auto done) { docker().exec_inspect("0000000000000000000000000000000000000000", done); });
  REQUIRE_FALSE(no_exec.ok());
  CHECK(no_exec.err().code == errc::not_found);
}

TEST_CASE_METHOD(engine_fixture, "exec: 100 concurrent execs over 8 containers all complete",
                 "[engine][exec][concurrency]") {
  constexpr int containers = 8;
  constexpr int execs = 100;
  std::vector<std::string> ids;
  for (int i = 0; i < containers; ++i)
    ids.push_back(run(sandbox("exec-many-" + std::to_string(i))));

  struct outcome {
    bool finished = false;
    std::string failure;  // which step failed, and how
    std::string out, err;
    int64_t exit_code = -1;
    std::string container;
    std::string exec_id;
  };
  // Shared with the callbacks: should this test fail early, late callbacks (completed by
  // the client's shutdown) still find it alive.
  struct shared_state {
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<outcome> outcomes = std::vector<outcome>(execs);
    int remaining = execs;

    void finish(int i, outcome o) {
      std::lock_guard<std::mutex> guard(mutex);
      o.finished = true;
      outcomes[static_cast<std::size_t>(i)] = std::move(o);
      if (--remaining == 0) cv.notify_all();
    }
  };
  auto state = std::make_shared<shared_state>();
  auto failed = [](const std::string& container, std::string why) {
    outcome o;
    o.container = container;
    o.failure = std::move(why);
    return o;
  };

  client& d = docker();
  const auto began = std::chrono::steady_clock::now();
  // All at once: create -> attached start -> inspect, chained in the callbacks.
  for (int i = 0; i < execs; ++i) {
    const std::string& container = ids[static_cast<std::size_t>(i % containers)];
    exec_create_request request;
    request.cmd = {"sh", "-c",
                   "echo \"task-$1 on $(hostname)\"; echo \"err-$1\" >&2; exit $(($1 % 5))", "sh",
                   std::to_string(i)};
    request.user = "1000:1000";
    d.exec_create(
        container, request,
        [&d, state, failed, i, container](result<exec_create_response> created) {
          if (!created)
            return state->finish(i, failed(container, "create: " + created.err().describe()));
          exec_start_options options;
          options.timeout = 120s;
          const std::string exec_id = created->id;
          d.exec_start(
              exec_id, std::move(options),
              [&d, state, failed, i, exec_id, container](result<exec_output> output) {
                if (!output)
                  return state->finish(i, failed(container, "start: " + output.err().describe()));
                auto out = std::make_shared<exec_output>(std::move(output).value());
                d.exec_inspect(exec_id, [state, i, out, container,
                                         exec_id](result<exec_inspect_response> inspected) {
                  outcome o;
                  o.container = container;
                  o.exec_id = exec_id;
                  o.out = out->stdout_data.data;
                  o.err = out->stderr_data.data;
                  if (!inspected) {
                    o.failure = "inspect: " + inspected.err().describe();
                  } else if (inspected->running || !inspected->exit_code) {
                    o.exit_code =
                        -2;  // the engine records the exit a moment late: asked again below
                  } else {
                    o.exit_code = *inspected->exit_code;
                  }
                  state->finish(i, std::move(o));
                });
              });
        });
  }

  {
    std::unique_lock<std::mutex> lock(state->mutex);
    REQUIRE(state->cv.wait_for(lock, 180s, [&] { return state->remaining == 0; }));
  }
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - began);
  WARN("100 execs over 8 containers took " << took.count() << " ms");
  const auto& outcomes = state->outcomes;

  std::map<std::string, std::string> hostname_of;  // container id -> its hostname (short id)
  for (const auto& id : ids) hostname_of[id] = id.substr(0, 12);
  int ok = 0;
  for (int i = 0; i < execs; ++i) {
    const auto& o = outcomes[static_cast<std::size_t>(i)];
    INFO("exec " << i << ": " << o.failure);
    CHECK(o.finished);
    CHECK(o.failure.empty());
    CHECK(o.out == "task-" + std::to_string(i) + " on " + hostname_of[o.container] + "\n");
    CHECK(o.err == "err-" + std::to_string(i) + "\n");
    if (o.failure.empty()) {
      const int64_t code = o.exit_code == -2 ? exec_exit_code(o.exec_id) : o.exit_code;
      CHECK(code == i % 5);
    }
    const bool right = o.failure.empty() && o.out == "task-" + std::to_string(i) + " on " +
                                                         hostname_of[o.container] + "\n";
    if (right) ++ok;
  }
  CHECK(ok == execs);

  // Nothing is left in flight.
  for (int attempt = 0; attempt < 50 && d.http().stats().active_requests > 0; ++attempt) {
    std::this_thread::sleep_for(20ms);
  }
  CHECK(d.http().stats().active_requests == 0);
  CHECK(d.http().stats().queued_requests == 0);
}
