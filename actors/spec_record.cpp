#include "actors/spec_record.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <set>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <caf/deep_to_string.hpp>

namespace corral::actors {

namespace {

std::string hex(const unsigned char* data, std::size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    out += digits[data[i] >> 4];
    out += digits[data[i] & 0xF];
  }
  return out;
}

// 64 bits of SHA-256 tell two specs apart; the record is not a commitment.
constexpr std::size_t digest_bytes = 8;

std::string sha256(std::string_view text) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  EVP_Digest(text.data(), text.size(), md.data(), &len, EVP_sha256(), nullptr);
  return hex(md.data(), std::min<std::size_t>(len, digest_bytes));
}

std::string hmac(std::string_view secret, std::string_view text) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(text.data()), text.size(), md.data(), &len);
  return hex(md.data(), std::min<std::size_t>(len, digest_bytes));
}

template <class T>
std::string digest_of(const T& value) {
  return sha256(caf::deep_to_string(value));
}

bool is_env_field(const std::string& field) {
  return field.rfind("env.", 0) == 0;
}

}  // namespace

std::string sha256_hex(std::string_view text, std::size_t bytes) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  EVP_Digest(text.data(), text.size(), md.data(), &len, EVP_sha256(), nullptr);
  return hex(md.data(), std::min<std::size_t>(len, bytes));
}

spec_record make_spec_record(const messages::sandbox_spec& spec, std::string_view secret) {
  spec_record r;
  r["secret"] = sha256(secret);  // names the key, reveals nothing of it
  r["image"] = sha256(spec.image);
  r["command"] = digest_of(spec.command);
  for (const auto& [name, value] : spec.env) r["env." + name] = hmac(secret, name + "=" + value);
  r["workdir"] = sha256(spec.workdir);
  r["user"] = sha256(spec.user);
  r["workspace"] = digest_of(spec.workspace);
  r["tmpfs"] = digest_of(spec.tmpfs);
  r["memory"] = digest_of(spec.memory_bytes);
  r["memory_swap"] = digest_of(spec.memory_swap_bytes);
  r["cpus"] = digest_of(spec.nano_cpus);
  r["pids"] = digest_of(spec.pids_limit);
  r["network"] = sha256(spec.network_mode);
  r["writable_root"] = digest_of(spec.writable_root);
  r["cap_add"] = digest_of(spec.cap_add);
  r["labels"] = digest_of(spec.labels);
  r["setup_command"] = digest_of(spec.setup_command);
  r["timeout"] = digest_of(spec.exec_timeout);
  r["max_stdout"] = digest_of(spec.max_stdout);
  r["max_stderr"] = digest_of(spec.max_stderr);
  r["lifetime"] = digest_of(spec.lifetime);
  r["idle_limit"] = digest_of(spec.idle_limit);
  // Only when asked: records of sandboxes without egress stay as they were.
  if (!spec.allow_hosts.empty()) {
    auto hosts = spec.allow_hosts;
    std::sort(hosts.begin(), hosts.end());
    r["allow_hosts"] = digest_of(hosts);
  }
  return r;
}

std::string encode(const spec_record& record) {
  std::string out;
  for (const auto& [field, digest] : record) {
    if (!out.empty()) out += ';';
    out += field;
    out += '=';
    out += digest;
  }
  return out;
}

spec_record decode_spec_record(std::string_view label) {
  spec_record r;
  while (!label.empty()) {
    const auto end = std::min(label.find(';'), label.size());
    const auto item = label.substr(0, end);
    const auto eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0) return {};
    r.emplace(std::string(item.substr(0, eq)), std::string(item.substr(eq + 1)));
    label.remove_prefix(std::min(end + 1, label.size()));
  }
  return r;
}

std::vector<std::string> differing_fields(const spec_record& kept, const spec_record& asked) {
  auto secret = [](const spec_record& r) {
    auto it = r.find("secret");
    return it == r.end() ? std::string() : it->second;
  };
  const bool same_secret = secret(kept) == secret(asked);
  std::set<std::string> fields;
  for (const auto& [field, digest] : kept) fields.insert(field);
  for (const auto& [field, digest] : asked) fields.insert(field);
  fields.erase("secret");
  std::vector<std::string> out;
  for (const auto& field : fields) {
    auto a = kept.find(field);
    auto b = asked.find(field);
    // Missing on one side, or different where a difference shows (env values compare only
    // under the same secret).
    if (a == kept.end() || b == asked.end() ||
        (a->second != b->second && (same_secret || !is_env_field(field)))) {
      out.push_back(field);
    }
  }
  return out;
}

std::string load_spec_secret(const std::string& path) {
  auto random_secret = [] {
    std::array<unsigned char, 32> bytes{};
    RAND_bytes(bytes.data(), static_cast<int>(bytes.size()));
    return hex(bytes.data(), bytes.size());
  };
  if (path.empty() || geteuid() != 0) return random_secret();
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  // Created once, exclusively: two processes starting together agree on the first one's.
  if (int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600); fd >= 0) {
    auto secret = random_secret();
    const bool written =
        ::write(fd, secret.data(), secret.size()) == static_cast<ssize_t>(secret.size());
    ::close(fd);
    if (written) return secret;
  }
  std::ifstream in(path);
  std::string secret;
  struct stat st {};
  if (in && std::getline(in, secret) && secret.size() == 64 && ::stat(path.c_str(), &st) == 0 &&
      st.st_uid == 0 && (st.st_mode & 077) == 0) {
    return secret;
  }
  return random_secret();
}

}  // namespace corral::actors
