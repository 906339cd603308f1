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
# HeaderFilterRegex): a changed header brings its own .cpp, if it has one.
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
  mapfile -t candidates < <({ git diff --name-only "${base}" -- '*.cpp' '*.hpp'; git ls-files --others --exclude-standard '*.cpp' '*.hpp'; } | sort -u | grep -E "${product}" || true)
fi

# Sources only (a header stands for its .cpp), those that exist and that the build compiles.
files=()
for f in "${candidates[@]}"; do
  [[ ${f} == *.hpp ]] && f="${f%.hpp}.cpp"
  [[ -f ${f} ]] || continue
  grep -q "\"file\": \"${ROOT}/${f}\"" "${db_dir}/compile_commands.json" || continue
  [[ " ${files[*]} " == *" ${f} "* ]] || files+=("${f}")
done
if ((${#files[@]} == 0)); then
  log "no changed sources to check"
  exit 0
fi

log "clang-tidy on ${#files[@]} files: ${files[*]}"
out=$(mktemp)
trap 'rm -f "${out}"' EXIT
printf '%s\n' "${files[@]}" |
  xargs -P "$(nproc)" -I{} sh -c 'clang-tidy -p "$1" --quiet "$2" 2>/dev/null || true' _ "${db_dir}" {} > "${out}"
findings=$(grep -cE ': (warning|error): ' "${out}" || true)
if ((findings > 0)); then
  grep -E -A3 ': (warning|error): ' "${out}" >&2
  log "FAILED: ${findings} findings in ${#files[@]} files"
  exit 1
fi
log "clean: ${#files[@]} files"
