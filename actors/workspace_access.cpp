#include "actors/workspace_access.hpp"

#include <acl/libacl.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/acl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace corral::actors {

namespace {

// The permissions of `acl`'s mask entry, if it has one.
bool mask_of(acl_t acl, acl_entry_t& mask) {
  for (int which = ACL_FIRST_ENTRY; acl_get_entry(acl, which, &mask) == 1; which = ACL_NEXT_ENTRY) {
    acl_tag_t tag;
    if (acl_get_tag_type(mask, &tag) == 0 && tag == ACL_MASK) return true;
  }
  return false;
}

// Sets the permissions of `uid`'s entry in `acl` (adding it if there is none). The mask only
// grows by what this entry needs: recomputing it would also unmask what the owner's mask held
// back from other named entries or the owning group.
bool set_user_entry(acl_t& acl, uid_t uid, bool write, bool exec) {
  acl_entry_t entry;
  bool found = false;
  for (int which = ACL_FIRST_ENTRY; !found && acl_get_entry(acl, which, &entry) == 1;
       which = ACL_NEXT_ENTRY) {
    acl_tag_t tag;
    if (acl_get_tag_type(entry, &tag) != 0 || tag != ACL_USER) continue;
    auto* q = static_cast<uid_t*>(acl_get_qualifier(entry));
    found = q && *q == uid;
    acl_free(q);
  }
  if (!found && (acl_create_entry(&acl, &entry) != 0 || acl_set_tag_type(entry, ACL_USER) != 0 ||
                 acl_set_qualifier(entry, &uid) != 0))
    return false;
  acl_permset_t perms;
  if (acl_get_permset(entry, &perms) != 0) return false;
  acl_clear_perms(perms);
  acl_add_perm(perms, ACL_READ);
  if (write) acl_add_perm(perms, ACL_WRITE);
  if (exec) acl_add_perm(perms, ACL_EXECUTE);
  if (acl_set_permset(entry, perms) != 0) return false;
  acl_entry_t mask;
  if (!mask_of(acl, mask)) return acl_calc_mask(&acl) == 0;  // a minimal ACL held nothing back
  acl_permset_t mask_perms;
  if (acl_get_permset(mask, &mask_perms) != 0) return false;
  if (write && acl_get_perm(mask_perms, ACL_WRITE) != 1) {
    // The mask is shared by every group-class entry: granting write through it would also
    // give write to an entry the owner's mask holds back. Refused rather than widened.
    acl_entry_t other;
    for (int which = ACL_FIRST_ENTRY; acl_get_entry(acl, which, &other) == 1;
         which = ACL_NEXT_ENTRY) {
      acl_tag_t tag;
      acl_permset_t p;
      if (acl_get_tag_type(other, &tag) != 0 || acl_get_permset(other, &p) != 0) continue;
      if (tag != ACL_GROUP_OBJ && tag != ACL_GROUP && tag != ACL_USER) continue;
      if (tag == ACL_USER) {
        auto* q = static_cast<uid_t*>(acl_get_qualifier(other));
        const bool ours = q && *q == uid;
        acl_free(q);
        if (ours) continue;
      }
      if (acl_get_perm(p, ACL_WRITE) == 1) {
        errno = EPERM;
        return false;
      }
    }
  }
  acl_add_perm(mask_perms, ACL_READ);
  if (write) acl_add_perm(mask_perms, ACL_WRITE);
  if (exec) acl_add_perm(mask_perms, ACL_EXECUTE);
  return acl_set_permset(mask, mask_perms) == 0;
}

struct walker {
  std::vector<workspace_user> users;
  uint64_t max_entries = 0;
  dev_t device = 0;
  workspace_grant* done = nullptr;
  std::string first_error;

  void failed(const std::string& what) {
    if (first_error.empty()) first_error = what + ": " + std::strerror(errno);
  }

  // `fd` is open on the file or directory itself (never through a link): its ACLs are set
  // on it, the default ACL through its /proc/self/fd name, which names that very inode.
  bool grant(int fd, const struct stat& st, const std::string& shown) {
    const bool dir = S_ISDIR(st.st_mode);
    const bool exec = dir || (st.st_mode & S_IXUSR) != 0;
    acl_t acl = acl_get_fd(fd);
    bool ok = acl != nullptr;
    for (const auto& u : users) ok = ok && set_user_entry(acl, u.host_uid, u.writable, exec);
    ok = ok && acl_set_fd(fd, acl) == 0;
    if (acl) acl_free(acl);
    if (ok && dir) {
      const std::string self_path = "/proc/self/fd/" + std::to_string(fd);
      acl_t def = acl_get_file(self_path.c_str(), ACL_TYPE_DEFAULT);
      if (def && acl_entries(def) <= 0) {
        acl_free(def);
        def = nullptr;
      }
      if (!def) def = acl_from_mode(st.st_mode);
      ok = def != nullptr;
      for (const auto& u : users) ok = ok && set_user_entry(def, u.host_uid, u.writable, true);
      // The directory's owner: what the sandbox makes here stays open to them.
      ok = ok && set_user_entry(def, st.st_uid, true, true) &&
           acl_set_file(self_path.c_str(), ACL_TYPE_DEFAULT, def) == 0;
      if (def) acl_free(def);
    }
    if (!ok) failed(shown);
    if (ok) ++done->entries;
    return ok;
  }

