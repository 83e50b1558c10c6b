#!/usr/bin/env bash
# Configures and builds kvlab into ./build (Release, Ninja when available). Extra arguments go to
# the configure step, e.g. -DKVLAB_BENCH=OFF or -DCMAKE_PREFIX_PATH=<torch cmake dir> on a GPU box.
set -euo pipefail
cd "$(dirname "$0")/.."
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [[ ! -f build/CMakeCache.txt ]]; then
  cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$@"
elif (($#)); then
  cmake -S . -B build "$@"
fi
cmake --build build -j"$(nproc)"
