#!/usr/bin/env bash
# Registers, stack and spills of every CUDA kernel, read from the SASS of a built binary, no GPU
# needed: cuobjdump/nvdisasm from PyPI (nvidia-cuda-cuobjdump, nvidia-cuda-nvdisasm) in a venv.
# Usage: scripts/cuda-sass-report.sh [BINARY]   (default build/cuda_kernel_tests)
#   KVLAB_SASS_VENV  the venv (default /work/venvs/cuda-sass; created when absent)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/cuda_kernel_tests}
VENV=${KVLAB_SASS_VENV:-/work/venvs/cuda-sass}
[[ -f $BIN ]] || { echo "cuda-sass-report: no $BIN (build with nvcc first)"; exit 2; }
if ! ls "$VENV"/lib/python3*/site-packages/nvidia/cu*/bin/cuobjdump >/dev/null 2>&1; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm
fi
TOOLS=$(dirname "$(ls "$VENV"/lib/python3*/site-packages/nvidia/cu*/bin/cuobjdump | head -1)")
export PATH=$TOOLS:$PATH NVDISASM_PATH=$TOOLS/nvdisasm
echo "== resource usage ($BIN)"
cuobjdump --dump-resource-usage "$BIN" | grep -E 'Function|REG' |
  sed -E 's/_ZN10kvlab_cuda[0-9A-Za-z_]*_cu_[0-9a-f]+[0-9]+//; s/EvNS0_[0-9A-Za-z_]+E$//; s/ENS0_[0-9A-Za-z_]+E$//'
sass=$(mktemp)
cuobjdump --dump-sass "$BIN" > "$sass"
echo "== local-memory instructions (spills): $(grep -cE '\b(LDL|STL)\b' "$sass" || true)"
echo "== integer-to-float conversions in the kernels: $(grep -cE '\bI2F\b' "$sass" || true) (the magic-number unpack needs none; these are index arithmetic)"
rm -f "$sass"
