#!/usr/bin/env bash
# Every device check of the CUDA path in one call, on the GPU machine, with what
# scripts/build-gpu.sh staged here (device run: command "scripts/run-gpu.sh", carry
# ["build-gpu/stage"], timeout_s ~480):
#   1 probe       nvidia-smi, the device's torch, missing libraries
#   2 tests       cuda_kernel_tests (the kernels against the CPU reference, 32K-token case included)
#   3 memcheck    compute-sanitizer --tool memcheck on a small filter of those tests (and racecheck)
#   4 bandwidth   cuda_kernel_bench: copy ceiling, packed attention GB/s at 4K/32K/128K, 2/4 bits
#   5 vs fp16     kvlab_cuda_attention_bench: the runtime's GPU attention vs LibTorch's fp16 SDPA
#   6 cache       kvlab_tests CUDA cache tests (the quantized cache on the GPU vs on the CPU)
#   7 end to end  kvlab bench throughput --shape llama2-7b --random --device cuda: fp16, KIVI-2,
#                 KVmix K2.19/V2.38 (when the kvlab staged has that command)
# then a summary table, last. Logs go to $OUT (the device tool's folder; 8 files at most come back)
# or build-gpu/out.
# Exit: 0 every check passed, 1 a check failed, 77 no usable GPU (stops after the probe).
# KVLAB_GPU_QUICK=1: shorter bench runs; KVLAB_E2E_GEN (default 256) generated tokens per sequence.
set -uo pipefail
cd "$(dirname "$0")/.."
STAGE=${KVLAB_GPU_STAGE:-build-gpu/stage}
LOG=${OUT:-build-gpu/out}
mkdir -p "$LOG"
BIN=$STAGE/bin
summary=()
note() { summary+=("$(printf '%-12s %-8s %s' "$1" "$2" "$3")"); }
print_summary() {
  echo
  echo "================ run-gpu summary ($(sed -n 's/^git_rev=//p' "$STAGE/BUILD_INFO" 2>/dev/null)) ================"
  printf '%-12s %-8s %s\n' check result detail
  for line in "${summary[@]}"; do echo "$line"; done
}

if [[ ! -x $BIN/cuda_kernel_tests ]]; then
  echo "run-gpu: no staged build at $STAGE (run scripts/build-gpu.sh first, and carry build-gpu/stage)"
  exit 2
fi

# ---- 1 probe ---------------------------------------------------------------------------------
echo "== probe"
cat "$STAGE/BUILD_INFO"
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv; fi
probe_log=$(mktemp)
"$BIN/cuda_kernel_tests" --gtest_list_tests > "$probe_log" 2>&1
rc=$?
if ((rc == 77)); then
  cat "$probe_log"
  note probe "no GPU" "$(head -1 "$probe_log")"
  print_summary
  echo "run-gpu: no device; nothing measured"
  exit 77
fi
# The device's LibTorch and its CUDA libraries (python3 there holds torch 2.11.0+cu130).
TORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)
TORCH_VER=$(python3 -c 'import torch; print(torch.__version__, torch.version.git_version[:10])' 2>/dev/null)
NV_LIBS=$(python3 -c 'import glob, os, torch; s = os.path.dirname(os.path.dirname(torch.__file__)); print(":".join(sorted(glob.glob(s + "/nvidia/*/lib") + glob.glob(s + "/nvidia/*/*/lib"))))' 2>/dev/null)
export LD_LIBRARY_PATH="$PWD/$STAGE/lib:${TORCH_LIB}:${NV_LIBS}:${LD_LIBRARY_PATH:-}"
echo "torch: $TORCH_VER ($TORCH_LIB)"
# Paths compiled into the binaries (the source tree, the sentencepiece shim, the kvlab binary)
# point at the build machine's checkout: make them resolve to this one.
SRC=$(sed -n 's/^source_dir=//p' "$STAGE/BUILD_INFO")
BLD=$(sed -n 's/^build_dir=//p' "$STAGE/BUILD_INFO")
if [[ -n $SRC && $SRC != "$PWD" && ! -e $SRC ]]; then mkdir -p "$(dirname "$SRC")" && ln -s "$PWD" "$SRC"; fi
if [[ -n $BLD ]]; then
  mkdir -p "$BLD" 2>/dev/null
  for f in kvlab libkvlab_sentencepiece.so; do [[ -e $BLD/$f ]] || ln -s "$PWD/$BIN/$f" "$BLD/$f" 2>/dev/null; done
