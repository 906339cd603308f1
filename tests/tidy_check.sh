#!/usr/bin/env bash
# clang-tidy (the repository's .clang-tidy) on the C++ sources a change touches: every finding
# is an error. A whole-tree run takes too long on two cores for every CI run, so CI checks the
# files changed since the commit in .ci/tidy-base — the last commit CI judged before this
# change; whoever starts a new change moves it there (`git rev-parse HEAD > .ci/tidy-base`).
#
#   tests/tidy_check.sh              the files changed since .ci/tidy-base (committed or not)
#   tests/tidy_check.sh --all        every source of actors/, docker/, messages/, app/
#   tests/tidy_check.sh FILE...      these files
#
# Needs the main build's compile database (build/compile_commands.json, app/build.sh makes it).
# The database is GCC's; clang-tidy reads it without GCC's precompiled headers, which clang
# cannot load. A header is checked through the sources that include it (.clang-tidy's
# HeaderFilterRegex): a changed header brings its own .cpp; a header without one is checked
# through the changed sources that include it.
# Exit code: 0 when nothing was found, 1 otherwise (the findings are printed), 2 when the base
# commit is not in this clone (nothing checked; run.sh reports the part as skipped).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
log() { printf '[corral-tidy] %s\n' "$*" >&2; }

command -v clang-tidy >/dev/null || { log "clang-tidy not found (app/setup.sh installs it)"; exit 1; }
[[ -f build/compile_commands.json ]] || { log "no build/compile_commands.json: run app/build.sh"; exit 1; }

# The compile database without the precompiled-header flags.
db_dir="build/tidy"
mkdir -p "${db_dir}"
sed -e 's/-include [^ ]*cmake_pch\.hxx//g' -e 's/-Winvalid-pch//g' \
  build/compile_commands.json > "${db_dir}/compile_commands.json"

product='^(actors|docker|messages|app)/'
if [[ ${1:-} == --all ]]; then
  mapfile -t candidates < <(git ls-files '*.cpp' | grep -E "${product}")
elif (($# > 0)); then
  candidates=("$@")
else
  base=$(tr -d '[:space:]' < .ci/tidy-base)
  if ! git cat-file -e "${base}^{commit}" 2>/dev/null; then
    log "SKIPPED: .ci/tidy-base names ${base}, which this clone does not have (a shallow clone?)"
    exit 2
  fi
  # A base off this history would pick an arbitrary set of files.
  git merge-base --is-ancestor "${base}" HEAD ||
    { log ".ci/tidy-base: ${base} is not an ancestor of HEAD"; exit 1; }
  mapfile -t candidates < <({ git diff --name-only "${base}" -- '*.cpp' '*.hpp'; git ls-files --others --exclude-standard '*.cpp' '*.hpp'; } | sort -u | grep -E "${product}" || true)
fi

# Sources only: a changed header brings its own .cpp, if it has one (bringing every source
# that includes it would be most of the tree for a header of messages/ or docker/).
sources=()
for f in "${candidates[@]}"; do
  [[ ${f} == *.hpp ]] && f="${f%.hpp}.cpp"
  [[ -f ${f} ]] && sources+=("${f}")
done
files=()
for f in "${sources[@]}"; do
  [[ " ${files[*]} " == *" ${f} "* ]] && continue
  if ! grep -q -F "\"file\": \"${ROOT}/${f}\"" "${db_dir}/compile_commands.json"; then
    # app/agent/ is built static and apart; anything else the build does not compile is odd.
    [[ ${f} == app/agent/* || ${f} == app/examples/* ]] && continue
    log "FAILED: ${f} is not in the compile database (is build/ configured from this checkout?)"
    exit 1
  fi
  files+=("${f}")
done
if ((${#files[@]} == 0)); then
  log "no changed sources to check"
  exit 0
fi

# One run per file, each with its own output and exit code: a finding (all are errors here) or
# a crash of clang-tidy fails the file.
log "clang-tidy on ${#files[@]} files: ${files[*]}"
out=$(mktemp -d)
trap 'rm -rf "${out}"' EXIT
for i in "${!files[@]}"; do printf '%s %s\n' "${i}" "${files[i]}"; done |
  xargs -P "$(nproc)" -L 1 sh -c \
    'clang-tidy -p "$1" --quiet --warnings-as-errors="*" "$4" > "$2/$3.out" 2>&1; echo $? > "$2/$3.rc"' \
    _ "${db_dir}" "${out}"
failed=()
for i in "${!files[@]}"; do
  rc=$(cat "${out}/${i}.rc" 2>/dev/null || echo missing)
  if [[ ${rc} != 0 ]]; then
    failed+=("${files[i]}")
    grep -E -A3 ': (warning|error): ' "${out}/${i}.out" >&2 || tail -20 "${out}/${i}.out" >&2
  fi
done
if ((${#failed[@]} > 0)); then
  log "FAILED: ${#failed[@]} of ${#files[@]} files: ${failed[*]}"
  exit 1
fi
log "clean: ${#files[@]} files"
