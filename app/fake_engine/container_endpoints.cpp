// The fake engine's container endpoints: create, start, stop, kill, remove, pause, unpause,
// rename, wait, inspect, list, logs, stats, archive; and a container's end (container_exit),
// which ends its execs and agent, emits `die` and answers its waiters.
#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "app/fake_engine/engine.hpp"
#include "app/fake_engine/json_fields.hpp"
#include "messages/agent_protocol.hpp"

namespace corral::app {

using namespace fake;
using docker::json_writer;
using std::chrono::milliseconds;
namespace proto = corral::agent_protocol;

std::string fake::status_text(const container_rec& c) {
  if (c.state == "running") return "Up Less than a second";
  if (c.state == "paused") return "Up Less than a second (Paused)";
  if (c.state == "created") return "Created";
  return "Exited (" + std::to_string(c.exit_code) + ") Less than a second ago";
}

void fake_engine::impl::create(const std::shared_ptr<session>& s, const route& r) {
  simdjson::dom::element doc;
  simdjson::dom::object body;
  if (json.parse(s->req().body()).get(doc) != simdjson::SUCCESS ||
      doc.get_object().get(body) != simdjson::SUCCESS) {
    return s->reply_error(http::status::bad_request, "invalid JSON body");
  }
  std::string name;
  if (auto it = r.query.find("name"); it != r.query.end()) name = it->second;
  if (!name.empty() && name.front() == '/') name.erase(0, 1);
  if (!name.empty() && !valid_container_name(name)) {
    return s->reply_error(
        http::status::bad_request,
        "Invalid container name (" + name + "), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
  }
  if (!name.empty()) {
    if (auto other = names.find(name); other != names.end()) {
      return s->reply_error(
          http::status::conflict,
          "Conflict. The container name \"/" + name + "\" is already in use by container \"" +
              other->second +
              "\". You have to remove (or rename) that container to be able to reuse that name.");
    }
  }
  auto c = std::make_shared<container_rec>();
  c->image = json_string(body, "Image");
  if (!image_exists(c->image))
    return s->reply_error(http::status::not_found, "No such image: " + c->image);
  c->cmd = json_strings(body, "Cmd");
  c->entrypoint = json_strings(body, "Entrypoint");
  if (c->cmd.empty() && c->entrypoint.empty()) {
    return s->reply_error(http::status::bad_request, "No command specified");
  }
  c->env = json_strings(body, "Env");
  c->user = json_string(body, "User");
  c->working_dir = json_string(body, "WorkingDir");
  c->labels = json_string_map(body, "Labels");
  simdjson::dom::element host;
  if (body["HostConfig"].get(host) == simdjson::SUCCESS)
    c->host_config_json = simdjson::minify(host);
  c->id = new_id();
  c->name = name.empty() ? "fake_" + c->id.substr(0, 12) : name;
  const auto now = std::chrono::system_clock::now();
  c->created = rfc3339(now);
  c->created_unix =
      std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  names[c->name] = c->id;
  containers[c->id] = c;
  ++st.containers_created_total;
  emit(*c, "create");
  json_writer w;
  w.begin_object().field("Id", c->id);
  write_strings(w, "Warnings", {});
  w.end_object();
  s->reply_json(http::status::created, w.take());
}

void fake_engine::impl::start_container(const std::shared_ptr<session>& s, container_rec& c) {
  if (c.running()) return s->reply(http::status::not_modified, "");
  c.state = "running";
  c.exit_code = 0;
  c.oom_killed = false;
  c.pid = next_pid++;
  c.started_at = rfc3339(std::chrono::system_clock::now());
  emit(c, "start");
  if (c.entrypoint == std::vector<std::string>{proto::agent_path_inside}) {
    start_agent(c);  // runs until the container ends
    return s->reply(http::status::no_content, "");
  }
  std::vector<std::string> argv = c.entrypoint;
  argv.insert(argv.end(), c.cmd.begin(), c.cmd.end());
  // docker-init as PID 1 only forwards: the command's own behaviour decides the exit.
  program p = interpret(argv, opt.max_sleep, true);
  if (!p.forever) {
    milliseconds total{0};
    for (const auto& st_ : p.steps) total += st_.duration;
    c.main_timer = std::make_unique<asio::steady_timer>(io);
    c.main_timer->expires_after(total);
    const std::string id = c.id;
    const int64_t pid = c.pid;
    const int code = p.exit_code;
    c.main_timer->async_wait([this, id, pid, code](beast::error_code ec) {
      if (ec || stopping) return;
      auto it = containers.find(id);
      if (it == containers.end() || !it->second->running() || it->second->pid != pid) return;
      container_exit(*it->second, code);
    });
  }
  s->reply(http::status::no_content, "");
}

void fake_engine::impl::stop_container(const std::shared_ptr<session>& s, container_rec& c,
                                       const route& r) {
  if (!c.running()) return s->reply(http::status::not_modified, "");
  const bool now = r.query.count("t") && r.query.at("t") == "0";
  emit(c, "kill", {{"signal", now ? "9" : "15"}});
  container_exit(c, now ? 137 : 143);
  emit(c, "stop");
  s->reply(http::status::no_content, "");
}

void fake_engine::impl::kill_container(const std::shared_ptr<session>& s, container_rec& c,
                                       const route& r) {
  if (!c.running()) {
    return s->reply_error(http::status::conflict, "Cannot kill container: " + c.id +
                                                      ": Container " + c.id + " is not running");
  }
  std::string signal = r.query.count("signal") ? r.query.at("signal") : "SIGKILL";
  if (signal.rfind("SIG", 0) == 0) signal.erase(0, 3);
  int number = 9;
  if (signal == "TERM" || signal == "15")
    number = 15;
  else if (signal == "INT" || signal == "2")
    number = 2;
  else if (signal == "HUP" || signal == "1")
    number = 1;
  else if (!signal.empty() && std::all_of(signal.begin(), signal.end(),
                                          [](unsigned char ch) { return std::isdigit(ch) != 0; }))
    number = std::atoi(signal.c_str());
  emit(c, "kill", {{"signal", std::to_string(number)}});
  container_exit(c, 128 + number);
  s->reply(http::status::no_content, "");
}

void fake_engine::impl::remove_container(const std::shared_ptr<session>& s, const std::string& id,
                                         const route& r) {
  auto it = containers.find(id);
  auto c = it->second;
  if (c->running()) {
    if (!truthy(r.query, "force")) {
      return s->reply_error(http::status::conflict,
                            "You cannot remove a running container " + c->id +
                                ". Stop the container before attempting removal or force remove");
    }
    emit(*c, "kill", {{"signal", "9"}});
    container_exit(*c, 137);
  }
  kill_execs_of(*c);
  for (const auto& e : c->execs) execs.erase(e);
  if (c->main_timer) c->main_timer->cancel();
  names.erase(c->name);
  containers.erase(it);
  ++st.containers_removed_total;
  emit(*c, "destroy");
  notify_waiters(*c, true);
  s->reply(http::status::no_content, "");
}

void fake_engine::impl::container_exit(container_rec& c, int64_t code) {
  if (!c.running()) return;
  c.state = "exited";
  c.exit_code = code;
  c.pid = 0;
  c.finished_at = rfc3339(std::chrono::system_clock::now());
  if (c.main_timer) c.main_timer->cancel();
  kill_execs_of(c);
  stop_agent(c);
  emit(c, "die", {{"exitCode", std::to_string(code)}});
  notify_waiters(c, false);
}

void fake_engine::impl::pause_container(const std::shared_ptr<session>& s, container_rec& c,
                                        const route& r) {
  if (!c.running())
    return s->reply_error(http::status::conflict, "Container " + c.id + " is not running");
  const bool to_pause = r.cls == "pause";
  if (to_pause == (c.state == "paused")) {
    return s->reply_error(
        http::status::conflict,
        "Container " + c.id + (to_pause ? " is already paused" : " is not paused"));
  }
  c.state = to_pause ? "paused" : "running";
  emit(c, r.cls);
  return s->reply(http::status::no_content, "");
}

void fake_engine::impl::rename_container(const std::shared_ptr<session>& s, container_rec& c,
                                         const route& r) {
  auto it = r.query.find("name");
  std::string name = it == r.query.end() ? "" : it->second;
  if (!name.empty() && name.front() == '/') name.erase(0, 1);
  if (!valid_container_name(name))
    return s->reply_error(http::status::bad_request, "Invalid container name (" + name + ")");
  if (auto other = names.find(name); other != names.end() && other->second != c.id) {
    return s->reply_error(http::status::conflict, "Conflict. The name \"/" + name +
                                                      "\" is already in use by container \"" +
                                                      other->second + "\".");
  }
  names.erase(c.name);
  c.name = name;
  names[name] = c.id;
  emit(c, "rename");
  return s->reply(http::status::no_content, "");
}

void fake_engine::impl::notify_waiters(container_rec& c, bool removed) {
  auto ws = std::move(c.waiters);
  c.waiters.clear();
  for (auto& w : ws) {
    if (!removed && w.condition == "removed") {
      c.waiters.push_back(std::move(w));
      continue;
    }
    json_writer j;
    j.begin_object().field("StatusCode", c.exit_code).key("Error").null_value().end_object();
    w.s->reply_json(http::status::ok, j.take());
  }
}

void fake_engine::impl::wait(const std::shared_ptr<session>& s, container_rec& c, const route& r) {
  std::string condition = r.query.count("condition") ? r.query.at("condition") : "not-running";
  if (condition.empty()) condition = "not-running";
  if (condition == "not-running" && !c.running()) {
    json_writer j;
    j.begin_object().field("StatusCode", c.exit_code).key("Error").null_value().end_object();
    return s->reply_json(http::status::ok, j.take());
  }
  c.waiters.push_back(waiter{s, condition});
}

void fake_engine::impl::inspect(const std::shared_ptr<session>& s, const container_rec& c) {
  json_writer w;
  w.begin_object();
  w.field("Id", c.id).field("Created", c.created);
  std::vector<std::string> argv = c.entrypoint;
  argv.insert(argv.end(), c.cmd.begin(), c.cmd.end());
  w.field("Path", argv.empty() ? std::string() : argv.front());
  write_strings(w, "Args",
                argv.empty() ? argv : std::vector<std::string>(argv.begin() + 1, argv.end()));
  w.key("State").begin_object();
  w.field("Status", c.state).field("Running", c.running()).field("Paused", c.state == "paused");
  w.field("Restarting", false)
      .field("OOMKilled", c.oom_killed)
      .field("Dead", false)
      .field("Pid", c.pid);
  w.field("ExitCode", c.exit_code)
      .field("Error", "")
      .field("StartedAt", c.started_at)
      .field("FinishedAt", c.finished_at);
  w.end_object();
  w.field("Image", "sha256:" + std::string(64, 'f'));
  w.field("Name", "/" + c.name)
      .field("RestartCount", int64_t{0})
      .field("Driver", "fake")
      .field("MountLabel", "");
  std::string head = w.take();
  // HostConfig is echoed as it came: splice the raw JSON in.
  head += ",\"HostConfig\":" + c.host_config_json;
  json_writer cfg;
  cfg.begin_object();
  cfg.field("Hostname", c.id.substr(0, 12)).field("User", c.user);
  write_strings(cfg, "Env", c.env);
  write_strings(cfg, "Cmd", c.cmd);
  cfg.field("Image", c.image).field("WorkingDir", c.working_dir);
  if (!c.entrypoint.empty()) write_strings(cfg, "Entrypoint", c.entrypoint);
  write_map(cfg, "Labels", c.labels);
  cfg.end_object();
  head += ",\"Config\":" + cfg.take() + "}";
  s->reply_json(http::status::ok, std::move(head));
}

void fake_engine::impl::list(const std::shared_ptr<session>& s, const route& r) {
  std::map<std::string, std::vector<std::string>> filters;
  if (auto it = r.query.find("filters"); it != r.query.end()) {
    auto parsed = parse_filters(json, it->second);
    if (!parsed) return s->reply_error(http::status::bad_request, "invalid filter: " + it->second);
    filters = std::move(*parsed);
  }
  for (const auto& [k, v] : filters) {
    if (k != "label" && k != "status" && k != "id" && k != "name" && k != "ancestor") {
      return s->reply_error(http::status::bad_request, "invalid filter '" + k + "'");
    }
  }
  const bool all = truthy(r.query, "all");
  std::vector<const container_rec*> out;
  for (const auto& entry : containers) {
    const auto& c = entry.second;  // a named reference: lambdas below capture it
    if (!all && !c->running()) continue;
    bool ok = true;
    for (const auto& [k, values] : filters) {
      if (k == "label") {
        ok = std::all_of(values.begin(), values.end(),
                         [&](const std::string& f) { return label_matches(c->labels, f); });
      } else if (k == "status") {
        ok = std::find(values.begin(), values.end(), c->state) != values.end();
      } else if (k == "id") {
        ok = std::any_of(values.begin(), values.end(),
                         [&](const std::string& v) { return c->id.rfind(v, 0) == 0; });
      } else if (k == "name") {
        ok = std::any_of(values.begin(), values.end(), [&](const std::string& v) {
          return c->name.find(v[0] == '/' ? v.substr(1) : v) != std::string::npos;
        });
      } else if (k == "ancestor") {
        ok = std::find(values.begin(), values.end(), c->image) != values.end();
      }
      if (!ok) break;
    }
    if (ok) out.push_back(c.get());
  }
  std::sort(out.begin(), out.end(), [](const auto* a, const auto* b) {
    return a->created_unix != b->created_unix ? a->created_unix > b->created_unix : a->id < b->id;
  });
  json_writer w;
  w.begin_array();
  for (const auto* c : out) {
    w.begin_object();
    w.field("Id", c->id);
    write_strings(w, "Names", {"/" + c->name});
    w.field("Image", c->image).field("ImageID", "sha256:" + std::string(64, 'f'));
    std::string command;
    for (const auto& a : c->cmd) command += (command.empty() ? "" : " ") + a;
    w.field("Command", command).field("Created", c->created_unix);
    w.key("Ports").begin_array().end_array();
    write_map(w, "Labels", c->labels);
    w.field("State", c->state).field("Status", status_text(*c));
    w.key("HostConfig").begin_object().field("NetworkMode", "none").end_object();
    w.key("Mounts").begin_array().end_array();
    w.end_object();
  }
  w.end_array();
  s->reply_json(http::status::ok, w.take());
}

void fake_engine::impl::logs(const std::shared_ptr<session>& s, const container_rec&) {
  if (roll(opt.truncate_rate)) {
    ++st.injected_truncations;
    if (s->reset_instead_of_reply) return s->reset();
    // Close-delimited, cut inside the first frame.
    std::string head =
        "HTTP/1.1 200 OK\r\nContent-Type: "
        "application/vnd.docker.multiplexed-stream\r\nApi-Version: 1.41\r\n"
        "Connection: close\r\n\r\n";
    head += frame_header(1, 64);
    head += "partial";
    s->send_raw(std::move(head));
    return s->end_after_drain();
  }
  s->reply(http::status::ok, "", "application/vnd.docker.multiplexed-stream");
}

void fake_engine::impl::stats(const std::shared_ptr<session>& s, const container_rec& c) {
  json_writer w;
  w.begin_object();
  w.field("read", rfc3339(std::chrono::system_clock::now()));
  w.field_object("pids_stats").field("current", int64_t{c.running() ? 1 : 0}).end_object();
  w.field_object("cpu_stats")
      .field_object("cpu_usage")
      .field("total_usage", int64_t{1'000'000})
      .end_object();
  w.field("system_cpu_usage", int64_t{1'000'000'000}).field("online_cpus", int64_t{2}).end_object();
  w.field_object("memory_stats")
      .field("usage", int64_t{1 << 20})
      .field("limit", int64_t{512LL << 20})
      .end_object();
  w.end_object();
  return s->reply_json(http::status::ok, w.take());
}

void fake_engine::impl::archive(const std::shared_ptr<session>& s, const container_rec& c,
                                const route& r) {
  if (r.method == http::verb::put) return s->reply(http::status::ok, "");
  auto it = r.query.find("path");
  return s->reply_error(http::status::not_found,
                        "Could not find the file " +
                            (it == r.query.end() ? std::string() : it->second) + " in container " +
                            c.id);
}

}  // namespace corral::app
