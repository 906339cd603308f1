// The one place docker/ includes Asio and Beast.
#pragma once

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>; under
// C++20 with g++ 12 that fails unless <utility> comes first.
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
