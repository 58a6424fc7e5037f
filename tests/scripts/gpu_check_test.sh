#!/usr/bin/env bash
# What of the GPU check can be checked without a GPU, so that a device run (lent rarely, 15
# minutes in all) is not lost to a typo: scripts/gpu-check.sh and gpu-pack.sh parse (bash -n);
# every Python block of gpu-check.sh and scripts/gpu_torch_reference.py compiles; and the
# report blocks render their Markdown tables from results shaped as Loom writes them (a real
# `loom run --json` on the CPU profile, `loom train --json`-shaped summaries, a failed run with
# its log), without a traceback.
#   usage: tests/scripts/gpu_check_test.sh SOURCE_DIR LOOM_BINARY
set -euo pipefail
root=$1
loom=$2
python=/usr/bin/python3
[ -x "${python}" ] || python=python3
tmp=$(mktemp -d)
trap 'rm -rf "${tmp}"' EXIT

bash -n "${root}/scripts/gpu-check.sh"
bash -n "${root}/scripts/gpu-pack.sh"
"${python}" -m py_compile "${root}/scripts/gpu_torch_reference.py"

# The heredoc Python blocks of gpu-check.sh, one file each.
awk -v dir="${tmp}" '/<<.PY./ {n++; f = dir "/block" n ".py"; inside = 1; next}
                     /^PY$/ {inside = 0; next}
                     inside {print > f}' "${root}/scripts/gpu-check.sh"
blocks=$(ls "${tmp}"/block*.py | wc -l)
[ "${blocks}" -ge 3 ] || { echo "expected at least 3 Python blocks in gpu-check.sh, found ${blocks}"; exit 1; }
for f in "${tmp}"/block*.py; do "${python}" -m py_compile "${f}"; done

# Results as the device run writes them.
out="${tmp}/out"
mkdir -p "${out}"
cat > "${out}/loom_predictions.json" <<'JSON'
[{"step_time_s": 0.637, "mfu": 0.46, "compute_by_kind_s": {"attention": 0.2}, "memory": {"peak_gib": 36.3}},
 {"step_time_s": 0.633, "mfu": 0.46, "compute_by_kind_s": {"attention": 0.2}, "memory": {"peak_gib": 49.1}}]
JSON
echo '{"mean_step_time_s": 0.67, "tokens_per_s": 48000, "phase_seconds": {"attention": 0.21}, "peak_device_bytes": 39000000000}' \
  > "${out}/loom_train_mbs4.json"
: > "${out}/loom_train_mbs8.json"
echo '{"mean_step_time_s": 0.52, "tokens_per_s": 62000, "phase_seconds": {"attention": 0.06}, "peak_device_bytes": 39100000000, "attention_detail": "cuDNN 91900 SDPA"}' \
  > "${out}/loom_train_cudnn_mbs4.json"
: > "${out}/loom_train_cudnn_mbs8.json"
echo "loom: error: --attention cudnn: cuDNN planned no SDPA graph" > "${out}/loom_train_cudnn_mbs8.log"
"${loom}" run --model tiny-llama --cluster local-cpu --gbs 4 --seq 64 --steps 2 --json \
  > "${out}/loom_run_best.json" 2> /dev/null
: > "${out}/loom_run__constraint_recompute=full.json"
echo "loom: error: something named" > "${out}/loom_run__constraint_recompute=full.log"
echo "gemm fit" > "${out}/loom_calibrate.txt"

rendered=0
for f in "${tmp}"/block*.py; do
  if grep -q "Predicted vs measured" "${f}"; then
    "${python}" "${f}" "${out}" "4:16,8:16" > "${tmp}/train.md"
    grep -q "| 4 | 16 | 0.637 | 0.670 |" "${tmp}/train.md"
    grep -q "| 8 | 16 | 0.633 | failed |" "${tmp}/train.md"
    grep -q "1.29x faster" "${tmp}/train.md"
    grep -q "failed: loom: error: --attention cudnn" "${tmp}/train.md"
    rendered=$((rendered + 1))
  elif grep -q "loom run: llama-1.3b" "${f}"; then
    "${python}" "${f}" "${out}" > "${tmp}/run.md"
    grep -q "| best | tp1 pp1 dp1 zero0" "${tmp}/run.md"
    grep -q "failed: loom: error: something named" "${tmp}/run.md"
    grep -q "gemm fit" "${tmp}/run.md"
    rendered=$((rendered + 1))
  fi
done
[ "${rendered}" -eq 2 ] || { echo "rendered ${rendered} of the 2 report blocks"; exit 1; }
echo "gpu-check: ${blocks} Python blocks compile, 2 reports render"
