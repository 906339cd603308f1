// System area: /_ping, /version, /info, and API version negotiation.
#include <simdjson.h>

#include <cstdlib>
#include <filesystem>

#include "docker/client.hpp"
#include "docker/json_read.hpp"
#include "docker/request_util.hpp"

namespace corral::docker {

using namespace detail;

namespace {

// "1.41" -> 1041, so versions compare as numbers; garbage -> -1.
int version_number(std::string_view v) {
  const auto dot = v.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 >= v.size()) return -1;
  int major = 0, minor = 0;
  for (char c : v.substr(0, dot)) {
    if (c < '0' || c > '9') return -1;
    major = major * 10 + (c - '0');
  }
  for (char c : v.substr(dot + 1)) {
    if (c < '0' || c > '9') return -1;
    minor = minor * 10 + (c - '0');
  }
  return major * 1000 + minor;
}

}  // namespace

client::client(client_options options) : http_(std::move(options.http)) {}

client::~client() {
  http_.shutdown();
}

std::string client::api_version() const {
  std::lock_guard<std::mutex> guard(version_mutex_);
  return api_version_;
}

std::string client::versioned(std::string_view path) const {
  std::string out = "/v";
  out += api_version();
  out += path;
  return out;
}

void client::ping(callback<ping_response> done) {
  auto r = make_request(http_method::get, "/_ping");
  http_.send(std::move(r), [done = std::move(done)](result<http_response> reply) {
    if (!reply) return done(std::move(reply).err());
    ping_response out;
    const auto& headers = reply->head.headers;
    if (auto it = headers.find("api-version"); it != headers.end()) out.api_version = it->second;
    if (auto it = headers.find("ostype"); it != headers.end()) out.os_type = it->second;
    done(std::move(out));
  });
}

void client::version(callback<version_response> done) {
  // Unversioned on purpose: an engine of any age answers it.
  http_.send(
      make_request(http_method::get, "/version"),
      parse_reply<version_response>("GET /version", std::move(done), [](const http_response& r) {
        simdjson::ondemand::parser parser;
        auto padded = pad(r.body);
        simdjson::ondemand::document doc = parser.iterate(padded);
        simdjson::ondemand::object obj = doc.get_object();
        version_response v;
        v.version = get_string(obj, "Version");
        v.api_version = get_string(obj, "ApiVersion");
        v.min_api_version = get_string(obj, "MinAPIVersion");
        v.os = get_string(obj, "Os");
        v.arch = get_string(obj, "Arch");
        v.kernel_version = get_string(obj, "KernelVersion");
        if (v.api_version.empty()) throw std::runtime_error("no ApiVersion");
        return v;
      }));
}

void client::negotiate(callback<version_response> done) {
  version([this, done = std::move(done)](result<version_response> v) {
    if (!v) return done(std::move(v).err());
    const int engine = version_number(v->api_version);
    if (engine < 0) {
      return done(
          error{errc::protocol, "the engine reports API version '" + v->api_version + "'", 0});
    }
    if (engine < version_number(min_api_version)) {
      return done(error{errc::api_too_old,
                        "the engine speaks Engine API " + v->api_version + " (engine " +
                            v->version + "); corral needs " + std::string(min_api_version) +
                            " or newer",
                        0});
    }
    {
      std::lock_guard<std::mutex> guard(version_mutex_);
      api_version_ =
          engine > version_number(max_api_version) ? std::string(max_api_version) : v->api_version;
    }
    done(std::move(v));
  });
}

bool system_info::userns_remapped() const {
  for (const auto& option : security_options) {
    if (option == "name=userns" || option.rfind("name=userns,", 0) == 0) return true;
  }
  return false;
}

void client::info(callback<system_info> done) {
  http_.send(make_request(http_method::get, versioned("/info")),
             parse_reply<system_info>("GET /info", std::move(done), [](const http_response& r) {
               simdjson::ondemand::parser parser;
               auto padded = pad(r.body);
               simdjson::ondemand::document doc = parser.iterate(padded);
               simdjson::ondemand::object obj = doc.get_object();
               system_info i;
               i.id = get_string(obj, "ID");
               i.name = get_string(obj, "Name");
               i.server_version = get_string(obj, "ServerVersion");
               i.operating_system = get_string(obj, "OperatingSystem");
               i.cgroup_driver = get_string(obj, "CgroupDriver");
               i.cgroup_version = get_string(obj, "CgroupVersion");
               i.containers = get_int(obj, "Containers");
               i.containers_running = get_int(obj, "ContainersRunning");
               i.images = get_int(obj, "Images");
               i.ncpu = get_int(obj, "NCPU");
               i.mem_total = get_int(obj, "MemTotal");
               i.security_options = get_string_list(obj, "SecurityOptions");
               i.live_restore = get_bool(obj, "LiveRestoreEnabled");
               i.docker_root_dir = get_string(obj, "DockerRootDir");
               return i;
             }));
}

// -- endpoint resolution ------------------------------------------------------------------

result<std::string> resolve_engine_socket(const char* docker_host, const char* home) {
  namespace fs = std::filesystem;
  if (docker_host != nullptr && *docker_host != '\0') {
    std::string_view host(docker_host);
    constexpr std::string_view scheme = "unix://";
    if (host.substr(0, scheme.size()) != scheme || host.size() == scheme.size()) {
      return error{errc::invalid_request,
                   "DOCKER_HOST=" + std::string(host) +
                       " is not supported: corral reaches the engine over a unix socket only "
                       "(unix:///path/to/docker.sock)",
                   0};
    }
    return std::string(host.substr(scheme.size()));
  }
  std::error_code ec;
  const std::string system_socket = "/var/run/docker.sock";
  if (fs::exists(system_socket, ec)) return system_socket;
  std::string user_socket;
  if (home != nullptr && *home != '\0') {
    user_socket = std::string(home) + "/.docker/run/docker.sock";
    if (fs::exists(user_socket, ec)) return user_socket;
  }
  return error{errc::engine_unavailable,
               "no Docker engine socket: DOCKER_HOST is unset and neither " + system_socket +
                   (user_socket.empty() ? "" : " nor " + user_socket) +
                   " exists (is dockerd running?)",
               0};
}

result<std::string> resolve_engine_socket() {
  return resolve_engine_socket(std::getenv("DOCKER_HOST"), std::getenv("HOME"));
}

}  // namespace corral::docker
