// The request's strings and the names it gives: every string valid UTF-8 without stray
// control characters (checked before anything can rewrite it), and the sandbox key, the
// principal, the user and the image reference, each checked on its own. Apart from
// policy.cpp because these checks stand alone (the supervisor, the facade and the TLS setup
// call some directly) and are what a reader of "why was my key/user/image refused" looks for.
#include "actors/policy.hpp"

#include "actors/policy_detail.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "messages/errors.hpp"

namespace corral::actors {

using messages::corral_errc;
using messages::make_error;
using policy_detail::shown;
using policy_detail::violation;

namespace policy_detail {

// A request beyond the policy: names what was refused and the key that would allow it.
caf::error violation(const std::string& what, std::string_view key) {
  return make_error(corral_errc::policy_violation,
                    what + " (policy key " + std::string(key) + " would allow it)");
}

std::string shown(std::string_view s) {
  // Invalid UTF-8 is shown escaped: an error text never carries the bytes it refuses.
  const bool escape_high = !valid_utf8(s);
  std::string out = "'";
  for (unsigned char c : s.substr(0, 80)) {
    if (c < 0x20 || c == 0x7f || (escape_high && c >= 0x80)) {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xF];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > 80) out += "...";
  return out + "'";
}

}  // namespace policy_detail

namespace {

template <class Strings>
caf::error check_argv_text(std::string_view what, const Strings& argv,
                           text_kind kind = text_kind::multi_line) {
  for (std::size_t i = 0; i < argv.size(); ++i) {
    if (auto err = check_text(std::string(what) + "[" + std::to_string(i) + "]", argv[i], kind))
      return err;
  }
  return {};
}

caf::error check_env_text(std::string_view what, const std::map<std::string, std::string>& env) {
  for (const auto& [k, v] : env) {
    if (auto err = check_text(std::string(what) + " key", k, text_kind::single_line)) return err;
    if (auto err = check_text(std::string(what) + " value of " + k, v, text_kind::multi_line))
      return err;
  }
  return {};
}

}  // namespace

namespace policy_detail {

// Every string of a sandbox request: valid UTF-8, and control characters only where a
// multi-line script needs them.
caf::error check_spec_text(const std::string& key, const messages::sandbox_spec& spec) {
  using enum text_kind;
  if (auto err = check_text("sandbox key", key, single_line)) return err;
  if (auto err = check_text("image", spec.image, single_line)) return err;
  if (auto err = check_text("workspace", spec.workspace.host_path, single_line)) return err;
  if (auto err = check_text("workspace container path", spec.workspace.container_path, single_line))
    return err;
  if (auto err = check_text("workdir", spec.workdir, single_line)) return err;
  if (auto err = check_text("user", spec.user, single_line)) return err;
  if (auto err = check_text("network mode", spec.network_mode, single_line)) return err;
  if (auto err = check_argv_text("command", spec.command)) return err;
  if (auto err = check_argv_text("setup command", spec.setup_command)) return err;
  if (auto err = check_env_text("env", spec.env)) return err;
  for (const auto& [k, v] : spec.labels) {
    if (auto err = check_text("label key", k, single_line)) return err;
    if (auto err = check_text("label value of " + k, v, multi_line)) return err;
  }
  if (auto err = check_argv_text("capability", spec.cap_add, single_line)) return err;
  if (auto err = check_argv_text("allow-host", spec.allow_hosts, single_line)) return err;
  for (std::size_t i = 0; i < spec.tmpfs.size(); ++i) {
    const auto n = "[" + std::to_string(i) + "]";
    if (auto err = check_text("tmpfs path" + n, spec.tmpfs[i].path, single_line)) return err;
    if (auto err = check_text("tmpfs options" + n, spec.tmpfs[i].options, single_line)) return err;
  }
  return {};
}

caf::error check_exec_text(const messages::exec_request& request) {
  if (auto err = check_argv_text("exec argv", request.argv)) return err;
  if (auto err = check_env_text("exec env", request.env)) return err;
  return check_text("exec workdir", request.workdir, text_kind::single_line);
}

}  // namespace policy_detail

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t n = 0;
    uint32_t cp = 0;
    uint32_t lowest = 0;
    if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F, lowest = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F, lowest = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07, lowest = 0x10000;
    } else {
      return false;  // a continuation byte first, or 0xF8..0xFF
    }
    if (s.size() - i <= n) return false;  // truncated sequence
    for (std::size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < lowest || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

caf::error check_text(std::string_view field, std::string_view s, text_kind kind) {
  // Multi-line values (argv elements, env and label values) are not echoed: credentials live
  // there. Paths, keys and names are, escaped.
  const std::string named =
      std::string(field) + (kind == text_kind::single_line ? " " + shown(s) : std::string());
  if (!valid_utf8(s)) {
    return make_error(corral_errc::invalid_request, named + " is not valid UTF-8");
  }
  for (unsigned char c : s) {
    if (c >= 0x20 && c != 0x7f) continue;
    if (kind == text_kind::multi_line && (c == '\t' || c == '\n' || c == '\r')) continue;
    if (c == 0) return make_error(corral_errc::invalid_request, named + " contains a NUL byte");
    static constexpr char hex[] = "0123456789abcdef";
    const std::string code = {'\\', 'x', hex[c >> 4], hex[c & 0xF]};
    return make_error(
        corral_errc::invalid_request,
        named + " contains the control character " + code +
            (kind == text_kind::multi_line ? " (only tab, LF and CR are allowed)" : ""));
  }
  return {};
}

caf::expected<std::string> check_user(const user_policy& users, std::string_view user) {
  auto invalid = [&] {
    return make_error(corral_errc::invalid_request,
                      "user " + shown(user) +
                          " is invalid: use a numeric uid[:gid] (a name could resolve to root "
                          "in the image)");
  };
  const auto colon = user.find(':');
  const std::string_view uid_text = user.substr(0, colon);
  const std::string_view gid_text =
      colon == std::string_view::npos ? uid_text : user.substr(colon + 1);
  auto number = [](std::string_view text, uint32_t& out) {
    if (text.empty() || text.size() > 10) return false;
    if (!std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); }))
      return false;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc{} && end == text.data() + text.size();
  };
  uint32_t uid = 0;
  uint32_t gid = 0;
  if (!number(uid_text, uid) || !number(gid_text, gid)) return invalid();
  std::string normal = std::to_string(uid) + ":" + std::to_string(gid);
  auto check = [&](const char* what, uint32_t id, const id_range& range,
                   const char* key) -> caf::error {
    if (id == 0) {
      if (users.allow_root) return {};
      return violation("user " + shown(user) + ": " + what + " 0 (root" +
                           (std::string_view(what) == "gid" ? "'s group" : "") + ") is refused",
                       "users.allow_root");
    }
    if (id < range.min || id > range.max) {
      return violation("user " + shown(user) + ": " + what + " " + std::to_string(id) +
                           " is outside the allowed range " + std::to_string(range.min) + "-" +
                           std::to_string(range.max),
                       key);
    }
    return {};
  };
  if (auto err = check("uid", uid, users.uids, "users.uids")) return err;
  if (auto err = check("gid", gid, users.gids, "users.gids")) return err;
  return normal;
}

