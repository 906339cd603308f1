// Waits for one asynchronous call: for command-line programs, benchmarks and tests only.
// Never use it on an actor's thread, where it would stall a CAF worker.
#pragma once

#include <future>
#include <utility>

#include "docker/error.hpp"

namespace corral::docker {

// blocking<T>([&](auto done) { client.container_inspect(id, done); })
template <class T, class Start>
result<T> blocking(Start&& start) {
  auto promise = std::make_shared<std::promise<result<T>>>();
  auto future = promise->get_future();
  start([promise](result<T> r) { promise->set_value(std::move(r)); });
  return future.get();
}

}  // namespace corral::docker
