// Shared fixture for the engine tests: one negotiated client per test, and every container the
// test makes, removed (force) when the test ends, also when it fails.
//
// Every test container is named corral-test-..., and labelled
//   corral.managed-by=corral-test, corral.test=<test name>, corral.test-run=<this process>
// so a test can find exactly its own containers and events, even next to another run.
// A missing engine fails the tests: nothing here skips.
#pragma once

#include <sys/stat.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "docker/blocking.hpp"
#include "docker/client.hpp"

namespace corral_test {

using namespace corral::docker;
using namespace std::chrono_literals;

inline constexpr const char* sandbox_image = "corral/sandbox:busybox";
inline constexpr int64_t mib = int64_t{1} << 20;
inline constexpr const char* managed_by_label = "corral.managed-by";
inline constexpr const char* managed_by_value = "corral-test";
inline constexpr const char* managed_by_filter = "corral.managed-by=corral-test";

// REQUIRE that a result<T> succeeded, showing the adapter's error when it did not.
#define REQUIRE_OK(expr)                                                                    \
  do {                                                                                      \
    const auto& corral_result_ = (expr);                                                    \
    INFO(#expr << " failed: "                                                               \
               << (corral_result_.ok() ? std::string() : corral_result_.err().describe())); \
    REQUIRE(corral_result_.ok());                                                           \
  } while (false)

// Unique per test process: labels and names of this run do not collide with another run.
inline const std::string& run_id() {
  static const std::string id = [] {
    std::random_device rd;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%x%04x", static_cast<unsigned>(::getpid()) & 0xfffffu,
                  static_cast<unsigned>(rd()) & 0xffffu);
    return std::string(buf);
  }();
  return id;
}

// Resident set size of this process in bytes, from /proc/self/status (VmRSS).
inline int64_t resident_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6) * 1024;
  }
  return -1;
}

