#!/usr/bin/env bash
# Configures and builds kvlab into ./build (Release, Ninja when available).
#   ./scripts/build.sh            everything: the kvlab command, the tests and the benchmarks
#   ./scripts/build.sh kvlab      only the kvlab command (what the quickstart needs; the first result
#                                 comes sooner)
# Other words are build targets; arguments starting with - go to the configure step, e.g.
# -DKVLAB_BENCH=OFF or -DCMAKE_PREFIX_PATH=<torch cmake dir> on a GPU box.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=()
configure=()
for a in "$@"; do
  if [[ "$a" == -* ]]; then configure+=("$a"); else targets+=(--target "$a"); fi
done
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [[ ! -f build/CMakeCache.txt ]]; then
  cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "${configure[@]}"
elif ((${#configure[@]})); then
  cmake -S . -B build "${configure[@]}"
fi
cmake --build build -j"$(nproc)" "${targets[@]}"