caf::error check_principal_name(std::string_view name) {
  const bool ok = !name.empty() && name.size() <= 64 &&
                  std::isalnum(static_cast<unsigned char>(name[0])) &&
                  std::all_of(name.begin(), name.end(), [](unsigned char c) {
                    return std::isalnum(c) || c == '_' || c == '.' || c == '-' || c == '@';
                  });
  if (!ok) {
    return make_error(corral_errc::invalid_request,
                      "principal " + shown(name) +
                          " is invalid: 1-64 characters of letters, digits, '_', '.', '-', '@', "
                          "starting with a letter or digit");
  }
  return {};
}

caf::error check_key(std::string_view key) {
  auto plain_key_ok = [](std::string_view k) {
    return !k.empty() && k.size() <= 128 && std::isalnum(static_cast<unsigned char>(k[0])) &&
           std::all_of(k.begin(), k.end(), [](unsigned char c) {
             return std::isalnum(c) || c == '_' || c == '.' || c == '-';
           });
  };
  // A node's keys are per principal: "alice/session-42" (the facade adds the prefix).
  bool ok = plain_key_ok(key);
  if (const auto slash = key.find('/'); !ok && slash != std::string_view::npos) {
    ok = !check_principal_name(key.substr(0, slash)) && plain_key_ok(key.substr(slash + 1));
  }
  if (!ok) {
    return make_error(corral_errc::invalid_request,
                      "sandbox key " + shown(key) +
                          " is invalid: 1-128 characters of letters, digits, '_', '.', '-', "
                          "starting with a letter or digit");
  }
  return {};
}

