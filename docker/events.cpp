// Events area: the long-lived /events stream, one callback per event.
#include <memory>

#include "docker/client.hpp"
#include "docker/request_util.hpp"

namespace corral::docker {

using namespace detail;

unix_http_client::request_id client::events(const events_options& options,
                                            std::function<void(const event_message&)> on_event,
                                            callback<void> done) {
  std::string target = versioned("/events");
  char sep = '?';
  if (!options.filters.empty()) {
    target += sep;
    target += "filters=" + filters_param(options.filters);
    sep = '&';
  }
  if (!options.since.empty()) {
    target += sep;
    target += "since=" + url_encode(options.since);
  }
  auto r = make_request(http_method::get, std::move(target));
  // The stream lives until cancelled; its deadline is the far future, not the default.
  r.timeout = std::chrono::hours(24 * 365);
  r.long_lived = true;

  auto lines = std::make_shared<json_lines_splitter>(
      [on_event = std::move(on_event)](std::string_view line) {
        if (auto event = parse_event(line)) on_event(*event);
      });
  return http_.stream(
      std::move(r), [lines](std::string_view chunk) { return lines->feed(chunk); },
      [lines, done = std::move(done)](result<http_response_head> head) {
        if (!head) return done(std::move(head).err());
        if (auto err = lines->finish()) return done(std::move(*err));
        done(error{errc::engine_unavailable, "the engine ended the events stream", 0});
      });
}

}  // namespace corral::docker
