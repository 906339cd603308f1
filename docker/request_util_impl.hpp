// Template definitions for request_util.hpp.
#pragma once

#include <exception>
#include <utility>

namespace corral::docker::detail {

template <class T>
response_completion parse_reply(std::string what, std::function<void(result<T>)> done,
                                std::function<T(const http_response&)> parse) {
  return [what = std::move(what), done = std::move(done),
          parse = std::move(parse)](result<http_response> reply) {
    if (!reply) return done(std::move(reply).err());
    std::optional<T> parsed;
    std::string why;
    try {
      parsed.emplace(parse(*reply));
    } catch (const std::exception& e) {
      why = e.what();
    }
    if (!parsed) return done(malformed(what, why));
    done(std::move(*parsed));
  };
}

}  // namespace corral::docker::detail
