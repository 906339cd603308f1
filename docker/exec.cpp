// Exec area: create, attached start with a demultiplexed and capped stream, inspect.
#include <simdjson.h>

#include <memory>

#include "docker/client.hpp"
#include "docker/json.hpp"
#include "docker/json_read.hpp"
#include "docker/request_util.hpp"

namespace corral::docker {

using namespace detail;

void client::exec_create(const std::string& container_id, const exec_create_request& request,
                         callback<exec_create_response> done) {
  if (request.cmd.empty()) {
    return done(error{errc::invalid_request, "exec create: empty command", 0});
  }
  json_writer w;
  w.begin_object();
  w.field("AttachStdin", request.attach_stdin);
  w.field("AttachStdout", request.attach_stdout);
  w.field("AttachStderr", request.attach_stderr);
  w.field("Tty", request.tty);
  w.key("Cmd").begin_array();
  for (const auto& arg : request.cmd) w.value(arg);
  w.end_array();
  if (!request.env.empty()) {
    w.key("Env").begin_array();
    for (const auto& e : request.env) w.value(e);
    w.end_array();
  }
  if (!request.user.empty()) w.field("User", request.user);
  if (!request.working_dir.empty()) w.field("WorkingDir", request.working_dir);
  w.end_object();
  http_.send(
      make_json_request(http_method::post,
                        versioned("/containers/" + url_encode(container_id) + "/exec"), w.take()),
      parse_reply<exec_create_response>("POST /containers/{id}/exec", std::move(done),
                                        [](const http_response& r) {
                                          simdjson::ondemand::parser parser;
                                          auto padded = pad(r.body);
                                          simdjson::ondemand::document doc = parser.iterate(padded);
                                          simdjson::ondemand::object obj = doc.get_object();
                                          exec_create_response out;
                                          out.id = get_string(obj, "Id");
                                          if (out.id.empty()) throw std::runtime_error("no Id");
                                          return out;
                                        }));
}

unix_http_client::request_id client::exec_start(const std::string& exec_id,
                                                exec_start_options options,
                                                callback<exec_output> done) {
  auto r =
      make_json_request(http_method::post, versioned("/exec/" + url_encode(exec_id) + "/start"),
                        R"({"Detach":false,"Tty":false})");
  r.upgrade = true;
  r.long_lived = true;  // as long as the process runs
  r.timeout = options.timeout;
  if (options.stdin_data) r.upload = std::move(options.stdin_data);

  auto output = std::make_shared<exec_output>();
  output->stdout_data.cap = options.max_stdout;
  output->stderr_data.cap = options.max_stderr;
  auto demux = std::make_shared<stream_demuxer>(
      [output, live = std::move(options.on_output)](stream_kind kind, std::string_view bytes) {
        if (live) live(kind, bytes);
        if (kind == stream_kind::stderr_stream || kind == stream_kind::system_error) {
          output->stderr_data.append(bytes);
        } else {
          output->stdout_data.append(bytes);
        }
      });
  return http_.stream(
      std::move(r), [demux](std::string_view chunk) { return demux->feed(chunk); },
      [demux, output, done = std::move(done)](result<http_response_head> head) {
        if (!head) return done(std::move(head).err());
        if (auto err = demux->finish()) return done(std::move(*err));
        done(std::move(*output));
      });
}

void client::exec_inspect(const std::string& exec_id, callback<exec_inspect_response> done) {
  http_.send(make_request(http_method::get, versioned("/exec/" + url_encode(exec_id) + "/json")),
             parse_reply<exec_inspect_response>(
                 "GET /exec/{id}/json", std::move(done), [](const http_response& r) {
                   simdjson::ondemand::parser parser;
                   auto padded = pad(r.body);
                   simdjson::ondemand::document doc = parser.iterate(padded);
                   simdjson::ondemand::object obj = doc.get_object();
                   exec_inspect_response out;
                   out.id = get_string(obj, "ID");
                   out.running = get_bool(obj, "Running");
                   int64_t code = 0;
                   if (obj["ExitCode"].get_int64().get(code) == simdjson::SUCCESS)
                     out.exit_code = code;
                   out.pid = get_int(obj, "Pid");
                   out.container_id = get_string(obj, "ContainerID");
                   return out;
                 }));
}

}  // namespace corral::docker
