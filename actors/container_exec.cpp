// The container actor's commands (execs): queued until the sandbox is ready and has a free
// slot (start_pending), run through the agent or as a docker exec, and ended in one place
// (end_exec) whatever ended them; a command's whole process tree killed at its deadline.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

#include <caf/all.hpp>

#include "actors/container_state.hpp"
#include "actors/engine_bridge.hpp"
#include "actors/engine_errors.hpp"
#include "actors/random_id.hpp"
#include "docker/client.hpp"
#include "messages/agent_protocol.hpp"
#include "messages/errors.hpp"

namespace corral::actors::container_detail {

namespace {

// The engine's way of saying a command cannot run because the container is gone or stopped:
// 404, 409, or (Docker 20.10, exec start) 500 "Container ... is not running".
bool container_stopped(const docker::error& e) {
  return e.code == docker::errc::not_found || e.code == docker::errc::conflict ||
         e.message.find("is not running") != std::string::npos;
}

exec_result base_result(running_exec& run, docker::exec_output& out) {
  exec_result r;
  r.stdout_bytes = out.stdout_data.total;
  r.stderr_bytes = out.stderr_data.total;
  r.stdout_truncated = out.stdout_data.truncated;
  r.stderr_truncated = out.stderr_data.truncated;
  r.stdout_data = std::move(out.stdout_data.data);
  r.stderr_data = std::move(out.stderr_data.data);
  r.warnings = run.plan.warnings;
  return r;
}

// Kills the processes of execs cut off by an engine restart (live-restore keeps the sandbox
// and them running); retried each second until the engine answers, for a minute at most, then
// the sandbox goes rather than keep commands nobody owns (tests/engine_restart_trial.sh).
void kill_cut_execs(self_ptr self) {
  auto& st = self->state;
  if (st.cut_tags.empty() || st.now == phase::removing || st.engine_waits > 0) return;
  auto retry = [self] {
    auto& st = self->state;
    if (++st.cut_attempts > 60) {
      st.cut_tags.clear();
      return begin_removal(self, sandbox_status::killed,
                           "commands cut off by an engine restart could not be stopped");
    }
    self->delayed_send(self, std::chrono::seconds(1), resume_atom_v,
                       continuation{[self] { kill_cut_execs(self); }});
  };
  docker::exec_create_request killer;
  killer.user = st.args.plan.user;
  killer.attach_stdout = false;
  killer.attach_stderr = false;
  killer.cmd = {"/bin/sh", "-c",
                "for round in 1 2 3; do p=; for d in /proc/[0-9]*; do for t in \"$@\"; do "
                "if tr '\\0' '\\n' < \"$d/environ\" 2>/dev/null | grep -qx \"CORRAL_EXEC=$t\"; "
                "then p=\"$p ${d#/proc/}\"; fi; done; done; [ -z \"$p\" ] && break; "
                "kill -STOP $p 2>/dev/null; kill -KILL $p 2>/dev/null; done",
                "corral-kill"};
  auto tags = st.cut_tags;
  killer.cmd.insert(killer.cmd.end(), tags.begin(), tags.end());
  engine(self).exec_create(
      st.info.container_id, killer,
      back_to<docker::exec_create_response>(
          self, [self, retry, tags](docker::result<docker::exec_create_response> created) {
            if (!created) return retry();
            engine(self).exec_start(
                created->id, {}, back_to<docker::exec_output>(self, [self, retry, tags](auto done) {
                  if (!done) return retry();
                  auto& cut = self->state.cut_tags;
                  for (const auto& t : tags)
                    cut.erase(std::remove(cut.begin(), cut.end(), t), cut.end());
                  self->state.cut_attempts = 0;
                }));
          }));
}

// An exec whose end we did not see: its processes go once the engine answers.
void forget_cut_exec(self_ptr self, const std::string& tag) {
  auto& st = self->state;
  st.cut_tags.push_back(tag);
  if (st.cut_tags.size() == 1) kill_cut_execs(self);
}

}  // namespace

// Every exec ends here, whatever ended it: its caller gets the result, or `failure`; the
// monitor forgets it; then a release waiting for the sandbox's commands goes on, or the next
// queued command starts. (Once written per cause, the copies drifted: one forgot the release.)
void end_exec(self_ptr self, uint64_t seq, caf::error failure) {
  auto& st = self->state;
  auto it = st.running.find(seq);
  if (it == st.running.end()) return;
  auto& run = it->second;
  if (failure) {
    run.rp.deliver(std::move(failure));
  } else {
    run.result.duration = std::chrono::duration_cast<caf::timespan>(steady::now() - run.started);
    run.rp.deliver(run.result);
    st.info.execs_run++;
  }
  if (st.monitor && run.agent_id == 0) self->send(st.monitor, unwatch_atom_v, seq);
  st.running.erase(it);
  st.info.last_used_ms = unix_now_ms();
  publish(self);
  if (st.now == phase::draining && st.running.empty())
    return begin_removal(self, sandbox_status::removed, {});
  start_pending(self);
}

void end_exec_unless_lost(self_ptr self, uint64_t seq, std::optional<int32_t> lost_exit_code) {
  engine(self).container_inspect(
      self->state.info.container_id,
      back_to<docker::container_inspect_response>(
          self, [self, seq, lost_exit_code](docker::result<docker::container_inspect_response> r) {
            auto& st = self->state;
            auto it = st.running.find(seq);
            if (it == st.running.end()) return;
            if (!r || !r->state.running) {
              it->second.result.end = exec_end::sandbox_lost;
              if (lost_exit_code) it->second.result.exit_code = *lost_exit_code;
            }
            end_exec(self, seq, {});
          }));
}

namespace {

void on_exit_code(self_ptr self, uint64_t seq, docker::result<docker::exec_inspect_response> ins) {
  auto& st = self->state;
  auto it = st.running.find(seq);
  if (it == st.running.end()) return;
  auto& run = it->second;
  if (run.timed_out) {
    run.result.end = exec_end::timed_out;
    run.result.exit_code = 124;
    return end_exec(self, seq, {});
  }
  if (run.killed) {
    run.result.end = exec_end::killed;
    run.result.exit_code = 137;
    return end_exec(self, seq, {});
  }
  if (!ins || !ins->exit_code) {
    // Without an exit code there is no result to give: say why instead of inventing one.
    caf::error err = !ins ? from_engine(ins.err(), "reading the command's exit code")
                          : make_error(corral_errc::engine_error,
                                       "the engine reports no exit code for the command");
    if (!ins && ins.err().code == docker::errc::not_found) {
      err = make_error(corral_errc::sandbox_lost,
                       "sandbox " + st.info.key + " lost the command: " + ins.err().describe());
    }
    if (!ins) forget_cut_exec(self, run.tag);
    return end_exec(self, seq, std::move(err));
  }
  run.result.exit_code = static_cast<int32_t>(*ins->exit_code);
  run.result.end = exec_end::exited;
  // The engine says 126 for a command it could not start; like `docker run`, a missing
  // command is 127.
  auto says = [&run](const char* text) {
    return run.result.stdout_data.find(text) != std::string::npos ||
           run.result.stderr_data.find(text) != std::string::npos;
  };
  // Only a command that is not there is 127: runc names it (`exec: "x": ...`). The same words
  // about a namespace path (`lstat /proc/N/ns/ipc: no such file or directory`) mean the
  // container's init is gone: that is the dying-container case below.
  if (run.result.exit_code == 126 && (says("executable file not found") ||
                                      (says("no such file or directory") && says("exec: \"")))) {
    run.result.exit_code = 127;
  } else if (run.result.exit_code == 126) {
    // The engine could not start it. A dying container (killed from outside) makes the engine
    // say so in many ways ("task ... not found", runc's "write init-p: broken pipe", "is not
    // running"): ask the engine whether the container still runs; if not, the command never
    // ran and the sandbox is lost.
    return end_exec_unless_lost(self, seq, 137);
  }
  if (run.result.exit_code == 137) {
    // Killed by a signal we did not send: the engine's oom event may trail the exit a little.
    return self->delayed_send(self, std::chrono::milliseconds(300), finalize_atom_v, seq);
  }
  end_exec(self, seq, {});
}

void on_stream_end(self_ptr self, uint64_t seq, docker::result<docker::exec_output>& out) {
  auto& st = self->state;
  auto it = st.running.find(seq);
  if (it == st.running.end()) return;
  auto& run = it->second;
  if (auto* output = out.get()) {
    run.result = base_result(run, *output);
  } else if (!run.timed_out && !run.killed) {
    // The stream broke while the exec was ours to finish (engine error, reset, cut stream):
    // the caller gets that error, never a made-up exit code. The engine's 404/409 here ("task
    // ... not found", "container ... is not running") means the container died under the
    // command: the sandbox is lost, as an exec create on it would say.
    forget_cut_exec(self, run.tag);
    return end_exec(
        self, seq,
        container_stopped(out.err())
            ? make_error(corral_errc::sandbox_lost,
                         "sandbox " + st.info.key + " lost the command: " + out.err().describe())
            : from_engine(out.err(), "running the command"));
  } else {
    run.result.warnings = run.plan.warnings;
  }
  engine(self).exec_inspect(
      run.exec_id, back_to<docker::exec_inspect_response>(
                       self, [self, seq](auto ins) { on_exit_code(self, seq, std::move(ins)); }));
}

// An exec through the agent: output kept up to the caps (the agent sends no more) and passed
// on live to a subscriber; the end as the agent saw it.
void start_agent_exec(self_ptr self, uint64_t seq) {
  auto& st = self->state;
  auto& run = st.running.at(seq);
  agent_command cmd;
  cmd.on_output = [self, seq](output_stream stream, std::string& bytes) {
    auto it = self->state.running.find(seq);
    if (it == self->state.running.end()) return false;
    auto& run = it->second;
    const bool err = stream == output_stream::stderr_stream;
    std::string& kept = err ? run.result.stderr_data : run.result.stdout_data;
    const uint64_t cap = err ? run.plan.max_stderr : run.plan.max_stdout;
    if (kept.size() < cap)
      kept.append(bytes, 0, std::min<uint64_t>(bytes.size(), cap - kept.size()));
    if (!run.request.subscriber) return false;
    output_chunk chunk;
    chunk.exec_seq = seq;
    chunk.stream = stream;
    chunk.bytes = std::move(bytes);
    const uint64_t n = chunk.bytes.size();
    const uint32_t id = run.agent_id;
    // Its answer (any, or its end) says the subscriber has the bytes: their credit goes back.
    // Bounded: a subscriber on a node link that dropped never answers (CAF 0.17 sends no
    // error for a request already on the wire); the command's own timeout ends it anyway.
    const auto patience = run.plan.timeout.count() > 0
                              ? std::chrono::duration_cast<caf::timespan>(run.plan.timeout) +
                                    caf::timespan{std::chrono::seconds(10)}
                              : caf::timespan{std::chrono::hours(24)};
    self->request(run.request.subscriber, patience, output_atom_v, std::move(chunk))
        .then([self, id, n]() { give_credit(self, id, n); },
              [self, seq, id, n](caf::error&) {
                // Gone (or too old to answer): the command goes on without it.
                if (auto r = self->state.running.find(seq); r != self->state.running.end())
                  r->second.request.subscriber = nullptr;
                give_credit(self, id, n);
              });
    return true;
  };
  cmd.on_exit = [self, seq](agent_exit& e) {
    namespace proto = agent_protocol;
    auto& st = self->state;
    auto it = st.running.find(seq);
    if (it == st.running.end()) return;
    auto& run = it->second;
    auto& r = run.result;
    r.stdout_bytes = e.totals[0];
    r.stderr_bytes = e.totals[1];
    r.stdout_truncated = e.truncated[0] || r.stdout_data.size() < e.totals[0];
    r.stderr_truncated = e.truncated[1] || r.stderr_data.size() < e.totals[1];
    r.warnings = run.plan.warnings;
    r.exit_code = e.code;
    switch (e.how) {
      case proto::end::timed_out:
        r.end = exec_end::timed_out;
        break;
      case proto::end::killed:
        r.end = run.timed_out ? exec_end::timed_out : exec_end::killed;
        r.exit_code = run.timed_out ? 124 : 137;
        break;
      case proto::end::lost:
        // The agent went away: by our own removal (a release with cancel, the lifetime) or not.
        r.end = run.killed      ? exec_end::killed
                : run.timed_out ? exec_end::timed_out
                                : exec_end::sandbox_lost;
        r.exit_code = run.timed_out ? 124 : 137;
        break;
      case proto::end::spawn_failed:
        r.end = exec_end::exited;
        if (!e.detail.empty()) r.stderr_data += "corral: " + e.detail + "\n";
        break;
      case proto::end::exited:
        r.end = e.oom ? exec_end::oom_killed : exec_end::exited;
        if (!e.oom && e.code == 137) {
          // Killed by a signal we did not send: the engine's oom event, or the sandbox's end.
          return self->delayed_send(self, std::chrono::milliseconds(300), finalize_atom_v, seq);
        }
        break;
    }
    end_exec(self, seq, {});
  };
  run.agent_id =
      agent_start(self, run.request.argv, run.plan.create.env, run.plan.create.working_dir,
                  run.plan.timeout, run.plan.max_stdout, run.plan.max_stderr,
                  run.request.has_stdin ? &run.request.stdin_data : nullptr, std::move(cmd));
  // The agent ends it at its deadline, with or without us: no timer of the monitor's here
  // (two messages less per command). Should the agent itself fail, its link ends and the
  // command with it; the sandbox's lifetime stays the monitor's.
}

void start_exec(self_ptr self, pending_exec pending) {
  auto& st = self->state;
  const uint64_t seq = st.next_seq++;
  running_exec run;
  run.request = std::move(pending.request);
  run.plan = std::move(pending.plan);
  run.rp = std::move(pending.rp);
  run.tag = random_hex64();
  if (st.args.plan.agent) {
    // No update here: the supervisor counted the command when it asked (execs_in_flight), and
    // the update at its end corrects the count. One message less per command.
    st.running.emplace(seq, std::move(run));
    return start_agent_exec(self, seq);
  }
  auto create = run.plan.create;
  create.env.push_back("CORRAL_EXEC=" + run.tag);
  st.running.emplace(seq, std::move(run));
  publish(self);
  engine(self).exec_create(
      st.info.container_id, create,
      back_to<docker::exec_create_response>(
          self, [self, seq](docker::result<docker::exec_create_response> created) {
            auto& st = self->state;
            auto it = st.running.find(seq);
            if (it == st.running.end()) return;
            auto& run = it->second;
            if (!created) {
              return end_exec(self, seq,
                              container_stopped(created.err())
                                  ? make_error(corral_errc::sandbox_lost,
                                               "sandbox " + st.info.key + " cannot run commands: " +
                                                   created.err().describe())
                                  : from_engine(created.err(), "creating the exec"));
            }
            run.exec_id = created->id;
            docker::exec_start_options options;
            options.max_stdout = run.plan.max_stdout;
            options.max_stderr = run.plan.max_stderr;
            if (run.request.has_stdin) options.stdin_data = run.request.stdin_data;
            // Our deadline is the monitor's; the adapter's only guards against a stuck engine.
            options.timeout = run.plan.timeout + std::chrono::seconds(30);
            if (run.request.subscriber) {
              // Runs on the adapter's thread: sending is all it may do.
              options.on_output = [subscriber = run.request.subscriber, seq](
                                      docker::stream_kind kind, std::string_view bytes) {
                output_chunk chunk;
                chunk.exec_seq = seq;
                chunk.stream = kind == docker::stream_kind::stderr_stream
                                   ? output_stream::stderr_stream
                                   : output_stream::stdout_stream;
                chunk.bytes.assign(bytes);
                caf::anon_send(subscriber, output_atom_v, std::move(chunk));
              };
            }
            run.stream = engine(self).exec_start(
                run.exec_id, std::move(options),
                back_to<docker::exec_output>(
                    self, [self, seq](auto out) { on_stream_end(self, seq, out); }));
            self->send(st.monitor, watch_atom_v, seq, caf::timespan{run.plan.timeout});
          }));
}

}  // namespace

void start_pending(self_ptr self) {
  auto& st = self->state;
  while (st.now == phase::ready && !st.queue.empty() &&
         st.running.size() < st.args.cfg.max_execs_per_sandbox) {
    auto next = std::move(st.queue.front());
    st.queue.pop_front();
    start_exec(self, std::move(next));
  }
}

// Kills every process of one exec inside the sandbox: each carries CORRAL_EXEC=<tag> in its
// environment, inherited by its children. A second exec finds and kills them all; the exec
// stream then ends by itself. If that is not possible, the fallback timer kills the sandbox.
void kill_exec_tree(self_ptr self, uint64_t seq) {
  auto& st = self->state;
  auto it = st.running.find(seq);
  if (it == st.running.end()) return;
  docker::exec_create_request killer;
  killer.user = st.args.plan.user;
  killer.attach_stdout = false;
  killer.attach_stderr = false;
  // Stop them all first, then kill: a parent that outlives its child even briefly would go on
  // running the rest of its script. Rounds catch children forked while the list was made.
  static constexpr const char* kill_script =
      "t=\"CORRAL_EXEC=$1\"; for round in 1 2 3; do p=; for d in /proc/[0-9]*; do "
      "if tr '\\0' '\\n' < \"$d/environ\" 2>/dev/null | grep -qx \"$t\"; then "
      "p=\"$p ${d#/proc/}\"; fi; done; [ -z \"$p\" ] && break; "
      "kill -STOP $p 2>/dev/null; kill -KILL $p 2>/dev/null; done";
  killer.cmd = {"/bin/sh", "-c", kill_script, "corral-kill", it->second.tag};
  self->delayed_send(self, std::chrono::seconds(5), fallback_atom_v, seq);
  engine(self).exec_create(st.info.container_id, killer,
                           back_to<docker::exec_create_response>(
                               self, [self](docker::result<docker::exec_create_response> created) {
                                 if (!created) return;  // the fallback timer takes over
                                 engine(self).exec_start(
                                     created->id, {},
                                     back_to<docker::exec_output>(self, [](auto) {}));
                               }));
}

}  // namespace corral::actors::container_detail
