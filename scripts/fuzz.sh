#!/usr/bin/env bash
# libFuzzer on kvlab's parsers (tests/fuzz/), built with clang, ASan and UBSan into build-fuzz/.
#   scripts/fuzz.sh [--time SECONDS] [TARGET...]   every target (or those named), one at a time,
#                                                  SECONDS each (default 600)
#   scripts/fuzz.sh --ci                           what CI runs: the parser and kernel tests under the
#                                                  sanitizers, then each parser target for 20 s from a
#                                                  fixed seed (-seed=1) and only the committed seeds,
#                                                  so a CI run repeats one a developer ran here
#   scripts/fuzz.sh --seed N ...                   a fixed libFuzzer seed (default: random)
# Each target starts from its committed seeds (tests/fuzz/corpus/<target>/); inputs it finds that
# reach new code go to build-fuzz/corpus/<target>/ (not committed). A crash, leak, sanitizer report,
# timeout (10 s) or an allocation over 2 GB stops the target, leaves the input in
# build-fuzz/findings/ and fails the script; make it a regression test (tests/fuzz/regressions/).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/sanitizers/env.sh

ci=0
seconds=600
seed=0
targets=()
while (($#)); do
  case "$1" in
    --ci) ci=1; seconds=20; seed=1 ;;
    --seed) seed="$2"; shift ;;
    --time) seconds="$2"; shift ;;
    *) targets+=("$1") ;;
  esac
  shift
done

parser_targets=(fuzz_safetensors fuzz_model_config fuzz_bpe_tokenizer fuzz_sentencepiece fuzz_llama2c_tokenizer
                fuzz_llama2c_model fuzz_plan_file fuzz_kvmix_plan fuzz_longbench_records fuzz_longbench_predictions fuzz_gguf)
core_targets=(fuzz_experiment_spec fuzz_gguf_model)
if ((${#targets[@]} == 0)); then
  targets=("${parser_targets[@]}")
  ((ci)) || targets+=("${core_targets[@]}")
fi

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
start=$(date +%s)
if [[ ! -f build-fuzz/CMakeCache.txt ]]; then
  cmake -S . -B build-fuzz "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_CXX_COMPILER=clang++ \
        -DKVLAB_SANITIZE=address,undefined -DKVLAB_FUZZ=ON -DKVLAB_TESTS=OFF -DKVLAB_BENCH=OFF
fi
build_targets=("${targets[@]}")
((ci)) && build_targets+=(kvlab_parser_tests)
cmake --build build-fuzz -j"$(nproc)" --target "${build_targets[@]}"
echo "fuzz: build $(( $(date +%s) - start )) s"

if ((ci)); then
  t0=$(date +%s)
  build-fuzz/kvlab_parser_tests --gtest_brief=1
  echo "fuzz: parser and kernel tests under ASan+UBSan $(( $(date +%s) - t0 )) s"
fi

mkdir -p build-fuzz/findings build-fuzz/logs
failed=()
for t in "${targets[@]}"; do
  # CI starts from the committed seeds alone (a fresh, empty corpus folder), so that with the fixed
  # seed its run is the same wherever it runs; what it finds there is kept out of build-fuzz/corpus.
  corpus="build-fuzz/corpus/$t"
  ((ci)) && corpus="build-fuzz/corpus-ci/$t" && rm -rf "$corpus"
  mkdir -p "$corpus"
  log="build-fuzz/logs/$t.log"
  # Known crashers stay fixed: each regression input must run clean first.
  if compgen -G "tests/fuzz/regressions/$t/*" >/dev/null; then
    "build-fuzz/fuzz/$t" tests/fuzz/regressions/"$t"/* >"$log.regressions" 2>&1 ||
      { failed+=("$t (regression input)"); tail -30 "$log.regressions"; continue; }
  fi
  if "build-fuzz/fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
       -seed="$seed" -print_final_stats=1 -artifact_prefix="build-fuzz/findings/$t-" \
       "$corpus" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    echo "fuzz: $t: $execs runs in ${seconds} s, clean"
  else
    failed+=("$t")
    echo "fuzz: $t: FAILED (log $log)"
    tail -40 "$log"
  fi
done
if ((${#failed[@]})); then
  echo "fuzz: failed: ${failed[*]}"
  exit 1
fi
