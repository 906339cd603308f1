#include "actors/egress_service.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "actors/egress_proxy.hpp"
#include "actors/egress_rules.hpp"
#include "actors/policy.hpp"
#include "messages/agent_protocol.hpp"

namespace corral::actors {

namespace {

// A credential's value: the first line of its file, at most 8 KiB, no control characters (a
// header value must not end the header).
std::string read_secret(const std::string& path, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = "cannot read the credential file " + path;
    return {};
  }
  std::string value(8193, '\0');
  in.read(value.data(), static_cast<std::streamsize>(value.size()));
  value.resize(static_cast<std::size_t>(in.gcount()));
  if (value.size() > 8192) {
    error = "the credential file " + path + " is larger than 8 KiB";
    return {};
  }
  while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
  for (unsigned char c : value)
    if (c < 0x20 || c == 0x7f) {
      error = "the credential file " + path + " holds a control character";
      return {};
    }
  if (value.empty()) error = "the credential file " + path + " is empty";
  return value;
}

// Written beside the file, then renamed over it: a reader never sees half a bundle. The
// directory may be the sandbox root's (its run directory): whatever it left at the temporary
// name is unlinked first, and the file is made anew (O_EXCL: never a fifo that would block
// this thread, nor a link out), checked to be a regular file before a byte is written.
std::string write_file(const std::string& path, const std::string& text, mode_t mode) {
  const std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  const int fd =
      ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, mode);
  if (fd < 0) return "cannot write " + tmp + ": " + std::strerror(errno);
  struct stat sb {};
  if (::fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    ::close(fd);
    return "cannot write " + tmp + ": not a regular file";
  }
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n <= 0) {
      ::close(fd);
      return "cannot write " + tmp + ": " + std::strerror(errno);
    }
    done += static_cast<std::size_t>(n);
  }
  ::fchmod(fd, mode);
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    return "cannot rename " + tmp + ": " + std::strerror(errno);
  return {};
}

// Beside the run directories, root's alone (0700), out of every sandbox's reach: each egress
// sandbox's granted hosts (what a runtime that adopts it may open again; its agent's word is
// not taken, a root sandbox user could forge it), and its socket while it is being set up.
std::string record_dir_of(const std::string& run_dir) {
  return std::filesystem::path(run_dir).parent_path().string() + ".egress";
}

}  // namespace

egress_service::egress_service(egress_settings settings) : settings_(std::move(settings)) {}

egress_service::~egress_service() = default;

std::string egress_service::open(const egress_policy& policy, const std::vector<std::string>& hosts,
                                 const std::string& sandbox_id, const std::string& run_dir,
                                 uint32_t uid, uint32_t gid) {
  egress_rules rules;
  rules.allow = hosts;
  rules.deny = policy.deny;
  rules.ports = policy.ports;
  rules.allow_private_cidrs = policy.allow_private_cidrs;
  rules.resolve = policy.resolve;
  rules.max_bytes = static_cast<uint64_t>(policy.max_bytes_per_sandbox);
  for (const auto& c : policy.credentials) {
    // Only for hosts this sandbox may reach: another host's secret is never read for it.
    bool reachable = false;
    for (const auto& h : hosts) reachable |= egress_pattern_covers(h, c.host);
    if (!reachable) continue;
    std::string error;
    auto value = read_secret(c.value_file, error);
    if (!error.empty()) return error;
    rules.credentials.push_back(
        {c.host, c.header, c.scheme.empty() ? value : c.scheme + " " + value});
  }
  std::lock_guard<std::mutex> guard(mutex_);
  if (!proxy_) {
    egress_proxy_options options;
    options.ca_dir = settings_.ca_dir;
    options.log_path = settings_.log_path;
    options.upstream_ca_file = policy.upstream_ca;
    std::error_code ec;
    if (!options.log_path.empty())
      std::filesystem::create_directories(std::filesystem::path(options.log_path).parent_path(),
                                          ec);
    try {
      proxy_ = std::make_unique<egress_proxy>(std::move(options));
    } catch (const std::exception& e) {
      return std::string("cannot start the egress proxy: ") + e.what();
    }
  }
  const std::string records = record_dir_of(run_dir);
  ::mkdir(records.c_str(), 0700);
  std::string granted;
  for (const auto& h : hosts) granted += h + "\n";
  if (auto err = write_file(records + "/" + sandbox_id, granted, 0600); !err.empty()) return err;
  const std::string bundle = run_dir + "/" + agent_protocol::trust_bundle_name;
  if (auto err = write_file(bundle, proxy_->trust_bundle(), 0644); !err.empty()) return err;
  // The run directory is its root's alone (0700): commands, which run as other users, read
  // the bundle through it, and nothing else (the sockets are 0600, root's).
  ::chmod(run_dir.c_str(), 0711);
  // The socket is made, given its mode and owner in our own directory, then renamed into the
  // sandbox's: a path there is never chmod-ed or chown-ed (a link put in its place would
  // aim those at a host file).
  const std::string staged = records + "/" + sandbox_id + ".sock";
  if (auto err = proxy_->open(sandbox_id, staged, std::move(rules), uid, gid); !err.empty())
    return err;
  const std::string socket = run_dir + "/" + agent_protocol::egress_socket_name;
  if (::rename(staged.c_str(), socket.c_str()) != 0) {
    std::string why = "cannot move the egress socket into " + run_dir + ": " + std::strerror(errno);
    proxy_->close(sandbox_id, false);
    return why;
  }
  return {};
}

std::vector<std::string> egress_service::granted_hosts(const std::string& run_dir,
                                                       const std::string& sandbox_id) {
  std::vector<std::string> out;
  std::ifstream in(record_dir_of(run_dir) + "/" + sandbox_id);
  for (std::string line; std::getline(in, line) && out.size() < 64;)
    if (!line.empty()) out.push_back(line);
  return out;
}

void egress_service::close(const std::string& sandbox_id, const std::string& run_dir) {
  {
    std::lock_guard<std::mutex> guard(mutex_);
    if (proxy_) proxy_->close(sandbox_id, false);
  }
  const std::string records = record_dir_of(run_dir);
  ::unlink((records + "/" + sandbox_id).c_str());
  ::unlink((records + "/" + sandbox_id + ".sock").c_str());
}

}  // namespace corral::actors
