#include "docker/request_util.hpp"

#include "docker/json.hpp"

namespace corral::docker::detail {

std::string url_encode(std::string_view text) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size() * 3);
  for (unsigned char c : text) {
    const bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                            (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == '~';
    if (unreserved) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 0xF]);
    }
  }
  return out;
}

std::string filters_param(const std::map<std::string, std::vector<std::string>>& filters) {
  json_writer w;
  w.begin_object();
  for (const auto& [name, values] : filters) {
    w.key(name).begin_array();
    for (const auto& v : values) w.value(v);
    w.end_array();
  }
  w.end_object();
  return url_encode(w.str());
}

http_request make_request(http_method method, std::string target) {
  http_request r;
  r.method = method;
  r.target = std::move(target);
  return r;
}

http_request make_json_request(http_method method, std::string target, std::string json) {
  http_request r = make_request(method, std::move(target));
  r.body = std::move(json);
  r.content_type = "application/json";
  return r;
}

response_completion ignore_body(std::function<void(result<void>)> done) {
  return [done = std::move(done)](result<http_response> reply) {
    if (!reply) return done(std::move(reply).err());
    done(result<void>{});
  };
}

error malformed(std::string_view what, std::string_view why) {
  std::string message = "malformed reply from the engine to ";
  message.append(what);
  if (!why.empty()) message.append(": ").append(why);
  return error{errc::protocol, std::move(message), 0};
}

}  // namespace corral::docker::detail
