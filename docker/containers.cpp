// Containers area: create, start, stop, kill, wait, inspect, list, rename, remove, logs,
// pause, unpause, stats.
#include <simdjson.h>

#include <memory>

#include "docker/client.hpp"
#include "docker/json.hpp"
#include "docker/json_read.hpp"
#include "docker/request_util.hpp"

namespace corral::docker {

using namespace detail;

namespace {

void write_strings(json_writer& w, std::string_view key, const std::vector<std::string>& values) {
  w.key(key).begin_array();
  for (const auto& v : values) w.value(v);
  w.end_array();
}

void write_string_map(json_writer& w, std::string_view key,
                      const std::map<std::string, std::string>& values) {
  w.key(key).begin_object();
  for (const auto& [k, v] : values) w.field(k, v);
  w.end_object();
}

void write_host_config(json_writer& w, const host_config& h) {
  w.key("HostConfig").begin_object();
  if (!h.binds.empty()) write_strings(w, "Binds", h.binds);
  if (!h.tmpfs.empty()) write_string_map(w, "Tmpfs", h.tmpfs);
  if (h.memory > 0) w.field("Memory", h.memory);
  if (h.memory_swap != 0) w.field("MemorySwap", h.memory_swap);
  if (h.nano_cpus > 0) w.field("NanoCpus", h.nano_cpus);
  if (h.cpu_shares > 0) w.field("CpuShares", h.cpu_shares);
  if (h.pids_limit != 0) w.field("PidsLimit", h.pids_limit);
  if (!h.cap_drop.empty()) write_strings(w, "CapDrop", h.cap_drop);
  if (!h.cap_add.empty()) write_strings(w, "CapAdd", h.cap_add);
  if (!h.security_opt.empty()) write_strings(w, "SecurityOpt", h.security_opt);
  w.field("ReadonlyRootfs", h.readonly_rootfs);
  if (!h.network_mode.empty()) w.field("NetworkMode", h.network_mode);
  if (h.init) w.field("Init", true);
  if (h.oom_score_adj != 0) w.field("OomScoreAdj", static_cast<int64_t>(h.oom_score_adj));
  w.field("AutoRemove", h.auto_remove);
  w.end_object();
}

host_config read_host_config(simdjson::ondemand::object& h) {
  host_config out;
  out.binds = get_string_list(h, "Binds");
  out.tmpfs = get_string_map(h, "Tmpfs");
  out.memory = get_int(h, "Memory");
  out.memory_swap = get_int(h, "MemorySwap");
  out.nano_cpus = get_int(h, "NanoCpus");
  out.cpu_shares = get_int(h, "CpuShares");
  out.pids_limit = get_int(h, "PidsLimit");
  out.cap_drop = get_string_list(h, "CapDrop");
  out.cap_add = get_string_list(h, "CapAdd");
  out.security_opt = get_string_list(h, "SecurityOpt");
  out.readonly_rootfs = get_bool(h, "ReadonlyRootfs");
  out.network_mode = get_string(h, "NetworkMode");
  out.init = get_bool(h, "Init");
  out.oom_score_adj = static_cast<int>(get_int(h, "OomScoreAdj"));
  out.auto_remove = get_bool(h, "AutoRemove");
  return out;
}

container_state read_state(simdjson::ondemand::object& s) {
  container_state out;
  out.status = get_string(s, "Status");
  out.running = get_bool(s, "Running");
  out.paused = get_bool(s, "Paused");
  out.restarting = get_bool(s, "Restarting");
  out.oom_killed = get_bool(s, "OOMKilled");
  out.dead = get_bool(s, "Dead");
  out.pid = get_int(s, "Pid");
  out.exit_code = get_int(s, "ExitCode");
  out.error = get_string(s, "Error");
  out.started_at = get_string(s, "StartedAt");
  out.finished_at = get_string(s, "FinishedAt");
  return out;
}

std::string container_path(const std::string& id, std::string_view tail = {}) {
  std::string out = "/containers/" + url_encode(id);
  out += tail;
  return out;
}

// Start and stop: 204 done, 304 already in that state.
response_completion change_reply(callback<change_outcome> done) {
  return [done = std::move(done)](result<http_response> reply) {
    if (!reply) return done(std::move(reply).err());
    done(reply->head.status == 304 ? change_outcome::already : change_outcome::done);
  };
}

}  // namespace

void client::container_create(const container_create_request& request,
                              callback<container_create_response> done) {
  if (request.image.empty()) {
    return done(error{errc::invalid_request, "container create: no image given", 0});
  }
  json_writer w;
  w.begin_object();
  w.field("Image", request.image);
  if (!request.cmd.empty()) write_strings(w, "Cmd", request.cmd);
  if (!request.entrypoint.empty()) write_strings(w, "Entrypoint", request.entrypoint);
  if (!request.env.empty()) write_strings(w, "Env", request.env);
  if (!request.user.empty()) w.field("User", request.user);
  if (!request.working_dir.empty()) w.field("WorkingDir", request.working_dir);
  if (!request.labels.empty()) write_string_map(w, "Labels", request.labels);
  if (!request.stop_signal.empty()) w.field("StopSignal", request.stop_signal);
  if (request.stop_timeout >= 0) w.field("StopTimeout", request.stop_timeout);
  w.field("Tty", request.tty);
  w.field("OpenStdin", request.open_stdin);
  w.field("AttachStdin", false);
  w.field("AttachStdout", false);
  w.field("AttachStderr", false);
  write_host_config(w, request.host);
  w.end_object();

  std::string target = versioned("/containers/create");
  if (!request.name.empty()) target += "?name=" + url_encode(request.name);
  http_.send(make_json_request(http_method::post, std::move(target), w.take()),
             parse_reply<container_create_response>(
                 "POST /containers/create", std::move(done), [](const http_response& r) {
                   simdjson::ondemand::parser parser;
                   auto padded = pad(r.body);
                   simdjson::ondemand::document doc = parser.iterate(padded);
                   simdjson::ondemand::object obj = doc.get_object();
                   container_create_response out;
                   out.id = get_string(obj, "Id");
                   out.warnings = get_string_list(obj, "Warnings");
                   if (out.id.empty()) throw std::runtime_error("no Id");
                   return out;
                 }));
}

void client::container_start(const std::string& id, callback<change_outcome> done) {
  http_.send(make_request(http_method::post, versioned(container_path(id, "/start"))),
             change_reply(std::move(done)));
}

void client::container_stop(const std::string& id, std::chrono::seconds grace,
                            callback<change_outcome> done) {
  auto r = make_request(http_method::post,
                        versioned(container_path(id, "/stop?t=" + std::to_string(grace.count()))));
  // The engine answers only after the grace period and the kill: allow for both.
  r.timeout = http_.options().default_timeout + grace;
  http_.send(std::move(r), change_reply(std::move(done)));
}

void client::container_kill(const std::string& id, const std::string& signal, callback<void> done) {
  std::string tail = "/kill";
  if (!signal.empty()) tail += "?signal=" + url_encode(signal);
  http_.send(make_request(http_method::post, versioned(container_path(id, tail))),
             ignore_body(std::move(done)));
}

unix_http_client::request_id client::container_wait(const std::string& id, wait_condition condition,
                                                    std::chrono::milliseconds timeout,
                                                    callback<container_wait_response> done) {
  const char* name = condition == wait_condition::next_exit ? "next-exit"
                     : condition == wait_condition::removed ? "removed"
                                                            : "not-running";
  auto r = make_request(http_method::post,
                        versioned(container_path(id, std::string("/wait?condition=") + name)));
  r.timeout = timeout;
  r.long_lived = true;  // until the container reaches the condition
  return http_.send(std::move(r), parse_reply<container_wait_response>(
                                      "POST /containers/{id}/wait", std::move(done),
                                      [](const http_response& resp) {
                                        simdjson::ondemand::parser parser;
                                        auto padded = pad(resp.body);
                                        simdjson::ondemand::document doc = parser.iterate(padded);
                                        simdjson::ondemand::object obj = doc.get_object();
                                        container_wait_response out;
                                        out.status_code = get_int(obj, "StatusCode");
                                        simdjson::ondemand::object err;
                                        if (get_object(obj, "Error", err)) {
                                          out.error = get_string(err, "Message");
                                        }
                                        return out;
                                      }));
}

void client::container_inspect(const std::string& id, callback<container_inspect_response> done) {
  http_.send(make_request(http_method::get, versioned(container_path(id, "/json"))),
             parse_reply<container_inspect_response>(
                 "GET /containers/{id}/json", std::move(done), [](const http_response& r) {
                   simdjson::ondemand::parser parser;
                   auto padded = pad(r.body);
                   simdjson::ondemand::document doc = parser.iterate(padded);
                   simdjson::ondemand::object obj = doc.get_object();
                   container_inspect_response out;
                   out.id = get_string(obj, "Id");
                   out.created = get_string(obj, "Created");
                   simdjson::ondemand::object sub;
                   if (get_object(obj, "State", sub)) {
                     out.state = read_state(sub);
                   }
                   out.image = get_string(obj, "Image");
                   out.name = get_string(obj, "Name");
                   out.mount_label = get_string(obj, "MountLabel");
                   if (get_object(obj, "HostConfig", sub)) {
                     out.host = read_host_config(sub);
                   }
                   if (get_object(obj, "Config", sub)) {
                     out.user = get_string(sub, "User");
                     out.env = get_string_list(sub, "Env");
                     out.cmd = get_string_list(sub, "Cmd");
                     out.config_image = get_string(sub, "Image");
                     out.working_dir = get_string(sub, "WorkingDir");
                     out.labels = get_string_map(sub, "Labels");
                   }
                   if (out.id.empty()) throw std::runtime_error("no Id");
                   return out;
                 }));
}

void client::container_list(const container_list_options& options,
                            callback<std::vector<container_summary>> done) {
  std::string target = versioned("/containers/json");
  target += options.all ? "?all=1" : "?all=0";
  if (!options.filters.empty()) target += "&filters=" + filters_param(options.filters);
  http_.send(make_request(http_method::get, std::move(target)),
             parse_reply<std::vector<container_summary>>(
                 "GET /containers/json", std::move(done), [](const http_response& r) {
                   simdjson::ondemand::parser parser;
                   auto padded = pad(r.body);
                   simdjson::ondemand::document doc = parser.iterate(padded);
                   std::vector<container_summary> out;
                   for (simdjson::ondemand::object item : doc.get_array()) {
                     container_summary c;
                     c.id = get_string(item, "Id");
                     c.names = get_string_list(item, "Names");
                     c.image = get_string(item, "Image");
                     c.created = get_int(item, "Created");
                     c.labels = get_string_map(item, "Labels");
                     c.state = get_string(item, "State");
                     c.status = get_string(item, "Status");
                     out.push_back(std::move(c));
                   }
                   return out;
                 }));
}

void client::container_rename(const std::string& id, const std::string& new_name,
                              callback<void> done) {
  http_.send(make_request(http_method::post,
                          versioned(container_path(id, "/rename?name=" + url_encode(new_name)))),
             ignore_body(std::move(done)));
}

void client::container_remove(const std::string& id, bool force, callback<void> done) {
  http_.send(make_request(http_method::delete_,
                          versioned(container_path(id, force ? "?force=1&v=1" : "?v=1"))),
             ignore_body(std::move(done)));
}

void client::container_logs(const std::string& id, const container_logs_options& options,
                            callback<exec_output> done) {
  std::string tail = "/logs?follow=0";
  tail += options.stdout_stream ? "&stdout=1" : "&stdout=0";
  tail += options.stderr_stream ? "&stderr=1" : "&stderr=0";
  if (options.timestamps) tail += "&timestamps=1";
  tail += "&tail=" + url_encode(options.tail);

  auto output = std::make_shared<exec_output>();
  output->stdout_data.cap = options.max_stdout;
  output->stderr_data.cap = options.max_stderr;
  auto demux = std::make_shared<stream_demuxer>([output](stream_kind kind, std::string_view bytes) {
    if (kind == stream_kind::stderr_stream)
      output->stderr_data.append(bytes);
    else
      output->stdout_data.append(bytes);
  });
  http_.stream(
      make_request(http_method::get, versioned(container_path(id, tail))),
      [demux](std::string_view chunk) { return demux->feed(chunk); },
      [demux, output, done = std::move(done)](result<http_response_head> head) {
        if (!head) return done(std::move(head).err());
        if (auto err = demux->finish()) return done(std::move(*err));
        done(std::move(*output));
      });
}

void client::container_pause(const std::string& id, callback<void> done) {
  http_.send(make_request(http_method::post, versioned(container_path(id, "/pause"))),
             ignore_body(std::move(done)));
}

void client::container_unpause(const std::string& id, callback<void> done) {
  http_.send(make_request(http_method::post, versioned(container_path(id, "/unpause"))),
             ignore_body(std::move(done)));
}

void client::container_stats(const std::string& id, callback<docker::container_stats> done) {
  http_.send(
      make_request(http_method::get, versioned(container_path(id, "/stats?stream=0&one-shot=1"))),
      parse_reply<docker::container_stats>(
          "GET /containers/{id}/stats", std::move(done), [](const http_response& r) {
            simdjson::ondemand::parser parser;
            auto padded = pad(r.body);
            simdjson::ondemand::document doc = parser.iterate(padded);
            simdjson::ondemand::object obj = doc.get_object();
            docker::container_stats out;
            simdjson::ondemand::object sub;
            if (get_object(obj, "pids_stats", sub)) {
              out.pids_current = get_int(sub, "current");
            }
            if (get_object(obj, "cpu_stats", sub)) {
              out.system_cpu_usage = get_int(sub, "system_cpu_usage");
              out.online_cpus = get_int(sub, "online_cpus");
              simdjson::ondemand::object usage;
              if (get_object(sub, "cpu_usage", usage)) {
                out.cpu_total_usage = get_int(usage, "total_usage");
              }
            }
            if (get_object(obj, "memory_stats", sub)) {
              out.memory_usage = get_int(sub, "usage");
              out.memory_limit = get_int(sub, "limit");
            }
            return out;
          }));
}

}  // namespace corral::docker
