// Internal to docker/: building request targets and turning HTTP replies into typed results.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "docker/error.hpp"
#include "docker/http_client.hpp"

namespace corral::docker::detail {

std::string url_encode(std::string_view text);

// Engine-side filters as the API wants them: a URL-encoded JSON object of string arrays.
std::string filters_param(const std::map<std::string, std::vector<std::string>>& filters);

http_request make_request(http_method method, std::string target);
http_request make_json_request(http_method method, std::string target, std::string json);

// Wraps a parser of the response body into a completion. A parser that throws (simdjson's
// errors) yields errc::protocol naming `what`.
template <class T>
response_completion parse_reply(std::string what, std::function<void(result<T>)> done,
                                std::function<T(const http_response&)> parse);

// For endpoints whose success carries nothing worth reading.
response_completion ignore_body(std::function<void(result<void>)> done);

error malformed(std::string_view what, std::string_view why);

}  // namespace corral::docker::detail

#include "docker/request_util_impl.hpp"
