// Fuzzes every endpoint's reader of the engine's replies (docker/containers, images, exec,
// system, events, archive): the input is the body of a response, served over a unix socket to
// the same docker::client the runtime uses, so the bytes pass through the HTTP client, then
// the endpoint's JSON reader (docker/json_read.hpp), the stream demultiplexer (logs, exec
// start) or the JSON-lines splitter (events, image pull).
//
// Input: one byte choosing the endpoint, one choosing the status (mostly 200, else an error
// status whose body goes through error_from_response), then the body.
// Properties: exactly one completion, in time; capped outputs stay within their caps;
// nothing crashes or leaks.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <type_traits>

#include "docker/client.hpp"
#include "fuzz_common.hpp"
#include "scripted_peer.hpp"

namespace docker = corral::docker;
using corral::fuzz::input;

namespace {

constexpr std::size_t cap = 1000;  // the output caps asked of logs, exec start, archive

struct harness {
  corral::fuzz::scripted_peer peer;
  docker::client client{[this] {
    docker::client_options o;
    o.http.socket_path = peer.path();
    o.http.max_idle = 0;
    o.http.default_timeout = std::chrono::seconds(3);
    o.http.max_buffered_body = 1 << 20;
    return o;
  }()};
};

// The callback every endpoint gets: counts calls and checks what is common to all results.
template <class T, class Check>
docker::callback<T> done(std::shared_ptr<std::atomic<int>> calls, std::promise<void>& finished,
                         Check check) {
  return [calls, &finished, check](docker::result<T> r) {
    if constexpr (!std::is_void_v<T>) {
      if (r) check(*r);
    } else {
      (void)check;
    }
    if (++*calls == 1) finished.set_value();
  };
}

void check_output(const docker::exec_output& out) {
  CORRAL_FUZZ_CHECK(out.stdout_data.data.size() <= cap && out.stderr_data.data.size() <= cap);
  CORRAL_FUZZ_CHECK(out.stdout_data.total >= out.stdout_data.data.size());
}

std::string response(int status, std::string_view body) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " Fuzz\r\n";
  out += status == 101
             ? "Connection: Upgrade\r\nUpgrade: tcp\r\n"
             : "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                   "\r\n";
  out += "Api-Version: 1.43\r\nOstype: linux\r\n\r\n";
  out.append(body);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  static harness* h = new harness;  // never destroyed: libFuzzer exits without unwinding
  static std::shared_ptr<std::atomic<int>> previous;
  if (previous) CORRAL_FUZZ_CHECK(*previous == 1);

  input in(data, size);
  const uint8_t endpoint = in.byte();
  const uint8_t status_choice = in.byte();
  static constexpr int statuses[] = {200, 200, 200, 200, 200, 201, 204, 304,
                                     400, 404, 409, 500, 101, 200, 200, 200};
  const int status = statuses[status_choice % 16];
  h->peer.set_reply(response(status, in.rest()));

  auto calls = std::make_shared<std::atomic<int>>(0);
  std::promise<void> finished;
  auto future = finished.get_future();
  auto& c = h->client;
  const std::string id = "c0ffee";
  auto any = [](const auto&) {};

  switch (endpoint % 19) {
    case 0:
      c.container_inspect(id, done<docker::container_inspect_response>(calls, finished, any));
      break;
    case 1:
      c.container_list({}, done<std::vector<docker::container_summary>>(calls, finished, any));
      break;
    case 2:
      c.container_wait(id, docker::wait_condition::not_running, std::chrono::seconds(3),
                       done<docker::container_wait_response>(calls, finished, any));
      break;
    case 3:
      c.container_stats(id, done<docker::container_stats>(calls, finished, any));
      break;
    case 4: {
      docker::container_logs_options o;
      o.max_stdout = o.max_stderr = cap;
      c.container_logs(id, o, done<docker::exec_output>(calls, finished, check_output));
      break;
    }
    case 5:
      c.container_create({}, done<docker::container_create_response>(calls, finished, any));
      break;
    case 6:
      c.container_start(id, done<docker::change_outcome>(calls, finished, any));
      break;
    case 7:
      c.exec_create(id, {}, done<docker::exec_create_response>(calls, finished, any));
      break;
    case 8: {
      docker::exec_start_options o;
      o.max_stdout = o.max_stderr = cap;
      if (endpoint & 0x20) o.stdin_data = "stdin";
      c.exec_start(id, std::move(o), done<docker::exec_output>(calls, finished, check_output));
      break;
    }
    case 9:
      c.exec_inspect(id, done<docker::exec_inspect_response>(calls, finished, any));
      break;
    case 10:
      c.image_inspect("img", done<docker::image_inspect_response>(calls, finished, any));
      break;
    case 11:
      c.image_list({}, done<std::vector<docker::image_summary>>(calls, finished, any));
      break;
    case 12:
      c.image_remove("img", false,
                     done<std::vector<docker::image_delete_item>>(calls, finished, any));
      break;
    case 13:
      c.image_pull(
          "img", "latest", [](const docker::pull_progress&) {}, done<void>(calls, finished, any));
      break;
    case 14:
      c.events(
          {}, [](const docker::event_message&) {}, done<void>(calls, finished, any));
      break;
    case 15:
      c.version(done<docker::version_response>(calls, finished, any));
      break;
    case 16:
      c.info(done<docker::system_info>(calls, finished, any));
      break;
    case 17:
      c.ping(done<docker::ping_response>(calls, finished, any));
      break;
    case 18:
      c.get_archive(id, "/workspace", cap,
                    done<std::string>(calls, finished, [](const std::string& tar) {
                      CORRAL_FUZZ_CHECK(tar.size() <= cap);
                    }));
      break;
  }
  CORRAL_FUZZ_CHECK(future.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  CORRAL_FUZZ_CHECK(*calls == 1);
  previous = calls;
  return 0;
}