// A host directory for bind mounts, world-readable so the sandbox user can read it; removed
// at the end of the test (we run as root, so files the engine wrote as uid 1000 go too).
class temp_dir {
 public:
  temp_dir() {
    char pattern[] = "/tmp/corral-test-XXXXXX";
    const char* made = ::mkdtemp(pattern);
    REQUIRE(made != nullptr);
    path_ = made;
    ::chmod(path_.c_str(), 0755);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::string& path() const { return path_; }

  void write(const std::string& name, const std::string& bytes) const {
    const std::string file = path_ + "/" + name;
    std::ofstream out(file, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    REQUIRE(out.good());
    ::chmod(file.c_str(), 0644);
  }

  std::optional<std::string> read(const std::string& name) const {
    std::ifstream in(path_ + "/" + name, std::ios::binary);
    if (!in) return std::nullopt;
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  std::string path_;
};

// -- a minimal ustar writer and reader, for the archive endpoints ------------------------

struct tar_entry {
  std::string name;
  std::string data;
  unsigned mode = 0644;
  unsigned uid = 1000;
  unsigned gid = 1000;
};

namespace tar_detail {

inline void put_octal(char* field, std::size_t width, uint64_t value) {
  // width-1 octal digits, zero-padded, then NUL.
  std::string digits(width - 1, '0');
  for (std::size_t i = width - 1; i-- > 0 && value > 0; value >>= 3) {
    digits[i] = static_cast<char>('0' + (value & 7));
  }
  std::memcpy(field, digits.data(), width - 1);
  field[width - 1] = '\0';
}

inline uint64_t get_octal(const char* field, std::size_t width) {
  uint64_t v = 0;
  for (std::size_t i = 0; i < width && field[i] != '\0' && field[i] != ' '; ++i) {
    if (field[i] < '0' || field[i] > '7') break;
    v = v * 8 + static_cast<uint64_t>(field[i] - '0');
  }
  return v;
}

inline std::size_t padded(std::size_t n) {
  return (n + 511) / 512 * 512;
}

}  // namespace tar_detail

inline std::string make_tar(const std::vector<tar_entry>& entries) {
  using namespace tar_detail;
  std::string out;
  for (const auto& e : entries) {
    char h[512] = {};
    REQUIRE(e.name.size() < 100);
    std::memcpy(h, e.name.data(), e.name.size());
    put_octal(h + 100, 8, e.mode);
    put_octal(h + 108, 8, e.uid);
    put_octal(h + 116, 8, e.gid);
    put_octal(h + 124, 12, e.data.size());
    put_octal(h + 136, 12, 1700000000);  // mtime
    h[156] = '0';                        // regular file
    std::memcpy(h + 257, "ustar", 6);    // magic, NUL-terminated
    std::memcpy(h + 263, "00", 2);       // version
    std::memcpy(h + 265, "sandbox", 7);  // uname
    std::memcpy(h + 297, "sandbox", 7);  // gname
    std::memset(h + 148, ' ', 8);        // checksum counts as spaces while summing
    unsigned sum = 0;
    for (unsigned char c : h) sum += c;
    put_octal(h + 148, 7, sum);  // six digits, NUL, then the space already there
    h[155] = ' ';
    out.append(h, sizeof h);
    out.append(e.data);
    out.append(padded(e.data.size()) - e.data.size(), '\0');
  }
  out.append(1024, '\0');  // two zero blocks end the archive
  return out;
}

// The regular files of a tar (ustar, GNU or PAX as Go's archive/tar writes them), by name.
inline std::map<std::string, std::string> read_tar(std::string_view tar) {
  using namespace tar_detail;
  std::map<std::string, std::string> files;
  std::string pax_path;
  std::size_t at = 0;
  while (at + 512 <= tar.size()) {
    const char* h = tar.data() + at;
    bool zero = true;
    for (std::size_t i = 0; i < 512 && zero; ++i) zero = h[i] == '\0';
    if (zero) break;
    const uint64_t size = get_octal(h + 124, 12);
    const char type = h[156];
    std::string name(h, strnlen(h, 100));
    if (std::memcmp(h + 257, "ustar", 5) == 0 && h[345] != '\0') {
      name = std::string(h + 345, strnlen(h + 345, 155)) + "/" + name;
    }
    at += 512;
    if (at + size > tar.size()) break;
    std::string_view body = tar.substr(at, size);
    at += padded(size);
    if (type == 'x') {  // PAX extended header: "len key=value\n" records; keep path
      std::size_t p = 0;
      while (p < body.size()) {
        const std::size_t space = body.find(' ', p);
        if (space == std::string_view::npos) break;
        const std::size_t len =
            std::strtoul(std::string(body.substr(p, space - p)).c_str(), nullptr, 10);
        if (len == 0 || p + len > body.size()) break;
        std::string_view record = body.substr(space + 1, p + len - space - 2);
        if (record.rfind("path=", 0) == 0) pax_path = std::string(record.substr(5));
        p += len;
      }
      continue;
    }
    if (type == 'L') {  // GNU long name
      pax_path = std::string(body.substr(0, strnlen(body.data(), body.size())));
      continue;
    }
    if (!pax_path.empty()) name = std::exchange(pax_path, {});
    if (type == '0' || type == '\0') files[name] = std::string(body);
  }
  return files;
}

// -- the fixture -------------------------------------------------------------------------

struct exec_result {
  exec_output output;
  int64_t exit_code = -1;

  const std::string& out() const { return output.stdout_data.data; }
  const std::string& err() const { return output.stderr_data.data; }
};

class engine_fixture {
 public:
  engine_fixture() : test_name_(Catch::getResultCapture().getCurrentTestName()) {
    auto socket = resolve_engine_socket();
    REQUIRE_OK(socket);
    client_options options;
    options.http.socket_path = *socket;
    docker_ = std::make_unique<client>(options);
    auto version = blocking<version_response>([&](auto done) { docker_->negotiate(done); });
    REQUIRE_OK(version);
    version_ = *version;
  }

  ~engine_fixture() {
    // Remove what we know of, then anything else carrying this test's labels (a create whose
    // reply we never saw). Errors are reported, not thrown: a destructor must not throw.
    for (const auto& id : containers_) {
      auto removed = blocking<void>([&](auto done) { docker_->container_remove(id, true, done); });
      if (!removed && removed.err().code != errc::not_found) {
        std::fprintf(stderr, "engine_fixture: removing %s failed: %s\n", id.c_str(),
                     removed.err().describe().c_str());
      }
    }
    auto left = blocking<std::vector<container_summary>>(
        [&](auto done) { docker_->container_list(own_filter(), done); });
    if (left) {
      for (const auto& c : *left) {
        auto removed =
            blocking<void>([&](auto done) { docker_->container_remove(c.id, true, done); });
        if (!removed && removed.err().code != errc::not_found) {
          std::fprintf(stderr, "engine_fixture: removing %s failed: %s\n", c.id.c_str(),
                       removed.err().describe().c_str());
        }
      }
    }
  }

  engine_fixture(const engine_fixture&) = delete;
  engine_fixture& operator=(const engine_fixture&) = delete;

  client& docker() { return *docker_; }
  const version_response& engine_version() const { return version_; }
  const std::string& test_name() const { return test_name_; }

  // The labels every container of this test carries.
  std::map<std::string, std::string> test_labels() const {
    return {{managed_by_label, managed_by_value},
            {"corral.test", test_name_},
            {"corral.test-run", run_id()}};
  }

  // Engine-side filter matching exactly this test's containers of this run.
  container_list_options own_filter() const {
    container_list_options o;
    o.all = true;
    o.filters["label"] = {std::string("corral.test=") + test_name_, "corral.test-run=" + run_id()};
    return o;
  }

  // corral-test-<hint>-<run>-<n>: unique, and valid as a Docker name.
  std::string container_name(const std::string& hint) {
    std::string name = "corral-test-";
    for (char c : hint) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
      name.push_back(ok ? c : '-');
    }
    return name + "-" + run_id() + "-" + std::to_string(++counter_);
  }

  // A hardened, network-less sandbox with this test's labels. The caller may adjust it.
  container_create_request sandbox(const std::string& hint,
                                   std::vector<std::string> cmd = {"sleep", "600"}) {
    container_create_request r;
    r.name = container_name(hint);
    r.image = sandbox_image;
    r.cmd = std::move(cmd);
    r.user = "1000:1000";
    r.working_dir = "/workspace";
    r.labels = test_labels();
    r.host.network_mode = "none";
    r.host.readonly_rootfs = true;
    r.host.cap_drop = {"ALL"};
    r.host.security_opt = {"no-new-privileges"};
    r.host.memory = 64 * mib;
    r.host.memory_swap = 64 * mib;
    r.host.pids_limit = 64;
    r.host.init = true;
    r.host.tmpfs = {{"/tmp", "rw,noexec,nosuid,size=16m,uid=1000,gid=1000"}};
    return r;
  }

  // Creates and tracks the container; returns its id.
  std::string create(const container_create_request& request) {
    REQUIRE(request.host.network_mode == "none");  // never the bridge
    REQUIRE(request.labels.count(managed_by_label) == 1);
    auto created = blocking<container_create_response>(
        [&](auto done) { docker_->container_create(request, done); });
    REQUIRE_OK(created);
    containers_.push_back(created->id);
    return created->id;
  }

  void track(const std::string& id) { containers_.push_back(id); }

  void start(const std::string& id) {
    auto started = blocking<change_outcome>([&](auto done) { docker_->container_start(id, done); });
    REQUIRE_OK(started);
    REQUIRE(*started == change_outcome::done);
  }

  // Created and started.
  std::string run(const container_create_request& request) {
    auto id = create(request);
    start(id);
    return id;
  }

  container_inspect_response inspect(const std::string& id) {
    auto r = blocking<container_inspect_response>(
        [&](auto done) { docker_->container_inspect(id, done); });
    REQUIRE_OK(r);
    return std::move(r).value();
  }

  void remove(const std::string& id, bool force = true) {
    auto r = blocking<void>([&](auto done) { docker_->container_remove(id, force, done); });
    REQUIRE_OK(r);
  }

  container_wait_response wait(const std::string& id,
                               wait_condition condition = wait_condition::not_running) {
    auto r = blocking<container_wait_response>(
        [&](auto done) { docker_->container_wait(id, condition, 30s, done); });
    REQUIRE_OK(r);
    return std::move(r).value();
  }

  // The exit code of a finished exec. The attached stream can end a moment before the engine
  // has recorded the exit, so a still-running answer is asked again, briefly.
  int64_t exec_exit_code(const std::string& exec_id) {
    for (int attempt = 0; attempt < 100; ++attempt) {
      auto r =
          blocking<exec_inspect_response>([&](auto done) { docker_->exec_inspect(exec_id, done); });
      REQUIRE_OK(r);
      if (!r->running && r->exit_code) return *r->exit_code;
      std::this_thread::sleep_for(20ms);
    }
    FAIL("exec " << exec_id << " still running 2 s after its stream ended");
    return -1;
  }

  // Runs a command to completion in a running container: output and exit code.
  exec_result exec(const std::string& container_id, std::vector<std::string> cmd,
                   exec_start_options options = {}, exec_create_request request = {}) {
    request.cmd = std::move(cmd);
    if (request.user.empty()) request.user = "1000:1000";
    if (options.stdin_data) request.attach_stdin = true;
    if (options.timeout.count() == 0) options.timeout = 60s;
    auto created = blocking<exec_create_response>(
        [&](auto done) { docker_->exec_create(container_id, request, done); });
    REQUIRE_OK(created);
    auto output = blocking<exec_output>(
        [&](auto done) { docker_->exec_start(created->id, std::move(options), done); });
    REQUIRE_OK(output);
    exec_result out;
    out.output = std::move(output).value();
    out.exit_code = exec_exit_code(created->id);
    return out;
  }

 private:
  std::string test_name_;
  std::unique_ptr<client> docker_;
  version_response version_;
  std::vector<std::string> containers_;
  int counter_ = 0;
};

// A call in flight, waited for with a bound: a hang is a failure, not a stuck suite. The
// completion owns the promise, so a test that fails before the call ends leaves nothing
// dangling for the I/O thread.
template <class T>
class pending {
 public:
  pending()
      : promise_(std::make_shared<std::promise<result<T>>>()), future_(promise_->get_future()) {}

  callback<T> done() const {
    return [p = promise_](result<T> r) { p->set_value(std::move(r)); };
  }

  bool ready_within(std::chrono::milliseconds limit) {
    return future_.wait_for(limit) == std::future_status::ready;
  }

  result<T> get(std::chrono::milliseconds limit, const char* what) {
    INFO(what << ": no answer within " << limit.count() << " ms");
    REQUIRE(ready_within(limit));
    return future_.get();
  }

 private:
  std::shared_ptr<std::promise<result<T>>> promise_;
  std::future<result<T>> future_;
};

}  // namespace corral_test
