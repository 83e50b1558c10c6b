#!/usr/bin/env bash
# Peers on the same model and text as kvlab (issue 18, item 2): HF transformers' QuantizedCache and
# llama.cpp's quantized KV caches on SmolLM2-135M-Instruct, WikiText-2 raw test, ctx 2048.
# Creates .venv-peers/ from PyPI (pinned in requirements.txt; llama-cpp-python builds llama.cpp from
# source, CPU only), runs every peer, and writes bench/peers/results/*.json + peers_table.{csv,md}.
#
#   bench/peers/run_peers.sh [--windows N] [--hf-windows N] [--threads T] [--step all|setup|hf|llamacpp|reference-all|table]
#
# --windows N: the first N windows of 2048 tokens (default 4 = 8188 predicted tokens; 0 = all 148).
# --hf-windows N: windows for HF's token-by-token streaming runs (default: --windows); the committed
# results used --hf-windows 1 (HF streams ~2 tokens/s per configuration on the busy shared CPU).
# --step reference-all: HF fp32 perplexity on every window (results/hf_fp32_all.json), the check for
# kvlab's fp16 figure. Heavy steps run under `nice -n 10`. KVLAB_SHARED overrides ../shared.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${PEERS_VENV:-$REPO/.venv-peers}"
WINDOWS=4
HF_WINDOWS=
THREADS=2
STEP=all
while [ $# -gt 0 ]; do
  case "$1" in
    --windows) WINDOWS="$2"; shift 2 ;;
    --hf-windows) HF_WINDOWS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --step) STEP="$2"; shift 2 ;;
    *) echo "run_peers.sh: unknown option '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
done
LLAMA_CPP_PYTHON=llama-cpp-python==0.3.36
PY="$VENV/bin/python"

setup() {
  [ -x "$PY" ] || python3 -m venv "$VENV"
  nice -n 10 "$VENV/bin/pip" install -q -r "$HERE/requirements.txt"
  if ! "$PY" -c "import llama_cpp" 2>/dev/null; then
    # llama.cpp from source: CPU only, Release, tuned for this CPU (GGML_NATIVE); ~30-60 min on 2 busy cores
    CMAKE_ARGS="-DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_NATIVE=ON -DCMAKE_BUILD_TYPE=Release" \
      CMAKE_BUILD_PARALLEL_LEVEL=2 nice -n 10 "$VENV/bin/pip" install -q "$LLAMA_CPP_PYTHON"
  fi
  "$VENV/bin/pip" freeze > "$HERE/results/pip_freeze.txt"
}

export OMP_WAIT_POLICY=PASSIVE
cd "$HERE"
mkdir -p results
case "$STEP" in
  all|setup) setup ;;
esac
case "$STEP" in
  all|hf)
    nice -n 10 "$PY" hf_peer.py --windows "${HF_WINDOWS:-$WINDOWS}" --threads "$THREADS" ;;
esac
case "$STEP" in
  all|llamacpp)
    nice -n 10 "$PY" llamacpp_peer.py --windows "$WINDOWS" --threads "$THREADS" ;;
esac
case "$STEP" in
  reference-all)
    nice -n 10 "$PY" hf_peer.py --reference-only --windows 0 --threads "$THREADS" ;;
esac
case "$STEP" in
  all|table) "$PY" make_table.py ;;
esac
