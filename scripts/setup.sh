#!/usr/bin/env bash
# Installs every dependency of kvlab from Debian packages. Idempotent: packages already present are
# skipped by apt, so running it twice costs a few seconds.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-openmp          # LibTorch 1.13 (CPU); OpenBLAS with OpenMP, else ~8x slower
  libyaml-cpp-dev libfmt-dev libboost-program-options-dev
  libsentencepiece-dev sentencepiece         # tokenizer.model load + training for make-model
  nlohmann-json3-dev libsqlite3-dev sqlite3
  libgtest-dev libgmock-dev libbenchmark-dev
  bible-kjv                                  # the KJV corpus of the reference model (datasets/kjv/prepare.py)
  python3-matplotlib python3-numpy python3-yaml   # plots/ (run with /usr/bin/python3)
  slurm-wlm                                  # Slurm: kvlab slurm array jobs; tests/test_slurm.cpp runs a one-node cluster
  clang libclang-rt-14-dev llvm-14            # libFuzzer, ASan/UBSan runtimes and the symbolizer (scripts/fuzz.sh, sanitize.sh)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#PACKAGES[@]} packages present"
fi
