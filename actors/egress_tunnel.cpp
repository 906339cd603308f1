// The session after a CONNECT is answered (see the diagram in egress_session.cpp): the
// ClientHello read and its SNI checked against the CONNECT host, then either a plain tunnel
// (bytes spliced both ways) or, for a host with a credential, TLS terminated on both sides and
// HTTP exchanged in between. Apart from the head and the decision because it is the half of
// the session that moves bytes after the decision.
#include "actors/egress_session.hpp"

#include <algorithm>
#include <exception>

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "actors/egress_relay.hpp"

namespace corral::egress_detail {

// -- the ClientHello ------------------------------------------------------------------

void session::on_established(beast::error_code ec) {
  if (ec) return end_after(ec, "answering CONNECT");
  // The head's buffer may already hold the start of the ClientHello.
  const auto held = down_buffer_.data();
  const auto* p = static_cast<const unsigned char*>(held.data());
  hello_.assign(p, p + held.size());
  down_buffer_.consume(held.size());
  check_hello();
}

void session::check_hello() {
  const auto hello = parse_client_hello(hello_);
  using st = client_hello::status;
  if (hello.state == st::incomplete && hello_.size() < hello_limit) return read_hello();
  if (hello.state != st::complete) return deny_in_tunnel("the tunnel does not start with TLS");
  if (hello.sni.empty()) return deny_in_tunnel("the TLS ClientHello names no server (no SNI)");
  if (normalize_host(hello.sni) != host_)
    return deny_in_tunnel("the TLS SNI " + hello.sni + " is not the CONNECT host");
  if (kind_ == kind::tunnel) {
    return asio::async_write(up_, asio::buffer(hello_),
                             [self = shared_from_this()](beast::error_code ec, std::size_t) {
                               self->on_hello_forwarded(ec);
                             });
  }
  terminate_tls();
}

void session::read_hello() {
  const std::size_t old = hello_.size();
  hello_.resize(std::min(hello_limit, old + chunk_size));
  down_.async_read_some(asio::buffer(hello_.data() + old, hello_.size() - old),
                        [self = shared_from_this(), old](beast::error_code ec, std::size_t n) {
                          self->hello_.resize(old + n);
                          self->on_hello_bytes(ec);
                        });
}

void session::on_hello_bytes(beast::error_code ec) {
  if (ec) return end_after(ec, "reading the TLS ClientHello");
  check_hello();
}

// After "200" no HTTP answer can be given: the refusal is the closed tunnel and the log.
void session::deny_in_tunnel(const std::string& why) {
  decision_ = "denied";
  box_->denied.fetch_add(1);
  end(why);
}

// -- a plain tunnel -------------------------------------------------------------------

void session::on_hello_forwarded(beast::error_code ec) {
  if (ec) return end("forwarding the ClientHello: " + ec.message());
  hello_.clear();
  hello_.shrink_to_fit();
  pumps_ = std::make_unique<pump_buffers>();
  read_sandbox();
  read_upstream();
}

void session::read_sandbox() {
  down_.async_read_some(asio::buffer(pumps_->up),
                        [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                          self->on_sandbox_bytes(ec, n);
                        });
}

void session::on_sandbox_bytes(beast::error_code ec, std::size_t n) {
  if (ec == asio::error::eof) return half_close(up_, "sandbox");
  if (ec) return end_after(ec, "reading from the sandbox");
  asio::async_write(up_, asio::buffer(pumps_->up.data(), n),
                    [self = shared_from_this()](beast::error_code ec, std::size_t) {
                      self->on_upstream_wrote(ec);
                    });
}

void session::on_upstream_wrote(beast::error_code ec) {
  if (ec) return end_after(ec, "writing upstream");
  read_sandbox();
}

void session::read_upstream() {
  up_.async_read_some(asio::buffer(pumps_->down),
                      [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                        self->on_upstream_bytes(ec, n);
                      });
}

void session::on_upstream_bytes(beast::error_code ec, std::size_t n) {
  if (ec == asio::error::eof) return half_close(down_.socket(), "upstream");
  if (ec) return end_after(ec, "reading upstream");
  asio::async_write(down_, asio::buffer(pumps_->down.data(), n),
                    [self = shared_from_this()](beast::error_code ec, std::size_t) {
                      self->on_sandbox_wrote(ec);
                    });
}

void session::on_sandbox_wrote(beast::error_code ec) {
  if (ec) return end_after(ec, "writing to the sandbox");
  read_upstream();
}

// One side finished sending: pass the FIN on, and end once both have.
template <class Socket>
void session::half_close(Socket& other, const char*) {
  beast::error_code ignored;
  other.shutdown(asio::socket_base::shutdown_send, ignored);
  if (++half_closed_ == 2) end("closed");
}

// -- a terminated tunnel (the host has a credential) ------------------------------------

void session::terminate_tls() {
  try {
    leaf_ = svc_->leaf_context(host_);
  } catch (const std::exception& e) {
    return end(std::string("no leaf certificate: ") + e.what());
  }
  down_.replay(std::move(hello_));
  hello_.clear();
  down_tls_.emplace(down_, *leaf_);
  down_tls_->async_handshake(
      ssl::stream_base::server,
      [self = shared_from_this()](beast::error_code ec) { self->on_sandbox_handshake(ec); });
}

void session::on_sandbox_handshake(beast::error_code ec) {
  if (ec) return end("TLS handshake with the sandbox: " + ec.message());
  up_tls_.emplace(up_, svc_->upstream_tls);
  SSL* ssl = up_tls_->native_handle();
  boost::system::error_code literal_error;
  asio::ip::make_address(host_, literal_error);
  if (literal_error) {
    SSL_set_tlsext_host_name(ssl, host_.c_str());
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    SSL_set1_host(ssl, host_.c_str());
  } else {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host_.c_str());
  }
  up_tls_->async_handshake(
      ssl::stream_base::client,
      [self = shared_from_this()](beast::error_code ec) { self->on_upstream_handshake(ec); });
}

void session::on_upstream_handshake(beast::error_code ec) {
  if (ec) {
    // The sandbox's TLS is up: it can be told why in HTTP.
    why_ = "TLS to the upstream failed: " + ec.message();
    reply_ = reply_text(http::status::bad_gateway, why_);
    return asio::async_write(
        *down_tls_, asio::buffer(reply_),
        [self = shared_from_this()](beast::error_code, std::size_t) { self->end(""); });
  }
  request_.reset();
  run_exchange(*down_tls_, *up_tls_, true);
}

}  // namespace corral::egress_detail
