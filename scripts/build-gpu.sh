#!/usr/bin/env bash
# Builds kvlab for the GPU machine (one H200, CUDA 13, Python torch 2.11.0+cu130) on this machine,
# which has nvcc but no GPU: the whole project against the LibTorch of PyPI's torch==2.11.0 wheel
# (the device's exact build) with the CUDA path on (KVLAB_CUDA), kernels for sm_90. Then stages what
# a device run needs in build-gpu/stage (<= 64 MiB): the binaries, stripped, and the Debian
# libraries they load that a CUDA image may lack. scripts/run-gpu.sh runs there with it:
#   device run(command="scripts/run-gpu.sh", carry=["build-gpu/stage"])
# Usage: scripts/build-gpu.sh [extra cmake -D options]
#   KVLAB_GPU_TORCH  the wheel's unzipped torch/ folder (default /work/cache/torch-2.11.0/torch; if
#                    absent, it is unzipped from KVLAB_GPU_WHEEL, default
#                    /work/cache/torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl)
# A full build takes ~10-20 minutes on 2 cores; it runs niced.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_DIR=${KVLAB_GPU_TORCH:-/work/cache/torch-2.11.0/torch}
WHEEL=${KVLAB_GPU_WHEEL:-/work/cache/torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl}
BUILD=build-gpu
STAGE=$BUILD/stage

if [[ ! -f $TORCH_DIR/share/cmake/Torch/TorchConfig.cmake ]]; then
  if [[ -f $WHEEL ]]; then
    echo "build-gpu: unzipping torch/ of $WHEEL into $(dirname "$TORCH_DIR")"
    mkdir -p "$(dirname "$TORCH_DIR")"
    unzip -q -o "$WHEEL" 'torch/*' -d "$(dirname "$TORCH_DIR")"
  else
    echo "build-gpu: no LibTorch at $TORCH_DIR and no wheel at $WHEEL. Fetch the wheel once (530 MB) with"
    echo "  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\"
    echo "    --platform manylinux_2_28_x86_64 -d $(dirname "$WHEEL") torch==2.11.0"
    exit 2
  fi
fi
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[[ -x $NVCC ]] || { echo "build-gpu: nvcc not found (the CUDA toolkit is needed to compile the kernels)"; exit 2; }

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
# The traps of building against the wheel (../shared/docs/GPU.md): its prefix root, not Debian's
# libtorch; one CUDA architecture; fmt header-only (the wheel's fmt 12 headers shadow Debian's
# fmt 9); CUDA libraries this machine lacks (cufile, cusparseLt, nvshmem) left to the device's
# loader; libstdc++ linked first (libtorch exports std::filesystem symbols); tests discovered when
# ctest runs (the binaries cannot start here).
nice -n 10 cmake -S . -B "$BUILD" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$TORCH_DIR" -DCMAKE_CUDA_COMPILER="$NVCC" \
  -DTORCH_CUDA_ARCH_LIST=9.0 -DKVLAB_CUDA_ARCHITECTURES=90 -DKVLAB_CUDA=ON \
  -DCMAKE_CXX_FLAGS="-DFMT_HEADER_ONLY=1" \
  -DCMAKE_EXE_LINKER_FLAGS="-Wl,--no-as-needed -lstdc++ -Wl,--allow-shlib-undefined" \
  -DCMAKE_SHARED_LINKER_FLAGS="-Wl,--allow-shlib-undefined" \
  -DCMAKE_MODULE_LINKER_FLAGS="-Wl,--allow-shlib-undefined" \
  -DCMAKE_GTEST_DISCOVER_TESTS_DISCOVERY_MODE=PRE_TEST "$@"
# KVLAB_GPU_TARGETS="cuda_kernel_tests cuda_kernel_bench" builds and stages only the kernels' tier.
read -r -a targets <<< "${KVLAB_GPU_TARGETS:-kvlab kvlab_tests kvlab_bench kvlab_sentencepiece cuda_kernel_tests cuda_kernel_bench kvlab_cuda_attention_bench}"
nice -n 10 cmake --build "$BUILD" -j"$(nproc)" --target "${targets[@]}"

# ---- stage ----
rm -rf "$STAGE"
mkdir -p "$STAGE/bin" "$STAGE/lib"
for t in kvlab kvlab_tests kvlab_bench cuda_kernel_tests cuda_kernel_bench kvlab_cuda_attention_bench libkvlab_sentencepiece.so; do
  [[ -f $BUILD/$t ]] && cp "$BUILD/$t" "$STAGE/bin/"
done
strip --strip-unneeded "$STAGE"/bin/*
# Libraries resolved outside the wheel, the CUDA toolkit and the C/C++ runtime (yaml-cpp, fmt,
# Boost.Program_options, SQLite, SentencePiece, protobuf-lite, Google Benchmark, ...).
LD_LIBRARY_PATH="$TORCH_DIR/lib:/usr/local/cuda/lib64" ldd "$STAGE"/bin/* 2>/dev/null | awk '/=> \//{print $3}' | sort -u |
  while read -r lib; do
    case $lib in
      "$TORCH_DIR"/*|/usr/local/cuda*|*/libc.so*|*/libm.so*|*/libstdc++.so*|*/libgcc_s.so*|*/ld-linux*|*/libpthread.so*|*/libdl.so*|*/librt.so*) ;;
      *) cp -L "$lib" "$STAGE/lib/" ;;
    esac
  done
strip --strip-unneeded "$STAGE"/lib/* 2>/dev/null || true
{
  echo "source_dir=$PWD"
  echo "build_dir=$PWD/$BUILD"
  echo "git_rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo -dirty)"
  echo "torch=$(cat "$TORCH_DIR/version.py" 2>/dev/null | sed -n "s/^__version__ = '\(.*\)'/\1/p")"
  echo "nvcc=$("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
  echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$STAGE/BUILD_INFO"
size_kb=$(du -sk "$STAGE" | cut -f1)
echo "build-gpu: staged $STAGE ($((size_kb / 1024)) MiB): $(ls "$STAGE/bin" | tr '\n' ' ')"
ls "$STAGE/lib"
if ((size_kb > 60 * 1024)); then
  echo "build-gpu: the stage is over 60 MiB; the device tool carries at most 64 MiB with the working tree"
  exit 1
fi
