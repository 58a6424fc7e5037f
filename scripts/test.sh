#!/usr/bin/env bash
# README command 2 (and what CI runs): builds Loom twice -- with CUDA when it is found, and with
# -DLOOM_CUDA=OFF to prove everything that does not need CUDA builds without it -- and runs the
# default test suite (label "slow" excluded; "gpu" tests skip cleanly without a device).
# Pass --slow to include the slow-labelled tests.
set -euo pipefail
cd "$(dirname "$0")/.."

label_args=(--label-exclude slow)
if [ "${1:-}" = "--slow" ]; then label_args=(); fi

scripts/install-deps.sh
jobs=$(nproc)

for preset in default nocuda; do
  echo "== build: preset ${preset} =="
  cmake --preset "${preset}" >/dev/null
  cmake --build --preset "${preset}" -j "${jobs}"
  echo "== test: preset ${preset} =="
  ctest --test-dir "build$([ "${preset}" = nocuda ] && echo -nocuda)" --output-on-failure \
    -j "${jobs}" "${label_args[@]}"
done
