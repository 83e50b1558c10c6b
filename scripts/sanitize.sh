#!/usr/bin/env bash
# Builds kvlab and its whole test suite with AddressSanitizer + UndefinedBehaviorSanitizer
# (-DKVLAB_SANITIZE=address,undefined; the first report stops the process) into build-asan/ and runs
# every test there. Arguments go to ctest, e.g. `scripts/sanitize.sh -R Safetensors`.
# LibTorch, OpenMP and the other system libraries are not instrumented (reports inside them are
# suppressed only where scripts/sanitizers/*.supp says why); the SentencePiece shim is loaded into a
# namespace of its own under ASan (framework/src/tokenizer/sentencepiece_library.cpp).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/sanitizers/env.sh
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
start=$(date +%s)
if [[ ! -f build-asan/CMakeCache.txt ]]; then
  cmake -S . -B build-asan "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DKVLAB_SANITIZE=address,undefined -DKVLAB_BENCH=OFF
fi
cmake --build build-asan -j"$(nproc)"
built=$(date +%s)
status=0
ctest --test-dir build-asan --output-on-failure -j"$(nproc)" "$@" || status=$?
done_at=$(date +%s)
echo "sanitize: build $((built - start)) s, tests $((done_at - built)) s"
exit $status
