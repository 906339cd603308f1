// The fake engine's /events: each subscriber is a chunked stream that stays open, with its
// filters (type, event, label, container, image); emit() writes one JSON line per state change
// to every subscriber it matches, unless fault injection drops it (drop_event_rate).
#include <algorithm>

#include "app/fake_engine/engine.hpp"
#include "app/fake_engine/json_fields.hpp"

namespace corral::app {

using namespace fake;
using docker::json_writer;

void fake_engine::impl::events(const std::shared_ptr<session>& s, const route& r) {
  std::map<std::string, std::vector<std::string>> filters;
  if (auto it = r.query.find("filters"); it != r.query.end()) {
    auto parsed = parse_filters(json, it->second);
    if (!parsed) return s->reply_error(http::status::bad_request, "invalid filter: " + it->second);
    filters = std::move(*parsed);
  }
  if (s->reset_instead_of_reply) return s->reset();
  s->send_raw(
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: "
      "chunked\r\nApi-Version: 1.41\r\n"
      "Docker-Experimental: false\r\nOstype: linux\r\nServer: Docker/20.10.24-fake "
      "(linux)\r\n\r\n");
  subscribers.push_back(subscriber{s, std::move(filters)});
  st.event_subscribers = subscribers.size();
  const uint64_t id = s->id();
  s->read_stream({}, [this, id](bool) {
    subscribers.erase(std::remove_if(subscribers.begin(), subscribers.end(),
                                     [id](const subscriber& x) { return x.s->id() == id; }),
                      subscribers.end());
    st.event_subscribers = subscribers.size();
  });
}

void fake_engine::impl::emit(const container_rec& c, const std::string& action,
                             const std::map<std::string, std::string>& extra) {
  if (stopping) return;
  if (roll(opt.drop_event_rate)) {
    ++st.dropped_events;
    return;
  }
  ++st.events_emitted;
  if (subscribers.empty()) return;
  std::map<std::string, std::string> attributes = c.labels;
  attributes["image"] = c.image;
  attributes["name"] = c.name;
  for (auto& [k, v] : extra) attributes[k] = v;
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const int64_t nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(now).count();
  std::string line;
  bool built = false;
  for (auto it = subscribers.begin(); it != subscribers.end();) {
    if (it->s->closed()) {
      it = subscribers.erase(it);
      continue;
    }
    bool match = true;
    for (const auto& [k, values] : it->filters) {
      if (values.empty()) continue;
      if (k == "type")
        match = std::find(values.begin(), values.end(), "container") != values.end();
      else if (k == "event")
        match = std::find(values.begin(), values.end(), action) != values.end();
      else if (k == "label") {
        match = std::all_of(values.begin(), values.end(),
                            [&](const std::string& f) { return label_matches(c.labels, f); });
      } else if (k == "container") {
        match = std::any_of(values.begin(), values.end(), [&](const std::string& v) {
          return v == c.name || (!v.empty() && c.id.rfind(v, 0) == 0);
        });
      } else if (k == "image") {
        match = std::find(values.begin(), values.end(), c.image) != values.end();
      }
      if (!match) break;
    }
    if (match) {
      if (!built) {
        json_writer w;
        w.begin_object();
        w.field("status", action)
            .field("id", c.id)
            .field("from", c.image)
            .field("Type", "container");
        w.field("Action", action);
        w.key("Actor").begin_object().field("ID", c.id);
        write_map(w, "Attributes", attributes);
        w.end_object();
        w.field("scope", "local").field("time", nanos / 1'000'000'000).field("timeNano", nanos);
        w.end_object();
        std::string json_line = w.take() + "\n";
        line = to_hex(json_line.size()) + "\r\n" + json_line + "\r\n";
        built = true;
      }
      it->s->send_raw(line);
    }
    ++it;
  }
  st.event_subscribers = subscribers.size();
}

}  // namespace corral::app
