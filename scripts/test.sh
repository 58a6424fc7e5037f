#!/usr/bin/env bash
# README command 2 (and what CI runs): builds Loom with CUDA when it is found and runs the
# default test suite (label "slow" excluded; "gpu" tests skip cleanly without a device), then
# builds the libraries and the loom executable again with -DLOOM_CUDA=OFF -- proving that
# everything that does not need CUDA builds without it -- and runs that binary once
# (simulate and a 2-iteration training run). The tests themselves are the same CPU code in both
# builds, so they run once. Pass --slow to include the slow-labelled tests.
set -euo pipefail
cd "$(dirname "$0")/.."

label_args=(--label-exclude slow)
if [ "${1:-}" = "--slow" ]; then label_args=(); fi

scripts/install-deps.sh
jobs=$(nproc)

echo "== build: preset default =="
cmake --preset default >/dev/null
cmake --build --preset default -j "${jobs}"
echo "== test: preset default =="
ctest --test-dir build --output-on-failure -j "${jobs}" "${label_args[@]}"

echo "== build: preset nocuda (libraries and loom, no tests) =="
cmake --preset nocuda -DLOOM_BUILD_TESTS=OFF -DLOOM_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build --preset nocuda -j "${jobs}"
echo "== smoke: preset nocuda =="
build-nocuda/cli/loom simulate --model tiny-llama --cluster dgx-a100-80gb --gpus 8 --tp 2 \
  --gbs 16 --seq 128 >/dev/null
build-nocuda/cli/loom train --model tiny-llama --synthetic --steps 2 --mbs 2 --gbs 4 --seq 32 \
  --quiet >/dev/null
build-nocuda/cli/loom devices
echo "== all tests passed =="
