#!/usr/bin/env bash
# Packs what the GPU check needs from a build made on this (CPU) machine into one folder that the
# device tool can carry (default .devcarry, ignored by git): the loom executable, the gpu test
# binary, the attention benchmark and the NCCL communicator tests when they were built, and the shared libraries they load that a bare CUDA image lacks (Debian's yaml-cpp, fmt,
# OpenMP runtime; CUDA's runtime). glibc, libstdc++ and the large CUDA libraries (cuBLAS(Lt),
# cuDNN, NCCL) are taken from the GPU machine's image.
#   usage: scripts/gpu-pack.sh [BUILD_DIR] [OUT_DIR]        (defaults: build .devcarry)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-.devcarry}
rm -rf "${out}"
mkdir -p "${out}/lib"
bins=("${build}/cli/loom" "${build}/tests/loom_gpu_tests")
for b in "${bins[@]}"; do
  [ -x "${b}" ] || { echo "gpu-pack: ${b} not built (cmake --build --preset default)" >&2; exit 1; }
  cp "${b}" "${out}/"
done
for optional in bench/attention_gpu_benchmark tests/comm/loom_nccl_comm_tests; do
  if [ -x "${build}/${optional}" ]; then
    bins+=("${build}/${optional}")
    cp "${build}/${optional}" "${out}/"
  fi
done
for b in "${bins[@]}"; do
  ldd "${b}" | awk '$3 ~ /^\// {print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "${lib}")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libstdc++.so*|libgcc_s.so*) ;;
    libcublas*|libcudnn*|libnccl*) ;;
    *) cp -L "${lib}" "${out}/lib/" ;;
  esac
done
grep -qx "/${out}/" .git/info/exclude 2>/dev/null || echo "/${out}/" >> .git/info/exclude
du -sh "${out}"; ls "${out}" "${out}/lib"
