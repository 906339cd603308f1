#!/usr/bin/env bash
# Every C++ source of the repository is as clang-format (the repository's .clang-format) would
# write it; prints the files that are not and the command that fixes them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v clang-format >/dev/null || { echo "clang-format not found (app/setup.sh installs it)" >&2; exit 1; }
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files '*.cpp' '*.hpp')
else
  mapfile -t files < <(find actors app docker messages tests -name '*.cpp' -o -name '*.hpp')
fi
((${#files[@]} > 0)) || { echo "no sources found" >&2; exit 1; }
bad=()
for f in "${files[@]}"; do
  clang-format --dry-run -Werror "${f}" >/dev/null 2>&1 || bad+=("${f}")
done
if ((${#bad[@]} > 0)); then
  printf 'not clang-formatted (%d of %d files): %s\nfix: clang-format -i %s\n' "${#bad[@]}" \
    "${#files[@]}" "${bad[*]}" "${bad[*]}" >&2
  exit 1
fi
echo "clang-format: ${#files[@]} files clean"
