// The fake engine's routing: a request's target becomes a route (its endpoint class, the
// decoded path segments after the version prefix, the query), and handle() sends it to its
// endpoint. The endpoint class is what faults, latencies and statistics are keyed by
// (fake_engine::endpoint_classes()).
#include <cctype>
#include <string_view>

#include "app/fake_engine/engine.hpp"

namespace corral::app {

using namespace fake;

namespace fake {

route make_route(const http::request<http::string_body>& req) {
  route r;
  r.method = req.method();
  std::string_view target(req.target().data(), req.target().size());
  auto q = target.find('?');
  std::string_view path = target.substr(0, q);
  if (q != std::string_view::npos) r.query = parse_query(target.substr(q + 1));
  // "/v1.41/..." for any version.
  if (path.size() > 2 && path[0] == '/' && path[1] == 'v') {
    std::size_t i = 2;
    bool digits = false, dot = false;
    while (i < path.size() &&
           (std::isdigit(static_cast<unsigned char>(path[i])) || path[i] == '.')) {
      if (path[i] == '.')
        dot = true;
      else
        digits = true;
      ++i;
    }
    if (digits && dot && (i == path.size() || path[i] == '/')) path.remove_prefix(i);
  }
  r.raw_path = std::string(path);
  std::string_view rest = path;
  while (!rest.empty()) {
    if (rest.front() == '/') {
      rest.remove_prefix(1);
      continue;
    }
    auto slash = rest.find('/');
    r.parts.push_back(url_decode(rest.substr(0, slash), plus_sign::literal));
    rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  }
  const auto& p = r.parts;
  const auto m = r.method;
  const bool get = m == http::verb::get || m == http::verb::head;
  const bool post = m == http::verb::post;
  if (p.size() == 1 && p[0] == "_ping" && get)
    r.cls = "ping";
  else if (p.size() == 1 && p[0] == "version" && get)
    r.cls = "version";
  else if (p.size() == 1 && p[0] == "info" && get)
    r.cls = "info";
  else if (p.size() == 1 && p[0] == "events" && get)
    r.cls = "events";
  else if (!p.empty() && p[0] == "images")
    r.cls = "image";
  else if (p.size() == 2 && p[0] == "containers" && p[1] == "create" && post)
    r.cls = "create";
  else if (p.size() == 2 && p[0] == "containers" && p[1] == "json" && get)
    r.cls = "list";
  else if (p.size() == 2 && p[0] == "containers" && m == http::verb::delete_)
    r.cls = "remove";
  else if (p.size() == 3 && p[0] == "containers") {
    const auto& a = p[2];
    if (a == "json" && get)
      r.cls = "inspect";
    else if (a == "exec" && post)
      r.cls = "exec_create";
    else if (a == "logs" && get)
      r.cls = "logs";
    else if (a == "stats" && get)
      r.cls = "stats";
    else if (a == "archive")
      r.cls = "archive";
    else if (post && (a == "start" || a == "stop" || a == "kill" || a == "wait" || a == "pause" ||
                      a == "unpause" || a == "rename"))
      r.cls = a;
  } else if (p.size() == 3 && p[0] == "exec") {
    if (p[2] == "start" && post)
      r.cls = "exec_start";
    else if ((p[2] == "json" && get) || (p[2] == "resize" && post))
      r.cls = "exec_inspect";  // a resize costs the engine what an inspect does
  }
  return r;
}

}  // namespace fake

void fake_engine::impl::handle(const std::shared_ptr<session>& s, const route& r) {
  const auto& p = r.parts;
  const auto& cls = r.cls;
  if (cls == "ping") return ping(s, r);
  if (cls == "version") return version(s);
  if (cls == "info") return info(s);
  if (cls == "events") return events(s, r);
  if (cls == "image") return image(s, r);
  if (cls == "create") return create(s, r);
  if (cls == "list") return list(s, r);
  if (cls == "exec_start") return exec_start(s, p[1]);
  if (cls == "exec_inspect") {
    if (p[2] == "resize") return s->reply(http::status::created, "");
    return exec_inspect(s, p[1]);
  }
  if (cls == "unknown") return s->reply_error(http::status::not_found, "page not found");
  // Everything else names a container.
  container_rec* c = find_container(p[1]);
  if (!c) return s->reply_error(http::status::not_found, "No such container: " + p[1]);
  if (cls == "remove") return remove_container(s, c->id, r);
  if (cls == "inspect") return inspect(s, *c);
  if (cls == "start") return start_container(s, *c);
  if (cls == "stop") return stop_container(s, *c, r);
  if (cls == "kill") return kill_container(s, *c, r);
  if (cls == "wait") return wait(s, *c, r);
  if (cls == "exec_create") return exec_create(s, *c);
  if (cls == "logs") return logs(s, *c);
  if (cls == "pause" || cls == "unpause") return pause_container(s, *c, r);
  if (cls == "rename") return rename_container(s, *c, r);
  if (cls == "stats") return stats(s, *c);
  if (cls == "archive") return archive(s, *c, r);
  s->reply_error(http::status::not_found, "page not found");
}

}  // namespace corral::app
