// Archive area: upload a tar into a container, download a path as tar.
#include <memory>

#include "docker/client.hpp"
#include "docker/request_util.hpp"

namespace corral::docker {

using namespace detail;

void client::put_archive(const std::string& container_id, const std::string& path, std::string tar,
                         callback<void> done) {
  auto r = make_request(http_method::put, versioned("/containers/" + url_encode(container_id) +
                                                    "/archive?path=" + url_encode(path)));
  r.body = std::move(tar);
  r.content_type = "application/x-tar";
  http_.send(std::move(r), ignore_body(std::move(done)));
}

void client::get_archive(const std::string& container_id, const std::string& path,
                         std::size_t max_bytes, callback<std::string> done) {
  auto r = make_request(http_method::get, versioned("/containers/" + url_encode(container_id) +
                                                    "/archive?path=" + url_encode(path)));
  auto body = std::make_shared<std::string>();
  http_.stream(
      std::move(r),
      [body, max_bytes](std::string_view chunk) -> std::optional<error> {
        if (body->size() + chunk.size() > max_bytes) {
          return error{errc::too_large,
                       "archive over the " + std::to_string(max_bytes) + "-byte limit", 0};
        }
        body->append(chunk);
        return std::nullopt;
      },
      [body, done = std::move(done)](result<http_response_head> head) {
        if (!head) return done(std::move(head).err());
        done(std::move(*body));
      });
}

}  // namespace corral::docker