caf::error check_image_reference(std::string_view image) {
  auto bad = [&](const std::string& why) {
    return make_error(corral_errc::invalid_request,
                      "image reference " + shown(image) + " is invalid: " + why);
  };
  if (image.empty()) return bad("empty");
  if (image.size() > 256) return bad("longer than 256 characters");
  for (unsigned char c : image) {
    if (!(std::isalnum(c) || c == '.' || c == '_' || c == '-' || c == '/' || c == ':' ||
          c == '@')) {
      return bad("character " + shown(std::string(1, static_cast<char>(c))) + " is not allowed");
    }
  }
  std::string_view name = image;
  std::string_view digest;
  if (const auto at = image.find('@'); at != std::string_view::npos) {
    name = image.substr(0, at);
    digest = image.substr(at + 1);
    const auto colon = digest.find(':');
    if (colon == std::string_view::npos || colon == 0 || colon + 1 >= digest.size()) {
      return bad("digest must be algorithm:hex");
    }
    for (unsigned char c : digest.substr(colon + 1)) {
      if (!std::isxdigit(c) || std::isupper(c)) return bad("digest must be lower-case hex");
    }
    if (digest.substr(0, colon) == "sha256" && digest.size() - colon - 1 != 64) {
      return bad("a sha256 digest has 64 hex digits");
    }
  }
  // A tag follows the last ':' after the last '/' (a ':' before it is a registry port).
  std::string_view repository = name;
  const auto slash = name.rfind('/');
  const auto colon = name.rfind(':');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    repository = name.substr(0, colon);
    const auto tag = name.substr(colon + 1);
    if (tag.empty() || tag.size() > 128 || tag[0] == '.' || tag[0] == '-')
      return bad("malformed tag");
  }
  if (repository.empty()) return bad("no repository");
  std::size_t start = 0;
  bool first = true;
  while (start <= repository.size()) {
    auto end = repository.find('/', start);
    if (end == std::string_view::npos) end = repository.size();
    const auto part = repository.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return bad("empty or relative path component");
    if (!std::isalnum(static_cast<unsigned char>(part.front())) ||
        !std::isalnum(static_cast<unsigned char>(part.back()))) {
      return bad("path components must start and end with a letter or digit");
    }
    // The first component may be a registry host (upper case and ports allowed); the rest of
    // the repository path is lower case, as the engine requires.
    const bool registry = first && end != repository.size() &&
                          (part.find('.') != std::string_view::npos ||
                           part.find(':') != std::string_view::npos || part == "localhost");
    if (!registry) {
      for (unsigned char c : part) {
        if (std::isupper(c) || c == ':') return bad("repository must be lower case");
      }
    }
    first = false;
    start = end + 1;
  }
  return {};
}

bool image_allowed(std::string_view image, const std::vector<std::string>& allowlist) {
  // The repository: the reference without its tag or digest.
  std::string_view repository = image.substr(0, image.find('@'));
  const auto slash = repository.rfind('/');
  const auto colon = repository.rfind(':');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    repository = repository.substr(0, colon);
  }
  for (const auto& entry : allowlist) {
    if (entry.empty()) continue;
    if (entry == "*") return true;
    const char last = entry.back();
    if (last == '/' || last == ':' || last == '@') {
      // A prefix that ends on a boundary: "ghcr.io/org/" never matches "ghcr.io/org-evil/".
      if (image.substr(0, entry.size()) == entry && image.size() > entry.size()) return true;
    } else if (repository == entry) {
      // A bare repository allows any tag or digest of exactly that repository.
      return true;
    }
  }
  return false;
}

}  // namespace corral::actors