  void walk(int dir_fd, const std::string& shown, int depth) {
    if (depth > 64) return;
    const int list_fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
    DIR* d = list_fd < 0 ? nullptr : fdopendir(list_fd);
    if (!d) {
      if (list_fd >= 0) close(list_fd);
      return failed(shown);
    }
    while (dirent* e = readdir(d)) {
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      if (done->entries >= max_entries) {
        done->truncated = true;
        break;
      }
      struct stat st {};
      if (fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      // Links, devices, sockets and other mounts are left as they are.
      if ((!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) || st.st_dev != device) continue;
      const int fd = openat(
          dir_fd, e->d_name,
          O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0));
      if (fd < 0) continue;
      // What was opened is what was looked at (not something renamed into its place).
      struct stat opened {};
      if (fstat(fd, &opened) != 0 || opened.st_dev != st.st_dev || opened.st_ino != st.st_ino) {
        close(fd);
        continue;
      }
      const std::string name = shown + "/" + e->d_name;
      if (grant(fd, st, name) && S_ISDIR(st.st_mode)) walk(fd, name, depth + 1);
      close(fd);
    }
    closedir(d);
  }
};

}  // namespace

std::optional<std::string> grant_workspace_access(const std::string& root, uint64_t device,
                                                  uint64_t inode,
                                                  const std::vector<workspace_user>& users,
                                                  uint64_t max_entries, workspace_grant& done) {
  walker w;
  // One entry per uid: a root sandbox user is the agent's own uid, and writable wins.
  for (const auto& u : users) {
    auto same = std::find_if(w.users.begin(), w.users.end(),
                             [&](const workspace_user& x) { return x.host_uid == u.host_uid; });
    if (same == w.users.end())
      w.users.push_back(u);
    else
      same->writable = same->writable || u.writable;
  }
  w.max_entries = max_entries;
  w.done = &done;
  const int fd = open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return root + ": " + std::strerror(errno);
  struct stat st {};
  // The directory the policy checked, not whatever the path names now: anything else and no
  // entry is given anywhere.
  if (fstat(fd, &st) != 0 || st.st_dev != device || st.st_ino != inode) {
    close(fd);
    return root + ": changed between the check and the grant";
  }
  w.device = st.st_dev;
  const bool ok = w.grant(fd, st, root);
  if (ok) w.walk(fd, root, 1);
  close(fd);
  if (!ok) return w.first_error;
  return std::nullopt;
}

bool has_extended_acl(const std::string& path) {
  return acl_extended_file_nofollow(path.c_str()) == 1;
}

std::optional<bool> acl_writable_by_others(const std::string& path, uint32_t owner,
                                           uint32_t mapped_first, uint32_t mapped_count) {
  acl_t acl = acl_get_file(path.c_str(), ACL_TYPE_ACCESS);
  if (!acl) return std::nullopt;
  bool mask_writes = true;
  acl_entry_t entry;
  for (int which = ACL_FIRST_ENTRY; acl_get_entry(acl, which, &entry) == 1;
       which = ACL_NEXT_ENTRY) {
    acl_tag_t tag;
    acl_permset_t perms;
    if (acl_get_tag_type(entry, &tag) == 0 && tag == ACL_MASK &&
        acl_get_permset(entry, &perms) == 0)
      mask_writes = acl_get_perm(perms, ACL_WRITE) == 1;
  }
  bool others = false;
  for (int which = ACL_FIRST_ENTRY; !others && acl_get_entry(acl, which, &entry) == 1;
       which = ACL_NEXT_ENTRY) {
    acl_tag_t tag;
    acl_permset_t perms;
    if (acl_get_tag_type(entry, &tag) != 0 || acl_get_permset(entry, &perms) != 0) continue;
    if (acl_get_perm(perms, ACL_WRITE) != 1) continue;
    switch (tag) {
      case ACL_OTHER:
        others = true;
        break;
      case ACL_GROUP_OBJ:
      case ACL_GROUP:
        others = mask_writes;
        break;
      case ACL_USER: {
        auto* q = static_cast<uid_t*>(acl_get_qualifier(entry));
        const uid_t uid = q ? *q : 0;
        acl_free(q);
        const bool mapped =
            mapped_count > 0 && uid >= mapped_first && uid - mapped_first < mapped_count;
        others = mask_writes && uid != 0 && uid != owner && !mapped;
        break;
      }
      default:
        break;
    }
  }
  acl_free(acl);
  return others;
}

}  // namespace corral::actors
