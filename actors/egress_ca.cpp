// corral's egress CA (see egress_ca.hpp): the OpenSSL calls that make keys and certificates,
// and the files they are kept in.
#include "actors/egress_ca.hpp"

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <boost/asio/ip/address.hpp>
#include "actors/openssl_errors.hpp"

namespace corral::egress_detail {

namespace asio = boost::asio;

// -- OpenSSL helpers ---------------------------------------------------------------------

void openssl_free::operator()(EVP_PKEY* p) const {
  EVP_PKEY_free(p);
}
void openssl_free::operator()(X509* p) const {
  X509_free(p);
}
void openssl_free::operator()(BIO* p) const {
  BIO_free(p);
}

[[noreturn]] void fail_tls(const std::string& what) {
  throw std::runtime_error(what + ": " + actors::openssl_errors());
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

namespace {

key_ptr make_p256_key() {
  key_ptr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) fail_tls("cannot make an EC P-256 key");
  return key;
}

void add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext) fail_tls("cannot make certificate extension " + value);
  const int added = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (!added) fail_tls("cannot add certificate extension " + value);
}

// A v3 certificate for `key` named `cn`, signed by issuer (self-signed when issuer is null).
cert_ptr make_certificate(EVP_PKEY* key, const std::string& cn, X509* issuer, EVP_PKEY* issuer_key,
                          long days_back, long days_ahead,
                          const std::vector<std::pair<int, std::string>>& extensions) {
  cert_ptr cert(X509_new());
  if (!cert) fail_tls("cannot allocate a certificate");
  X509_set_version(cert.get(), 2);
  // A random positive 127-bit serial: browsers reject reused serials from one issuer.
  std::array<unsigned char, 16> serial{};
  if (RAND_bytes(serial.data(), static_cast<int>(serial.size())) != 1) fail_tls("no random serial");
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial.data(), static_cast<int>(serial.size()), nullptr);
  const bool serial_set = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  if (!serial_set) fail_tls("cannot set a serial");
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -days_back * 86400);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), days_ahead * 86400);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name);
  X509* signer = issuer ? issuer : cert.get();
  for (const auto& [nid, value] : extensions) add_extension(cert.get(), signer, nid, value);
  if (!X509_sign(cert.get(), issuer ? issuer_key : key, EVP_sha256()))
    fail_tls("cannot sign the certificate for " + cn);
  return cert;
}

std::string pem_of(X509* cert) {
  bio_ptr bio(BIO_new(BIO_s_mem()));
  if (!bio || !PEM_write_bio_X509(bio.get(), cert)) fail_tls("cannot write a certificate");
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

std::string pem_of(EVP_PKEY* key) {
  bio_ptr bio(BIO_new(BIO_s_mem()));
  if (!bio || !PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr))
    fail_tls("cannot write a private key");
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

// Written beside, then renamed: a crash leaves the old file or the new, never half of one.
void write_file(const std::string& path, const std::string& text, mode_t mode) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) throw std::runtime_error("cannot write " + tmp + ": " + std::strerror(errno));
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                       ::fchmod(fd, mode) == 0 && ::fsync(fd) == 0;
  ::close(fd);
  if (!written || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw std::runtime_error("cannot write " + path + ": " + why);
  }
}

}  // namespace

// -- corral's CA and its leaves ------------------------------------------------------------

certificate_authority::certificate_authority(const std::string& dir) : dir_(dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot make the CA directory " + dir + ": " + ec.message());
  if (::chmod(dir.c_str(), 0700) != 0)
    throw std::runtime_error("cannot make " + dir + " private: " + std::strerror(errno));
  if (!load()) make();
}

std::string certificate_authority::cert_path() const {
  return dir_ + "/ca.pem";
}
const std::string& certificate_authority::cert_pem() const {
  return cert_pem_;
}

std::pair<key_ptr, cert_ptr> certificate_authority::leaf(const std::string& host) const {
  auto key = make_p256_key();
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  const std::string san = (ec ? "DNS:" : "IP:") + host;
  auto cert = make_certificate(key.get(), host, cert_.get(), key_.get(), 1, 30,
                               {{NID_basic_constraints, "critical,CA:FALSE"},
                                {NID_key_usage, "critical,digitalSignature"},
                                {NID_ext_key_usage, "serverAuth"},
                                {NID_subject_alt_name, san},
                                {NID_subject_key_identifier, "hash"},
                                {NID_authority_key_identifier, "keyid:always"}});
  return {std::move(key), std::move(cert)};
}

bool certificate_authority::load() {
  auto cert_text = read_file(dir_ + "/ca.pem");
  auto key_text = read_file(dir_ + "/ca.key");
  if (!cert_text || !key_text) return false;
  bio_ptr cert_bio(BIO_new_mem_buf(cert_text->data(), static_cast<int>(cert_text->size())));
  bio_ptr key_bio(BIO_new_mem_buf(key_text->data(), static_cast<int>(key_text->size())));
  cert_.reset(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  key_.reset(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (!cert_ || !key_ || X509_check_private_key(cert_.get(), key_.get()) != 1)
    throw std::runtime_error("the egress CA in " + dir_ +
                             " is unreadable or its key does not match: remove both files to "
                             "make a new one");
  cert_pem_ = *cert_text;
  return true;
}

void certificate_authority::make() {
  key_ = make_p256_key();
  cert_ = make_certificate(key_.get(), "corral egress CA", nullptr, nullptr, 1, 3650,
                           {{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                            {NID_key_usage, "critical,keyCertSign,cRLSign"},
                            {NID_subject_key_identifier, "hash"},
                            {NID_authority_key_identifier, "keyid:always"}});
  // The key first: a crash between the two leaves no certificate without its key.
  write_file(dir_ + "/ca.key", pem_of(key_.get()), 0600);
  cert_pem_ = pem_of(cert_.get());
  write_file(dir_ + "/ca.pem", cert_pem_, 0644);
}

}  // namespace corral::egress_detail
