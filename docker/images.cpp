// Images area: inspect, list, remove, and pull with streamed JSON-lines progress.
#include <simdjson.h>

#include <memory>

#include "docker/client.hpp"
#include "docker/json_read.hpp"
#include "docker/request_util.hpp"

namespace corral::docker {

using namespace detail;

void client::image_inspect(const std::string& name, callback<image_inspect_response> done) {
  http_.send(make_request(http_method::get, versioned("/images/" + url_encode(name) + "/json")),
             parse_reply<image_inspect_response>(
                 "GET /images/{name}/json", std::move(done), [](const http_response& r) {
                   simdjson::ondemand::parser parser;
                   auto padded = pad(r.body);
                   simdjson::ondemand::document doc = parser.iterate(padded);
                   simdjson::ondemand::object obj = doc.get_object();
                   image_inspect_response out;
                   out.id = get_string(obj, "Id");
                   out.repo_tags = get_string_list(obj, "RepoTags");
                   out.created = get_string(obj, "Created");
                   simdjson::ondemand::object config;
                   if (get_object(obj, "Config", config)) {
                     out.user = get_string(config, "User");
                     out.env = get_string_list(config, "Env");
                     out.labels = get_string_map(config, "Labels");
                   }
                   out.size = get_int(obj, "Size");
                   if (out.id.empty()) throw std::runtime_error("no Id");
                   return out;
                 }));
}

void client::image_list(const image_list_options& options,
                        callback<std::vector<image_summary>> done) {
  std::string target = versioned("/images/json");
  target += options.all ? "?all=1" : "?all=0";
  if (!options.filters.empty()) target += "&filters=" + filters_param(options.filters);
  http_.send(make_request(http_method::get, std::move(target)),
             parse_reply<std::vector<image_summary>>(
                 "GET /images/json", std::move(done), [](const http_response& r) {
                   simdjson::ondemand::parser parser;
                   auto padded = pad(r.body);
                   simdjson::ondemand::document doc = parser.iterate(padded);
                   std::vector<image_summary> out;
                   for (simdjson::ondemand::object item : doc.get_array()) {
                     image_summary i;
                     i.id = get_string(item, "Id");
                     i.repo_tags = get_string_list(item, "RepoTags");
                     i.created = get_int(item, "Created");
                     i.size = get_int(item, "Size");
                     i.labels = get_string_map(item, "Labels");
                     out.push_back(std::move(i));
                   }
                   return out;
                 }));
}

void client::image_remove(const std::string& name, bool force,
                          callback<std::vector<image_delete_item>> done) {
  http_.send(make_request(http_method::delete_, versioned("/images/" + url_encode(name) +
                                                          (force ? "?force=1" : "?force=0"))),
             parse_reply<std::vector<image_delete_item>>(
                 "DELETE /images/{name}", std::move(done), [](const http_response& r) {
                   simdjson::ondemand::parser parser;
                   auto padded = pad(r.body);
                   simdjson::ondemand::document doc = parser.iterate(padded);
                   std::vector<image_delete_item> out;
                   for (simdjson::ondemand::object item : doc.get_array()) {
                     image_delete_item d;
                     d.untagged = get_string(item, "Untagged");
                     d.deleted = get_string(item, "Deleted");
                     out.push_back(std::move(d));
                   }
                   return out;
                 }));
}

unix_http_client::request_id client::image_pull(
    const std::string& from_image, const std::string& tag,
    std::function<void(const pull_progress&)> on_progress, callback<void> done) {
  std::string target = versioned("/images/create?fromImage=" + url_encode(from_image));
  if (!tag.empty()) target += "&tag=" + url_encode(tag);
  auto r = make_request(http_method::post, std::move(target));
  // Pulls are slow by nature; give them a generous deadline of their own.
  r.timeout = std::chrono::minutes(30);
  r.long_lived = true;

  // The engine reports a failed pull as a line in a 200 stream: remember the first one.
  auto failure = std::make_shared<std::string>();
  auto lines = std::make_shared<json_lines_splitter>(
      [failure, on_progress = std::move(on_progress)](std::string_view line) {
        auto progress = parse_pull_progress(line);
        if (!progress) return;
        if (!progress->error_message.empty() && failure->empty())
          *failure = progress->error_message;
        if (on_progress) on_progress(*progress);
      });
  return http_.stream(
      std::move(r), [lines](std::string_view chunk) { return lines->feed(chunk); },
      [lines, failure, from_image, done = std::move(done)](result<http_response_head> head) {
        if (!head) return done(std::move(head).err());
        if (auto err = lines->finish()) return done(std::move(*err));
        if (!failure->empty()) {
          errc code = failure->find("not found") != std::string::npos ? errc::not_found
                                                                      : errc::engine_error;
          return done(error{code, "pulling " + from_image + ": " + *failure, 200});
        }
        done(result<void>{});
      });
}

}  // namespace corral::docker
