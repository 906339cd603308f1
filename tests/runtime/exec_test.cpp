// Execs through the supervisor: streams, exit codes, env, argv, stdin, output caps with
// bounded memory, live output, and timeouts that kill a command's whole process tree.
#include <algorithm>
#include <future>
#include <mutex>
#include <thread>

#include "runtime_fixture.hpp"

using namespace corral::runtime_tests;

namespace {

// Records the output chunks an exec sends its subscriber, with their arrival times.
struct chunk_log {
  std::mutex mtx;
  std::vector<std::pair<steady::time_point, output_chunk>> chunks;

  std::size_t size() {
    std::lock_guard<std::mutex> guard{mtx};
    return chunks.size();
  }

  std::string joined(output_stream stream) {
    std::lock_guard<std::mutex> guard{mtx};
    std::string out;
    for (const auto& [at, c] : chunks) {
      if (c.stream == stream) out += c.bytes;
    }
    return out;
  }
};

caf::behavior chunk_recorder(caf::event_based_actor*, std::shared_ptr<chunk_log> log) {
  return {
      [log](output_atom, const output_chunk& chunk) {
        std::lock_guard<std::mutex> guard{log->mtx};
        log->chunks.emplace_back(steady::now(), chunk);
      },
  };
}

// A subscriber that takes chunks and does not answer until told to (`go`): a reader that has
// stopped reading, as a client whose terminal is stalled.
struct stalled_log {
  std::mutex mtx;
  uint64_t bytes = 0;
};

caf::behavior stalled_subscriber(caf::event_based_actor* self, std::shared_ptr<stalled_log> log) {
  auto held = std::make_shared<std::vector<caf::response_promise>>();
  auto going = std::make_shared<bool>(false);
  return {
      [self, log, held, going](output_atom, const output_chunk& chunk) {
        {
          std::lock_guard<std::mutex> guard{log->mtx};
          log->bytes += chunk.bytes.size();
        }
        auto rp = self->make_response_promise();
        if (*going)
          rp.deliver(caf::unit);
        else
          held->push_back(rp);
        return rp;
      },
      [held, going](caf::ok_atom) {
        *going = true;
        for (auto& rp : *held) rp.deliver(caf::unit);
        held->clear();
      },
  };
}

}  // namespace

TEST_CASE_METHOD(runtime_fixture,
                 "a subscriber that stops reading stops the command's writes, not memory",
                 "[runtime][exec][agent]") {
  // Credit for the agent comes back only as the subscriber answers for its chunks: a stalled
  // reader holds the command at about the agent's window (1 MiB), not at the output cap.
  REQUIRE_OK(acquire("slow"));
  auto log = std::make_shared<stalled_log>();
  auto reader = sys().spawn(stalled_subscriber, log);
  auto req = make_exec(sh("n=0; while [ $n -lt 200 ]; do head -c 65536 /dev/zero || exit 3; "
                          "n=$((n+1)); echo $n > /tmp/n; done"),
                       caf::timespan{60s});
  req.max_stdout = 16 << 20;
  req.subscriber = reader;
  auto flood = std::async(std::launch::async, [&]() -> caf::expected<exec_result> {
    caf::scoped_actor other{sys()};
    return corral::messages::ask<exec_result>(other, sup(), caf::timespan{120s}, exec_atom_v,
                                              std::string("slow"), req);
  });
  // Waits for the writes to stop (the same count four looks in a row, 300 ms apart): held,
  // they stop near 16; unchecked, all 200 are done (and the command ends) well within that.
  auto writes_done = [&] {
    auto count = exec("slow", sh("cat /tmp/n 2>/dev/null || echo 0"));
    return count ? std::atoi(count->stdout_data.c_str()) : -1;
  };
  int written = -1;
  int same = 0;
  REQUIRE(eventually(
      20s,
      [&] {
        const int now = writes_done();
        same = now > 0 && now == written ? same + 1 : 0;
        written = now;
        return same >= 3;
      },
      300ms));
  INFO("64 KiB writes done while the reader stalled: " << written);
  CHECK(written >= 1);
  CHECK(written <= 40);
  {
    std::lock_guard<std::mutex> guard{log->mtx};
    CHECK(log->bytes <= (3u << 20));
  }
  CHECK(flood.wait_for(0s) != std::future_status::ready);
  // The reader reads again: the command runs to its end, and every byte reached it.
  caf::anon_send(reader, caf::ok_atom_v);
  auto r = flood.get();
  REQUIRE_OK(r);
  CHECK(r->exit_code == 0);
  CHECK(r->stdout_bytes == 200u * 65536u);
  CHECK(eventually(5s, [&] {
    std::lock_guard<std::mutex> guard{log->mtx};
    return log->bytes == 200u * 65536u;
  }));
  self->send_exit(reader, caf::exit_reason::user_shutdown);
  CHECK_OK(release("slow"));
}

