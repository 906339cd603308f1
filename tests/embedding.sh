#!/usr/bin/env bash
# Installs corral from the build tree into a staging prefix, builds the embedding example
# against the installed package (find_package(corral)), and runs it on the real engine.
# Usage: tests/embedding.sh BUILD_DIR
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$1"
STAGE="${BUILD}/embedding/stage"
rm -rf "${BUILD}/embedding"
cmake --install "${BUILD}" --prefix "${STAGE}" >/dev/null
cmake -S "${ROOT}/app/examples/embed" -B "${BUILD}/embedding/build" -G Ninja \
  -DCMAKE_PREFIX_PATH="${STAGE}" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "${BUILD}/embedding/build"
out=$("${BUILD}/embedding/build/embed_example")
echo "${out}"
grep -q "embedded in" <<<"${out}"
grep -q "embed_example: exit 0" <<<"${out}"
left=$(docker ps -aq --filter label=corral.runtime=embed-example)
if [[ -n ${left} ]]; then
  echo "embedding example left containers: ${left}" >&2
  docker rm -f ${left} >/dev/null
  exit 1
fi
