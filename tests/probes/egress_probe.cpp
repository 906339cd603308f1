// What a command in a sandbox with egress does to speak HTTPS through the proxy, step by step
// (busybox's wget cannot: it ignores a proxy for https URLs). Static, like the agent, so it
// runs in any image from a read-only workspace.
//
//   egress_probe [--ca FILE] [--header 'Name: value'] HOST PORT SNI PATH
//
// Connects to 127.0.0.1:3128 (the agent's egress port), sends CONNECT HOST:PORT, shakes TLS
// hands naming SNI (verifying the peer against FILE and the name SNI when --ca is given, nothing
// otherwise), sends GET PATH with the header, and prints the response body.
// Exit: 0 a 200 answer, 2 CONNECT refused (its status line on stderr), 3 the TLS handshake
// failed (the tunnel closed, or the certificate did not verify), 4 anything else.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

namespace {

int fail(int code, const std::string& why) {
  std::fprintf(stderr, "egress_probe: %s\n", why.c_str());
  return code;
}

std::string ssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += std::string(out.empty() ? "" : "; ") + buf;
  }
  return out.empty() ? "the connection closed" : out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string ca, header;
  int i = 1;
  for (; i + 1 < argc && argv[i][0] == '-'; i += 2) {
    if (std::strcmp(argv[i], "--ca") == 0)
      ca = argv[i + 1];
    else if (std::strcmp(argv[i], "--header") == 0)
      header = argv[i + 1];
    else
      return fail(4, std::string("unknown flag ") + argv[i]);
  }
  if (argc - i != 4)
    return fail(4, "usage: egress_probe [--ca FILE] [--header H] HOST PORT SNI PATH");
  const std::string host = argv[i], port = argv[i + 1], sni = argv[i + 2], path = argv[i + 3];

  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(3128);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return fail(4, std::string("cannot connect to 127.0.0.1:3128: ") + std::strerror(errno));
  const std::string connect_head =
      "CONNECT " + host + ":" + port + " HTTP/1.1\r\nHost: " + host + ":" + port + "\r\n\r\n";
  if (write(fd, connect_head.data(), connect_head.size()) !=
      static_cast<ssize_t>(connect_head.size()))
    return fail(4, "cannot send CONNECT");
  // The answer's head, a byte at a time: nothing of the tunnel may be read past it.
  std::string answer;
  char c;
  while (answer.find("\r\n\r\n") == std::string::npos && answer.size() < 16384) {
    if (read(fd, &c, 1) != 1) break;
    answer += c;
  }
  if (answer.rfind("HTTP/1.1 200", 0) != 0 && answer.rfind("HTTP/1.0 200", 0) != 0)
    return fail(2, "CONNECT refused: " + answer.substr(0, answer.find("\r\n")));

  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ca.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1)
      return fail(4, "cannot read " + ca + ": " + ssl_errors());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  }
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  SSL_set_tlsext_host_name(ssl, sni.c_str());
  if (!ca.empty()) SSL_set1_host(ssl, sni.c_str());
  if (SSL_connect(ssl) != 1) return fail(3, "TLS handshake failed: " + ssl_errors());

  std::string request = "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n";
  if (!header.empty()) request += header + "\r\n";
  request += "\r\n";
  if (SSL_write(ssl, request.data(), static_cast<int>(request.size())) <= 0)
    return fail(4, "cannot send the request: " + ssl_errors());
  std::string response;
  char buf[16384];
  for (;;) {
    const int n = SSL_read(ssl, buf, sizeof buf);
    if (n <= 0) break;
    response.append(buf, static_cast<std::size_t>(n));
  }
  const auto body_at = response.find("\r\n\r\n");
  if (body_at == std::string::npos) return fail(4, "no HTTP answer: " + response.substr(0, 200));
  std::fwrite(response.data() + body_at + 4, 1, response.size() - body_at - 4, stdout);
  const bool ok = response.rfind("HTTP/1.1 200", 0) == 0 || response.rfind("HTTP/1.0 200", 0) == 0;
  return ok ? 0 : fail(4, "answered " + response.substr(0, response.find("\r\n")));
}