fi
missing=$(ldd "$BIN"/* 2>/dev/null | grep 'not found' | sort -u | tr -s ' \t' ' ')
note probe ok "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1); torch $TORCH_VER${missing:+; MISSING:$missing}"
[[ -n $missing ]] && echo "missing libraries: $missing"
status=0

# ---- 2 kernel tests ----------------------------------------------------------------------------
echo "== kernel tests"
"$BIN/cuda_kernel_tests" 2>&1 | tee "$LOG/kernel_tests.log"
rc=${PIPESTATUS[0]}
counts=$(grep -E '^\[  (PASSED|FAILED)  \]' "$LOG/kernel_tests.log" | head -2 | tr '\n' ' ')
note "tests" "$([[ $rc == 0 ]] && echo pass || echo FAIL)" "$counts $(grep -h 'worst relative error' "$LOG/kernel_tests.log" | tr '\n' ';')"
((rc != 0)) && status=1

# ---- 3 memcheck --------------------------------------------------------------------------------
echo "== compute-sanitizer memcheck"
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [[ -x $SAN ]]; then
  "$SAN" --tool memcheck --leak-check full --error-exitcode 3 "$BIN/cuda_kernel_tests" \
    --gtest_filter='CudaQuantize.*:CudaDecodeAttention.KiviLayout*:CudaDecodeAttention.MixKvq*:CudaDecodeAttention.Empty*:CudaDecodeAttention.SplitCounts*' \
    > "$LOG/sanitizer.log" 2>&1
  rc=$?
  tail -5 "$LOG/sanitizer.log"
  note memcheck "$([[ $rc == 0 ]] && echo clean || echo FAIL)" "$(grep -E 'ERROR SUMMARY' "$LOG/sanitizer.log" | tail -1)"
  ((rc != 0)) && status=1
  # Races between the block's threads (the host emulator cannot show them): a smaller filter.
  "$SAN" --tool racecheck --error-exitcode 3 "$BIN/cuda_kernel_tests" \
    --gtest_filter='CudaDecodeAttention.MixedKeyAndValueWidths:CudaQuantize.OddGroups*' > "$LOG/racecheck.tmp" 2>&1
  rc=$?
  note racecheck "$([[ $rc == 0 ]] && echo clean || echo FAIL)" "$(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$LOG/racecheck.tmp" | tail -1)"
  { echo "==== racecheck"; cat "$LOG/racecheck.tmp"; } >> "$LOG/sanitizer.log" && rm -f "$LOG/racecheck.tmp"
  ((rc != 0)) && status=1
else
  note memcheck skipped "compute-sanitizer not found"
fi

# ---- 4 bandwidth -------------------------------------------------------------------------------
echo "== kernel bandwidth"
"$BIN/cuda_kernel_bench" ${KVLAB_GPU_QUICK:+--quick} 2>&1 | tee "$LOG/kernel_bench.log"
rc=${PIPESTATUS[0]}
((rc != 0)) && status=1
note "copy" "$([[ $rc == 0 ]] && echo ok || echo FAIL)" "$(grep -E '^copy bandwidth' "$LOG/kernel_bench.log")"
while read -r _ _ shape S bits _ batch _ us _ gbs _ pct; do
  note "attn" "" "$(printf '%-10s %6s tok %s-bit batch %-4s %8s us %7s GB/s %5s%% of copy' "$shape" "$S" "$bits" "$batch" "$us" "$gbs" "$pct")"
done < <(grep '^RESULT attn' "$LOG/kernel_bench.log")

staged() { [[ -x $BIN/$1 ]] || { note "$2" "n/a" "$1 not staged (KVLAB_GPU_TARGETS left it out)"; return 1; }; }

# ---- 5 against fp16 SDPA ------------------------------------------------------------------------
echo "== runtime attention vs fp16 SDPA"
staged kvlab_cuda_attention_bench vs-sdpa && "$BIN/kvlab_cuda_attention_bench" ${KVLAB_GPU_QUICK:+--quick} 2>&1 | tee "$LOG/attention_bench.log"
rc=${PIPESTATUS[0]:-0}
[[ -x $BIN/kvlab_cuda_attention_bench ]] && ((rc != 0)) && status=1 && note "vs-sdpa" FAIL "exit $rc"
while read -r _ _ shape S bits _ batch _ us _ gbs _ speedup; do
  note "vs-sdpa" "" "$(printf '%-10s %6s tok kivi-%s batch %-4s %8s us %7s GB/s %6sx fp16' "$shape" "$S" "$bits" "$batch" "$us" "$gbs" "$speedup")"
done < <(grep -s '^RESULT packed' "$LOG/attention_bench.log")

# ---- 6 the cache on the GPU ---------------------------------------------------------------------
echo "== CUDA cache tests"
if staged kvlab_tests cache; then
  "$BIN/kvlab_tests" --gtest_filter='CudaCache.*:QuantizedStreamTensorOps.*' 2>&1 | tee "$LOG/cache_tests.log"
  rc=${PIPESTATUS[0]}
  note cache "$([[ $rc == 0 ]] && echo pass || echo FAIL)" "$(grep -E '^\[  (PASSED|FAILED|SKIPPED)' "$LOG/cache_tests.log" | tr '\n' ' ')"
  ((rc != 0)) && status=1
fi

# ---- 7 end to end ---------------------------------------------------------------------------------
echo "== end-to-end throughput"
if ! staged kvlab throughput; then
  :
elif "$BIN/kvlab" bench throughput --help > /dev/null 2>&1; then
  "$BIN/kvlab" bench throughput --shape llama2-7b --random --dtype float16 --device cuda \
    --prompt-len 688 --gen-len "${KVLAB_E2E_GEN:-256}" --batch max --memory-budget 80 --budget process \
    --methods fp16,kivi-2,kvmix-random-k2.19v2.38 --json "$LOG/throughput.json" --csv "$LOG/throughput.csv" \
    2>&1 | tee "$LOG/throughput.log"
  rc=${PIPESTATUS[0]}
  note throughput "$([[ $rc == 0 ]] && echo ok || echo FAIL)" "llama2-7b random, 688+${KVLAB_E2E_GEN:-256}, max batch under 80 GiB: see throughput.csv"
  [[ -f $LOG/throughput.csv ]] && while IFS= read -r l; do note "" "" "$l"; done < "$LOG/throughput.csv"
  ((rc != 0)) && status=1
else
  note throughput "n/a" "this kvlab has no 'bench throughput' command"
fi

print_summary
exit $status
