// OpenSSL's error queue as one line of text, for the error messages of the three places that
// use OpenSSL: the node's TLS (app/tls_listener.cpp, app/tls_material.cpp) and the egress
// proxy's CA (actors/egress_ca.cpp). Free of OpenSSL's headers.
#pragma once

#include <string>

namespace corral::actors {

// Every error queued on this thread, oldest first, joined by "; " (the queue is emptied);
// "unknown OpenSSL error" when there is none.
std::string openssl_errors();

}  // namespace corral::actors
