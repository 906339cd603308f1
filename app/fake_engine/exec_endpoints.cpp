// The fake engine's execs: create (records kept per container, the oldest finished ones
// forgotten past max_exec_records), inspect, start (detached, or a raw stream upgraded from
// HTTP, or cut mid-frame by fault injection), and playing the exec's program on that stream:
// frames written as the client drains them, stdin read for `cat`, corral's exec killer.
#include <algorithm>

#include "app/fake_engine/engine.hpp"
#include "app/fake_engine/json_fields.hpp"

namespace corral::app {

using namespace fake;
using docker::json_writer;

void fake_engine::impl::exec_create(const std::shared_ptr<session>& s, container_rec& c) {
  if (c.state == "paused") {
    return s->reply_error(http::status::conflict,
                          "Container " + c.id + " is paused, unpause the container before exec");
  }
  if (!c.running())
    return s->reply_error(http::status::conflict, "Container " + c.id + " is not running");
  simdjson::dom::element doc;
  simdjson::dom::object body;
  if (json.parse(s->req().body()).get(doc) != simdjson::SUCCESS ||
      doc.get_object().get(body) != simdjson::SUCCESS) {
    return s->reply_error(http::status::bad_request, "invalid JSON body");
  }
  auto e = std::make_shared<exec_rec>();
  e->cmd = json_strings(body, "Cmd");
  if (e->cmd.empty()) return s->reply_error(http::status::bad_request, "No exec command specified");
  e->env = json_strings(body, "Env");
  e->user = json_string(body, "User");
  e->attach_stdin = json_bool(body, "AttachStdin", false);
  e->attach_stdout = json_bool(body, "AttachStdout", false);
  e->attach_stderr = json_bool(body, "AttachStderr", false);
  e->id = new_id();
  e->container_id = c.id;
  execs[e->id] = e;
  c.execs.push_back(e->id);
  ++st.execs_total;
  if (c.execs.size() > opt.max_exec_records) {
    // Forget the oldest finished execs, down to half the bound.
    std::vector<std::string> kept;
    std::size_t excess = c.execs.size() - opt.max_exec_records / 2;
    for (auto& id : c.execs) {
      auto it = execs.find(id);
      const bool finished = it == execs.end() || (it->second->started && !it->second->running);
      if (excess > 0 && finished) {
        if (it != execs.end()) execs.erase(it);
        --excess;
      } else {
        kept.push_back(std::move(id));
      }
    }
    c.execs = std::move(kept);
  }
  json_writer w;
  w.begin_object().field("Id", e->id).end_object();
  s->reply_json(http::status::created, w.take());
}

void fake_engine::impl::exec_inspect(const std::shared_ptr<session>& s, const std::string& id) {
  auto it = execs.find(id);
  if (it == execs.end())
    return s->reply_error(http::status::not_found, "No such exec instance: " + id);
  const auto& e = *it->second;
  json_writer w;
  w.begin_object();
  w.field("CanRemove", false).field("ContainerID", e.container_id).field("DetachKeys", "");
  w.field("ID", e.id).field("Running", e.running);
  w.key("ExitCode");
  if (e.exit_code)
    w.value(*e.exit_code);
  else
    w.null_value();
  w.key("ProcessConfig").begin_object().field("tty", false);
  w.field("entrypoint", e.cmd.front());
  write_strings(w, "arguments", std::vector<std::string>(e.cmd.begin() + 1, e.cmd.end()));
  w.field("privileged", false).field("user", e.user).end_object();
  w.field("OpenStdin", e.attach_stdin)
      .field("OpenStderr", e.attach_stderr)
      .field("OpenStdout", e.attach_stdout);
  w.field("Pid", e.pid);
  w.end_object();
  s->reply_json(http::status::ok, w.take());
}

void fake_engine::impl::exec_start(const std::shared_ptr<session>& s, const std::string& id) {
  auto it = execs.find(id);
  if (it == execs.end())
    return s->reply_error(http::status::not_found, "No such exec instance: " + id);
  auto e = it->second;
  if (e->started)
    return s->reply_error(http::status::conflict,
                          "Error: Exec command " + id + " is already running");
  auto c = containers.find(e->container_id);
  if (c == containers.end() || !c->second->running()) {
    return s->reply_error(http::status::conflict,
                          "Container " + e->container_id + " is not running");
  }
  if (c->second->state == "paused") {
    return s->reply_error(
        http::status::conflict,
        "Container " + e->container_id + " is paused, unpause the container before exec");
  }
  bool detach = false;
  simdjson::dom::element doc;
  simdjson::dom::object body;
  if (!s->req().body().empty() && json.parse(s->req().body()).get(doc) == simdjson::SUCCESS &&
      doc.get_object().get(body) == simdjson::SUCCESS) {
    detach = json_bool(body, "Detach", false);
  }
  e->started = true;
  e->running = true;
  e->pid = next_pid++;
  ++st.execs_running;
  e->prog = interpret(e->cmd, opt.max_sleep, false);
  e->timer = std::make_unique<asio::steady_timer>(io);

  const bool truncate = !detach && roll(opt.truncate_rate);
  if (detach) {
    s->reply(http::status::ok, "");
  } else if (s->reset_instead_of_reply) {
    // The process runs; its caller never hears of it.
    s->reset();
  } else {
    const bool upgrade =
        beast::iequals(s->req()[http::field::upgrade], "tcp") ||
        s->req()[http::field::connection].find("pgrade") != beast::string_view::npos;
    s->send_raw(upgrade
                    ? "HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
                      "Connection: Upgrade\r\nUpgrade: tcp\r\nApi-Version: 1.41\r\n\r\n"
                    : "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
                      "Api-Version: 1.41\r\nConnection: close\r\n\r\n");
    if (truncate) {
      ++st.injected_truncations;
      // Cut inside the first frame: a header that promises more than follows.
      std::string cut;
      const step* first = nullptr;
      for (const auto& x : e->prog.steps) {
        if (x.kind == step::out || x.kind == step::zeros) {
          first = &x;
          break;
        }
      }
      if (first && first->kind == step::out && first->text.size() >= 2) {
        const auto n = std::min(first->text.size(), frame_size);
        cut = frame_header(first->stream, static_cast<uint32_t>(n)) + first->text.substr(0, n / 2);
      } else if (first && first->kind == step::zeros && first->count >= 2) {
        const auto n = static_cast<std::size_t>(std::min<uint64_t>(first->count, frame_size));
        cut = frame_header(1, static_cast<uint32_t>(n)) + std::string(n / 2, '\0');
      } else {
        cut = frame_header(1, 16).substr(0, 5);
      }
      s->send_raw(std::move(cut));
      s->end_after_drain();
    } else {
      e->stream = s;
      std::weak_ptr<exec_rec> weak = e;
      s->read_stream(
          [weak](std::string_view data) {
            if (auto x = weak.lock()) x->stdin_data.append(data);
          },
          [this, weak](bool) {
            auto x = weak.lock();
            if (!x) return;
            x->stdin_done = true;
            if (x->waiting_for_stdin && x->running) {
              x->waiting_for_stdin = false;
              exec_step(x);
            }
          });
      if (!e->attach_stdin) e->stdin_done = true;
    }
  }
  run_exec(e);
}

void fake_engine::impl::run_exec(const std::shared_ptr<exec_rec>& e) {
  if (!e->prog.kill_tag.empty()) {
    // corral's killer: every running exec of this container carrying the tag ends now.
    const std::string wanted = "CORRAL_EXEC=" + e->prog.kill_tag;
    if (auto c = containers.find(e->container_id); c != containers.end()) {
      for (const auto& other_id : c->second->execs) {
        auto other = execs.find(other_id);
        if (other == execs.end() || other->second == e) continue;
        if (other->second->running && other->second->has_env(wanted)) {
          ++st.execs_killed;
          finish_exec(other->second, 137, true);
        }
      }
    }
  }
  e->next_step = 0;
  exec_step(e);
}

void fake_engine::impl::exec_step(const std::shared_ptr<exec_rec>& e) {
  if (!e->running || stopping) return;
  if (e->next_step >= e->prog.steps.size()) return finish_exec(e, e->prog.exit_code, false);
  const step& x = e->prog.steps[e->next_step++];
  auto s = e->stream && !e->stream->closed() ? e->stream : nullptr;
  std::weak_ptr<exec_rec> weak = e;
  auto next = [this, weak] {
    if (auto x2 = weak.lock()) exec_step(x2);
  };
  switch (x.kind) {
    case step::sleep:
      e->timer->expires_after(x.duration);
      e->timer->async_wait([next](beast::error_code ec) {
        if (!ec) next();
      });
      return;
    case step::echo_stdin:
      if (!e->stdin_done) {
        --e->next_step;
        e->waiting_for_stdin = true;
        return;
      }
      if (s && e->attach_stdout && !e->stdin_data.empty()) {
        s->send_frames(1, e->stdin_data);
        return s->after_drain(next);
      }
      return exec_step(e);
    case step::out:
      if (s && ((x.stream == 1 && e->attach_stdout) || (x.stream == 2 && e->attach_stderr))) {
        s->send_frames(x.stream, x.text);
        return s->after_drain(next);
      }
      return exec_step(e);
    case step::zeros:
      if (s && e->attach_stdout) {
        s->send_zeros(x.count);
        return s->after_drain(next);
      }
      return exec_step(e);
  }
}

void fake_engine::impl::finish_exec(const std::shared_ptr<exec_rec>& e, int64_t code, bool killed) {
  if (!e->running) return;
  e->running = false;
  e->exit_code = code;
  --st.execs_running;
  if (e->timer) e->timer->cancel();
  if (auto s = std::move(e->stream)) {
    e->stream = nullptr;
    if (killed)
      s->close();
    else
      s->end_after_drain();
  }
}

void fake_engine::impl::kill_execs_of(container_rec& c) {
  for (const auto& id : c.execs) {
    auto it = execs.find(id);
    if (it == execs.end() || !it->second->running) continue;
    ++st.execs_killed;
    finish_exec(it->second, 137, true);
  }
}

}  // namespace corral::app
