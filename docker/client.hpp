// The Docker Engine API client: one function per endpoint, grouped by area (system, images,
// containers, exec, events, archive) and defined in one source file per area.
//
// Every call returns at once; its callback runs later on the client's I/O thread, exactly
// once. Callers that are actors only post a message from it.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "docker/containers.hpp"
#include "docker/error.hpp"
#include "docker/events.hpp"
#include "docker/exec.hpp"
#include "docker/http_client.hpp"
#include "docker/images.hpp"
#include "docker/json_lines.hpp"
#include "docker/system.hpp"

namespace corral::docker {

template <class T>
using callback = std::function<void(result<T>)>;

// The oldest and newest Engine API versions this client speaks.
inline constexpr std::string_view min_api_version = "1.41";
inline constexpr std::string_view max_api_version = "1.43";

struct client_options {
  // http.socket_path: see resolve_engine_socket(). exec_start, events, container_wait and
  // image_pull are long-lived: they draw on http.max_stream_connections, and every other
  // call keeps the rest of http.max_connections to itself.
  http_client_options http;
};

// Where the engine listens: DOCKER_HOST (unix:// only), then /var/run/docker.sock, then
// ~/.docker/run/docker.sock. Arguments are the environment's values (null when unset).
result<std::string> resolve_engine_socket(const char* docker_host, const char* home);
result<std::string> resolve_engine_socket();  // from the process environment

class client {
 public:
  explicit client(client_options options);
  ~client();

  client(const client&) = delete;
  client& operator=(const client&) = delete;

  // -- version negotiation ------------------------------------------------------------
  // Pings the engine and reads /version; fails with api_too_old below 1.41. Afterwards
  // every call uses min(engine's API version, max_api_version). Before it, calls use 1.41.
  void negotiate(callback<version_response> done);
  std::string api_version() const;

  // -- system -------------------------------------------------------------------------
  void ping(callback<ping_response> done);
  void version(callback<version_response> done);
  void info(callback<system_info> done);

  // -- images -------------------------------------------------------------------------
  void image_inspect(const std::string& name, callback<image_inspect_response> done);
  void image_list(const image_list_options& options, callback<std::vector<image_summary>> done);
  void image_remove(const std::string& name, bool force,
                    callback<std::vector<image_delete_item>> done);
  // Progress lines as they come; an error line in the stream fails the pull.
  unix_http_client::request_id image_pull(const std::string& from_image, const std::string& tag,
                                          std::function<void(const pull_progress&)> on_progress,
                                          callback<void> done);

  // -- containers ---------------------------------------------------------------------
  void container_create(const container_create_request& request,
                        callback<container_create_response> done);
  void container_start(const std::string& id, callback<change_outcome> done);
  void container_stop(const std::string& id, std::chrono::seconds grace,
                      callback<change_outcome> done);
  void container_kill(const std::string& id, const std::string& signal, callback<void> done);
  unix_http_client::request_id container_wait(const std::string& id, wait_condition condition,
                                              std::chrono::milliseconds timeout,
                                              callback<container_wait_response> done);
  void container_inspect(const std::string& id, callback<container_inspect_response> done);
  void container_list(const container_list_options& options,
                      callback<std::vector<container_summary>> done);
  void container_rename(const std::string& id, const std::string& new_name, callback<void> done);
  void container_remove(const std::string& id, bool force, callback<void> done);
  void container_logs(const std::string& id, const container_logs_options& options,
                      callback<exec_output> done);
  void container_pause(const std::string& id, callback<void> done);
  void container_unpause(const std::string& id, callback<void> done);
  void container_stats(const std::string& id, callback<docker::container_stats> done);

  // -- exec ---------------------------------------------------------------------------
  void exec_create(const std::string& container_id, const exec_create_request& request,
                   callback<exec_create_response> done);
  // Attached start: demultiplexes stdout and stderr until the process ends. Cancel it with
  // the returned id (this ends our side only: the process is the caller's to kill).
  unix_http_client::request_id exec_start(const std::string& exec_id, exec_start_options options,
                                          callback<exec_output> done);
  void exec_inspect(const std::string& exec_id, callback<exec_inspect_response> done);

  // -- archive ------------------------------------------------------------------------
  void put_archive(const std::string& container_id, const std::string& path, std::string tar,
                   callback<void> done);
  void get_archive(const std::string& container_id, const std::string& path, std::size_t max_bytes,
                   callback<std::string> done);

  // -- events -------------------------------------------------------------------------
  // Delivers events one by one until cancelled (then done gets errc::cancelled) or the
  // stream breaks.
  unix_http_client::request_id events(const events_options& options,
                                      std::function<void(const event_message&)> on_event,
                                      callback<void> done);

  void cancel(unix_http_client::request_id id) { http_.cancel(id); }
  void shutdown() { http_.shutdown(); }
  unix_http_client& http() noexcept { return http_; }

  // Builds "/v1.41" + path; public for the tests that check request shapes.
  std::string versioned(std::string_view path) const;

 private:
  unix_http_client http_;
  mutable std::mutex version_mutex_;
  std::string api_version_{min_api_version};
};

}  // namespace corral::docker
