// The fake engine's system endpoints: /_ping, /version, /info (what a client checks first),
// and /images (inspect, list, pull): an image exists when its name starts with one of
// fake_engine_options::image_prefixes.
#include "app/fake_engine/engine.hpp"
#include "app/fake_engine/json_fields.hpp"

namespace corral::app {

using namespace fake;
using docker::json_writer;

void fake_engine::impl::ping(const std::shared_ptr<session>& s, const route&) {
  s->reply(http::status::ok, "OK", "text/plain; charset=utf-8",
           {{"Cache-Control", "no-cache, no-store, must-revalidate"}, {"Pragma", "no-cache"}});
}

void fake_engine::impl::version(const std::shared_ptr<session>& s) {
  json_writer w;
  w.begin_object();
  w.key("Platform").begin_object().field("Name", "fake engine").end_object();
  w.field("Version", engine_version)
      .field("ApiVersion", api_version)
      .field("MinAPIVersion", "1.12");
  w.field("GitCommit", "fake")
      .field("GoVersion", "go1.19")
      .field("Os", "linux")
      .field("Arch", "amd64");
  w.field("KernelVersion", "fake").field("BuildTime", "2023-01-01T00:00:00.000000000+00:00");
  w.end_object();
  s->reply_json(http::status::ok, w.take());
}

void fake_engine::impl::info(const std::shared_ptr<session>& s) {
  uint64_t running_n = 0, paused = 0, stopped = 0;
  for (const auto& [id, c] : containers) {
    if (c->state == "running")
      ++running_n;
    else if (c->state == "paused")
      ++paused;
    else
      ++stopped;
  }
  json_writer w;
  w.begin_object();
  w.field("ID", "FAKE:ENGINE").field("Name", "fake-engine").field("ServerVersion", engine_version);
  w.field("Containers", static_cast<uint64_t>(containers.size()))
      .field("ContainersRunning", running_n);
  w.field("ContainersPaused", paused)
      .field("ContainersStopped", stopped)
      .field("Images", int64_t{1});
  w.field("OperatingSystem", "fake engine")
      .field("OSType", "linux")
      .field("Architecture", "x86_64");
  w.field("CgroupDriver", "cgroupfs").field("CgroupVersion", "1").field("NCPU", int64_t{2});
  w.field("MemTotal", int64_t{8LL << 30}).field("Driver", "fake");
  w.end_object();
  s->reply_json(http::status::ok, w.take());
}

void fake_engine::impl::image(const std::shared_ptr<session>& s, const route& r) {
  // /images/{name}/json, where the name may hold '/' (encoded or not).
  std::string_view path = r.raw_path;
  constexpr std::string_view prefix = "/images/";
  if (r.method == http::verb::get && path.size() > prefix.size() + 5 &&
      path.substr(0, prefix.size()) == prefix && path.substr(path.size() - 5) == "/json") {
    const std::string name =
        url_decode(path.substr(prefix.size(), path.size() - prefix.size() - 5), plus_sign::literal);
    if (!image_exists(name))
      return s->reply_error(http::status::not_found, "No such image: " + name);
    json_writer w;
    w.begin_object().field("Id", "sha256:" + std::string(64, 'f'));
    write_strings(w, "RepoTags", {name});
    w.field("Size", int64_t{1 << 20}).field("Os", "linux").field("Architecture", "amd64");
    w.end_object();
    return s->reply_json(http::status::ok, w.take());
  }
  if (r.method == http::verb::get && r.parts.size() == 2 && r.parts[1] == "json") {
    return s->reply_json(http::status::ok, "[]");
  }
  if (r.method == http::verb::post && r.parts.size() == 2 && r.parts[1] == "create") {
    auto from = r.query.count("fromImage") ? r.query.at("fromImage") : std::string();
    auto tag = r.query.count("tag") ? r.query.at("tag") : std::string();
    const std::string name = tag.empty() ? from : from + ":" + tag;
    if (!image_exists(name)) {
      return s->reply_error(http::status::not_found,
                            "pull access denied for " + from + ", repository does not exist");
    }
    json_writer w;
    w.begin_object().field("status", "Status: Image is up to date for " + name).end_object();
    return s->reply_json(http::status::ok, w.take());
  }
  s->reply_error(http::status::not_found, "page not found");
}

}  // namespace corral::app