TEST_CASE_METHOD(runtime_fixture, "exec basics: streams, exit code, env, argv, stdin",
                 "[runtime][exec]") {
  REQUIRE_OK(acquire("basics"));

  SECTION("stdout and stderr are separated; the exit code is the command's") {
    auto r = exec("basics", sh("echo out; echo err >&2; exit 3"));
    REQUIRE_OK(r);
    CHECK(r->end == exec_end::exited);
    CHECK(r->exit_code == 3);
    CHECK(r->stdout_data == "out\n");
    CHECK(r->stderr_data == "err\n");
    CHECK(r->stdout_bytes == 4);
    CHECK(r->stderr_bytes == 4);
    CHECK_FALSE(r->stdout_truncated);
    CHECK(r->warnings.empty());
    CHECK(r->duration.count() > 0);
  }

  SECTION("per-call env reaches the command; reserved keys are stripped and reported") {
    auto req = make_exec(sh("echo \"greeting=$GREETING preload=${LD_PRELOAD-unset}\""));
    req.env["GREETING"] = "hi there";
    req.env["LD_PRELOAD"] = "/tmp/evil.so";
    auto r = exec("basics", req);
    REQUIRE_OK(r);
    CHECK(r->stdout_data == "greeting=hi there preload=unset\n");
    REQUIRE(r->warnings.size() == 1);
    CHECK(contains(r->warnings[0], "LD_PRELOAD"));
    CHECK(contains(r->warnings[0], "stripped"));
    // The env was this call's only.
    auto again = exec("basics", sh("echo \"${GREETING-unset}\""));
    REQUIRE_OK(again);
    CHECK(again->stdout_data == "unset\n");
  }

  SECTION("argv travels literally: no shell in between") {
    const std::vector<std::string> args = {"it's \"quoted\"", "two\nlines",
                                           "$(id -u) `id -u` $HOME", "*", ""};
    std::vector<std::string> argv = {"printf", "[%s]\\n"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = exec("basics", argv);
    REQUIRE_OK(r);
    std::string expected;
    for (const auto& a : args) expected += "[" + a + "]\n";
    CHECK(r->stdout_data == expected);
    CHECK(r->exit_code == 0);
  }

  SECTION("stdin round-trips") {
    std::string input;
    for (int i = 0; i < 5000; ++i) input += "line " + std::to_string(i) + " \x01\xff\n";
    auto req = make_exec({"cat"});
    req.has_stdin = true;
    req.stdin_data = input;
    auto r = exec("basics", req);
    REQUIRE_OK(r);
    CHECK(r->exit_code == 0);
    CHECK(r->stdout_data.size() == input.size());
    CHECK(r->stdout_data == input);

    auto count = make_exec({"wc", "-c"});
    count.has_stdin = true;
    count.stdin_data = "";
    auto empty = exec("basics", count);
    REQUIRE_OK(empty);
    CHECK(empty->stdout_data == "0\n");
  }

  SECTION("a missing command is 127") {
    auto r = exec("basics", {"no-such-command-here"});
    REQUIRE_OK(r);
    CHECK(r->end == exec_end::exited);
    CHECK(r->exit_code == 127);
  }

  CHECK_OK(release("basics"));
}

TEST_CASE_METHOD(runtime_fixture, "output caps keep memory bounded", "[runtime][exec]") {
  REQUIRE_OK(acquire("caps"));
  // A warm-up exec, so allocations of the first exec do not count.
  REQUIRE_OK(exec("caps", {"true"}));

  SECTION("50 MiB with max_stdout 1 MiB") {
    reset_peak_rss();
    const auto before = proc_status_kib("VmRSS");
    auto req = make_exec(sh("head -c 52428800 /dev/zero; echo done >&2"));
    req.max_stdout = 1 << 20;
    auto r = exec("caps", req);
    REQUIRE_OK(r);
    const auto peak = proc_status_kib("VmHWM");
    CHECK(r->exit_code == 0);
    CHECK(r->stdout_truncated);
    CHECK(r->stdout_bytes == 52428800);
    CHECK(r->stdout_data.size() == 1 << 20);
    CHECK(r->stdout_data == std::string(1 << 20, '\0'));
    CHECK_FALSE(r->stderr_truncated);
    CHECK(r->stderr_data == "done\n");
    INFO("RSS before " << before << " KiB, peak " << peak << " KiB");
    CHECK(peak - before < 32 * 1024);
  }

  SECTION("1 GiB with the default caps") {
    reset_peak_rss();
    const auto before = proc_status_kib("VmRSS");
    auto r = exec("caps", {"head", "-c", "1073741824", "/dev/zero"}, caf::timespan{60s});
    REQUIRE_OK(r);
    const auto peak = proc_status_kib("VmHWM");
    CHECK(r->end == exec_end::exited);
    CHECK(r->exit_code == 0);
    CHECK(r->stdout_truncated);
    CHECK(r->stdout_bytes == 1073741824ULL);
    CHECK(r->stdout_data.size() == rt.policy.defaults.max_output);
    INFO("RSS before " << before << " KiB, peak " << peak << " KiB");
    CHECK(peak - before < 48 * 1024);
  }

  CHECK_OK(release("caps"));
}

TEST_CASE_METHOD(runtime_fixture, "live output reaches a subscriber before the result",
                 "[runtime][exec]") {
  REQUIRE_OK(acquire("live"));
  auto log = std::make_shared<chunk_log>();
  auto recorder = sys().spawn(chunk_recorder, log);
  auto req = make_exec(sh("for i in 1 2 3 4 5 6; do echo line$i; echo err$i >&2; sleep 0.2; done"));
  req.subscriber = recorder;
  auto r = exec("live", req);
  const auto result_at = steady::now();
  REQUIRE_OK(r);
  CHECK(r->exit_code == 0);
  CHECK(r->stdout_data == "line1\nline2\nline3\nline4\nline5\nline6\n");
  // Everything sent before the result arrives; give the recorder a moment to catch up.
  CHECK(eventually(2s, [&] {
    return log->joined(output_stream::stdout_stream).size() >= r->stdout_data.size();
  }));
  CHECK(log->joined(output_stream::stdout_stream) == r->stdout_data);
  CHECK(log->joined(output_stream::stderr_stream) == r->stderr_data);
  {
    std::lock_guard<std::mutex> guard{log->mtx};
    REQUIRE(log->chunks.size() >= 2);
    // The first line came while the command still ran (it runs for >1 s after it). The two
    // streams are separate pipes: which of line1 and err1 comes first is not fixed.
    auto first_out = std::find_if(log->chunks.begin(), log->chunks.end(), [](const auto& c) {
      return c.second.stream == output_stream::stdout_stream;
    });
    REQUIRE(first_out != log->chunks.end());
    CHECK(first_out->second.bytes.rfind("line1", 0) == 0);
    CHECK(first_out->first + 500ms < result_at);
    CHECK(log->chunks.front().first + 500ms < result_at);
    const auto seq = log->chunks.front().second.exec_seq;
    for (const auto& [at, c] : log->chunks) CHECK(c.exec_seq == seq);
  }
  self->send_exit(recorder, caf::exit_reason::user_shutdown);
  CHECK_OK(release("live"));
}

TEST_CASE_METHOD(runtime_fixture, "an exec timeout kills the command's whole process tree",
                 "[runtime][exec]") {
  REQUIRE_OK(acquire("tree"));

  SECTION("background children") {
    const auto t0 = steady::now();
    auto r = exec("tree", sh("sleep 100 & sleep 200 & wait"), caf::timespan{1s});
    const auto took = steady::now() - t0;
    REQUIRE_OK(r);
    CHECK(r->end == exec_end::timed_out);
    CHECK(r->exit_code == 124);
    CHECK(took < 4s);
  }

  SECTION("a busy loop that ignores SIGTERM") {
    const auto t0 = steady::now();
    auto r = exec("tree", sh("trap '' TERM; while :; do :; done"), caf::timespan{1s});
    const auto took = steady::now() - t0;
    REQUIRE_OK(r);
    CHECK(r->end == exec_end::timed_out);
    CHECK(r->exit_code == 124);
    CHECK(took < 4s);
  }

  // Nothing of it is left, and the sandbox itself is fine.
  auto ps = exec("tree", {"ps", "-o", "pid,args"});
  REQUIRE_OK(ps);
  INFO(ps->stdout_data);
  CHECK_FALSE(contains(ps->stdout_data, "sleep 100"));
  CHECK_FALSE(contains(ps->stdout_data, "sleep 200"));
  CHECK_FALSE(contains(ps->stdout_data, "while :"));
  auto info = lookup("tree");
  REQUIRE_OK(info);
  CHECK(info->status == sandbox_status::ready);
  CHECK_OK(release("tree"));
}
