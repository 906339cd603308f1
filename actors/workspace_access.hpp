// Access for a sandbox's user to its workspace on an engine that remaps user namespaces:
// there the sandbox's uid is a host uid no host user has (e.g. 1000 -> 101000), which the
// workspace's modes do not name. POSIX ACL entries name it instead.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace corral::actors {

struct workspace_grant {
  uint64_t entries = 0;    // files and directories given the entry
  bool truncated = false;  // the tree had more than the bound: the rest is as it was
};

struct workspace_user {
  uint32_t host_uid = 0;
  bool writable = false;
};

// Gives each user read (and, if writable, write) access to the tree of the directory the
// policy checked (`root`, which must still be that device and inode), never through a link nor
// into another mount: an access ACL entry on each file and directory, and on each directory
// default entries for them and for the directory's owner, so what either side writes there
// later stays open to the other (the host owner keeps access to what the sandbox wrote). At
// most `max_entries` files and directories. Blocking file-system work: never on an actor's
// thread. Returns why it failed (the root itself could not be given access).
std::optional<std::string> grant_workspace_access(const std::string& root, uint64_t device,
                                                  uint64_t inode,
                                                  const std::vector<workspace_user>& users,
                                                  uint64_t max_entries, workspace_grant& done);

// Whether anyone but root, `owner` and the uids [mapped_first, mapped_first + mapped_count)
// (the engine's remapped range; count 0: none) may write `path` through its ACL, which it must
// have beyond its mode (the group bits are then the ACL's mask). nullopt: the ACL cannot be
// read (as if writable). For a path without an extended ACL, ask its mode instead.
std::optional<bool> acl_writable_by_others(const std::string& path, uint32_t owner,
                                           uint32_t mapped_first, uint32_t mapped_count);
bool has_extended_acl(const std::string& path);

}  // namespace corral::actors
