#!/usr/bin/env bash
# The GPU check: one script that a session with a GPU machine runs in a single call.
#
# The GPU machine's image has nvcc 13, CMake, PyTorch and the CUDA libraries but none of Loom's
# Debian packages, so Loom is built on the CPU machine (cmake --preset default) and packed with
# scripts/gpu-pack.sh into a folder that travels with the call (default .devcarry): the loom
# executable, the gpu test binary and the few shared libraries the image lacks.
#
#   on the CPU machine:  cmake --build --preset default && scripts/gpu-pack.sh
#   on the GPU machine:  scripts/gpu-check.sh [.devcarry]      (writes to $OUT, or gpu-check-out)
#
# Steps (each one's failure is recorded and the next one still runs):
#   1. environment: nvidia-smi, nvcc, glibc, PyTorch;
#   2. `loom devices`, the gpu-labelled GoogleTests (loom_gpu_tests) and, when packed, the NCCL
#      communicator's tests (loom_nccl_comm_tests) and the attention kernels' benchmark
#      (bench/attention_gpu_benchmark);
#   3. Loom's predictions for the 1.3 B Llama (models/llama-1.3b.yaml) on h200-1gpu, seq 2048,
#      at the batches PyTorch trains below (`loom simulate --json`);
#   4. `loom train --backend cuda` on the same model and batches (synthetic tokens, LOOM_STEPS
#      iterations, default 6; attention kernels LOOM_ATTENTION, default auto): measured step
#      time, tokens/s, device memory, against step 3; then the same runs with cuDNN's fused
#      SDPA (--attention cudnn; LOOM_CUDNN_RUNS=0 skips them);
#   4b. `loom run` on the same model (the best plan, and mbs 8 with selective and full
#      recompute: predicted vs measured step time, memory and phases) and `loom calibrate
#      --measure` (h200-1gpu fitted from Loom's own kernels); LOOM_RUN_CHECKS=0 skips it;
#   5. the PyTorch reference (scripts/gpu_torch_reference.py; TORCH_PARTS selects parts, "none"
#      skips it; BATCHES sets the mbs:gbs pairs of steps 3-5): cuBLAS
#      GEMM efficiency over the simulator's shapes, causal attention, HBM bandwidth, the 1.3 B
#      model trained with PyTorch (bf16 autocast, SDPA, fused AdamW): tokens/s, MFU, peak
#      memory, and its kernel time by kind (torch.profiler).
# Output: $OUT/gpu-check.md (summary) and $OUT/bundle.tgz (torch_reference.json,
# loom_predictions.json, loom_train_mbs*.json and .log, loom_train_cudnn_mbs*.json and .log,
# loom_run_*.json and .log, loom_calibrate.txt, h200-1gpu-loom-measured.yaml, gpu_tests.xml and .txt, nccl_tests.xml and .txt,
# attention_benchmark.json, env.txt).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:-.devcarry}
out=${OUT:-gpu-check-out}
mkdir -p "${out}"
export LD_LIBRARY_PATH="${PWD}/${bin}/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export PYTHONUNBUFFERED=1
export LOOM_DATA_DIR="${PWD}"   # model presets and cluster profiles of this checkout
export LOOM_TEST_LOOM_BINARY="${PWD}/${bin}/loom"  # the gpu tests that drive the CLI
python=${PYTHON:-python3}
# cuDNN (loaded at run time by kernels/cuda/cudnn_api.h) and NCCL: where the image has them only
# inside PyTorch's wheels (site-packages/nvidia/*/lib), those folders go after the system ones.
wheel_libs=$("${python}" - <<'PY' 2>/dev/null
import glob, os, site
dirs = []
for root in site.getsitepackages() + [site.getusersitepackages()]:
    for pattern in ("libcudnn.so.9", "libnccl.so.2", "libcublasLt.so.*"):
        for f in glob.glob(os.path.join(root, "nvidia", "**", pattern), recursive=True):
            d = os.path.dirname(f)
            if d not in dirs:
                dirs.append(d)
print(":".join(dirs))
PY
)
[ -z "${wheel_libs}" ] || export LD_LIBRARY_PATH="${LD_LIBRARY_PATH}:${wheel_libs}"
# loom links NCCL (the CUDA trainer's --dp); if the loader still cannot find a library, look for
# it anywhere on the machine before giving up.
if [ -x "${bin}/loom" ]; then
  for lib in $(ldd "${bin}/loom" 2>/dev/null | awk '/not found/ {print $1}'); do
    found=$(find / -xdev -name "${lib}" -not -path '*/proc/*' 2>/dev/null | head -1)
    [ -n "${found}" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH}:$(dirname "${found}")"
    echo "gpu-check: ${lib} not on the library path; ${found:-not found anywhere}"
  done
fi
batches="${BATCHES:-4:16,8:16,16:16}"   # mbs:gbs pairs for steps 3-5
status=0
md="${out}/gpu-check.md"
step() { echo; echo "== $* =="; }

{
  echo "# Loom GPU check"
  echo
  echo "date $(date -u +%FT%TZ), commit $(git describe --always --dirty 2>/dev/null || echo unknown)"
  echo
} > "${md}"

step "1. environment"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  nvcc --version 2>/dev/null | tail -1
  ldd --version | head -1
  "${python}" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} 2>&1 | tee "${out}/env.txt"
{ echo '```'; cat "${out}/env.txt"; echo '```'; echo; } >> "${md}"

step "2. loom devices, gpu tests"
if [ -x "${bin}/loom" ]; then
  "${bin}/loom" devices 2>&1 | tee "${out}/devices.txt" || status=1
  # Every step has a time limit, so that a hang cannot eat the device's time (LOOM_*_TIMEOUT).
  timeout "${LOOM_GPU_TESTS_TIMEOUT:-300}" "${bin}/loom_gpu_tests" --gtest_output="xml:${out}/gpu_tests.xml" 2>&1 | tee "${out}/gpu_tests.txt"
  rc=${PIPESTATUS[0]}
  [ "${rc}" -eq 0 ] || status=1
  {
    echo "## Loom"; echo; echo '```'; cat "${out}/devices.txt"
    grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "${out}/gpu_tests.txt"
    echo '```'; echo
  } >> "${md}"
  if [ -x "${bin}/loom_nccl_comm_tests" ]; then  # comm/nccl_comm.h: 1-GPU tests (2-GPU ones skip)
    timeout 120 "${bin}/loom_nccl_comm_tests" --gtest_output="xml:${out}/nccl_tests.xml" 2>&1 | tee "${out}/nccl_tests.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    { echo "### NCCL communicator (tests/comm/nccl_comm_test.cc)"; echo; echo '```'
      grep -E '^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED  \]' "${out}/nccl_tests.txt"; echo '```'; echo; } >> "${md}"
  fi
  if [ -x "${bin}/attention_gpu_benchmark" ]; then
    timeout 120 "${bin}/attention_gpu_benchmark" --benchmark_out="${out}/attention_benchmark.json" \
      --benchmark_out_format=json 2>&1 | tee "${out}/attention_benchmark.txt" || status=1
    { echo "### Attention kernels (bench/attention_gpu_benchmark)"; echo; echo '```'
      grep -E '^BM_' "${out}/attention_benchmark.txt"; echo '```'; echo; } >> "${md}"
  fi
else
  echo "no Loom build in ${bin} (run scripts/gpu-pack.sh on the build machine)" | tee -a "${md}"
  status=1
fi

step "3. Loom's predictions"
if [ -x "${bin}/loom" ]; then
  echo "[" > "${out}/loom_predictions.json"
  first=1
  for b in ${batches//,/ }; do
    mbs=${b%%:*}; gbs=${b##*:}
    [ ${first} -eq 1 ] || echo "," >> "${out}/loom_predictions.json"
    first=0
    "${bin}/loom" simulate --model llama-1.3b --cluster h200-1gpu --framework loom --gpus 1 \
      --mbs "${mbs}" --gbs "${gbs}" --seq 2048 --recompute none --json \
      >> "${out}/loom_predictions.json" || status=1
    "${bin}/loom" simulate --model llama-1.3b --cluster h200-1gpu --framework loom --gpus 1 \
      --mbs "${mbs}" --gbs "${gbs}" --seq 2048 --recompute none | sed -n 4p
  done
  echo "]" >> "${out}/loom_predictions.json"
fi

step "4. Loom's CUDA trainer on the same model and batches"
if [ -x "${bin}/loom" ]; then
  for b in ${batches//,/ }; do
    mbs=${b%%:*}; gbs=${b##*:}
    timeout "${LOOM_TRAIN_TIMEOUT:-300}" "${bin}/loom" train --backend cuda --model llama-1.3b --synthetic \
      --steps "${LOOM_STEPS:-6}" --mbs "${mbs}" --gbs "${gbs}" --seq 2048 --lr 3e-4 --warmup 2 \
      --attention "${LOOM_ATTENTION:-auto}" --json > "${out}/loom_train_mbs${mbs}.json" 2> "${out}/loom_train_mbs${mbs}.log" || status=1
    tail -n 3 "${out}/loom_train_mbs${mbs}.log"
  done
  # The same runs with cuDNN's fused SDPA (kernels/cuda/attention_cudnn.h) unless step 4 used it
  # already; LOOM_CUDNN_RUNS=0 skips them.
  if [ "${LOOM_CUDNN_RUNS:-1}" != 0 ] && [ "${LOOM_ATTENTION:-auto}" != cudnn ]; then
    for b in ${batches//,/ }; do
      mbs=${b%%:*}; gbs=${b##*:}
      timeout "${LOOM_TRAIN_TIMEOUT:-300}" "${bin}/loom" train --backend cuda --model llama-1.3b --synthetic \
        --steps "${LOOM_STEPS:-6}" --mbs "${mbs}" --gbs "${gbs}" --seq 2048 --lr 3e-4 --warmup 2 \
        --attention cudnn --json > "${out}/loom_train_cudnn_mbs${mbs}.json" \
        2> "${out}/loom_train_cudnn_mbs${mbs}.log" || status=1
      tail -n 3 "${out}/loom_train_cudnn_mbs${mbs}.log"
    done
  fi
  "${python}" - "${out}" "${batches}" >> "${md}" <<'PY' || status=1
import json, sys, os
out, batches = sys.argv[1], sys.argv[2].split(",")
pred = json.load(open(os.path.join(out, "loom_predictions.json")))
print("## Predicted vs measured: Loom's CUDA trainer, llama-1.3b, seq 2048\n")
print("| mbs | gbs | predicted s | measured s | measured / predicted | of which attention s "
      "(predicted) | tokens/s | MFU | predicted peak GiB | device memory in use GiB |")
print("|---|---|---|---|---|---|---|---|---|---|")
for b, p in zip(batches, pred):
    mbs, gbs = b.split(":")
    f = os.path.join(out, f"loom_train_mbs{mbs}.json")
    if not os.path.exists(f) or os.path.getsize(f) == 0:
        print(f"| {mbs} | {gbs} | {p['step_time_s']:.3f} | failed | | | | | | |")
        continue
    m = json.load(open(f))
    mfu = p["mfu"] * p["step_time_s"] / m["mean_step_time_s"]
    print(f"| {mbs} | {gbs} | {p['step_time_s']:.3f} | {m['mean_step_time_s']:.3f} | "
          f"{m['mean_step_time_s'] / p['step_time_s']:.2f} | "
          f"{m.get('phase_seconds', {}).get('attention', float('nan')):.3f} "
          f"({p['compute_by_kind_s']['attention']:.3f}) | {m['tokens_per_s']:.0f} | {100 * mfu:.1f}% | "
          f"{p['memory']['peak_gib']:.2f} | {m.get('peak_device_bytes', 0) / 2**30:.2f} |")
print()
runs = [(b, os.path.join(out, f"loom_train_cudnn_mbs{b.split(':')[0]}.json")) for b in batches]
if any(os.path.exists(f) for _, f in runs):
    print("## Loom's CUDA trainer with cuDNN's fused SDPA (--attention cudnn)\n")
    print("| mbs | gbs | measured s | vs the run above | attention s | tokens/s | MFU | "
          "device memory in use GiB | cuDNN |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (b, f), p in zip(runs, pred):
        mbs, gbs = b.split(":")
        if not os.path.exists(f) or os.path.getsize(f) == 0:
            log = f[:-5] + ".log"
            last = open(log).read().strip().splitlines()[-1:] if os.path.exists(log) else ["no log"]
            print(f"| {mbs} | {gbs} | failed: {last[0][:160]} | | | | | | |")
            continue
        m = json.load(open(f))
        base = os.path.join(out, f"loom_train_mbs{mbs}.json")
        ratio = ""
        if os.path.exists(base) and os.path.getsize(base) > 0:
            ratio = f"{json.load(open(base))['mean_step_time_s'] / m['mean_step_time_s']:.2f}x faster"
        mfu = p["mfu"] * p["step_time_s"] / m["mean_step_time_s"]
        print(f"| {mbs} | {gbs} | {m['mean_step_time_s']:.3f} | {ratio} | "
              f"{m.get('phase_seconds', {}).get('attention', float('nan')):.3f} | "
              f"{m['tokens_per_s']:.0f} | {100 * mfu:.1f}% | "
              f"{m.get('peak_device_bytes', 0) / 2**30:.2f} | {m.get('attention_detail', '')} |")
    print()
PY
fi

step "4b. loom run (plan + train + compare) and loom calibrate --measure"
# `loom run` picks the best plan the CUDA trainer runs and reports it against the measurement
# with the iteration by phase; the recompute constraints check the recompute paths' predictions.
# `loom calibrate --measure` fits h200-1gpu from Loom's own kernels (cli/gpu_microbench.h).
# LOOM_RUN_CHECKS=0 skips this step.
if [ -x "${bin}/loom" ] && [ "${LOOM_RUN_CHECKS:-1}" != 0 ]; then
  for c in "" "--constraint mbs=8 --constraint recompute=selective" "--constraint mbs=8 --constraint recompute=full"; do
    tag=$(echo "${c:-best}" | tr -c 'a-z0-9=\n' '_' | sed 's/__*/_/g')
    # shellcheck disable=SC2086
    timeout "${LOOM_TRAIN_TIMEOUT:-300}" "${bin}/loom" run --model llama-1.3b --cluster h200-1gpu \
      --gpus 1 --gbs 16 --seq 2048 --steps "${LOOM_STEPS:-6}" ${c} --json \
      > "${out}/loom_run_${tag}.json" 2> "${out}/loom_run_${tag}.log" || status=1
    tail -n 2 "${out}/loom_run_${tag}.log"
  done
  timeout 180 "${bin}/loom" calibrate --cluster h200-1gpu --measure --model llama-1.3b --mbs 8 \
    --seq 2048 --name h200-1gpu-loom-measured --out "${out}/h200-1gpu-loom-measured.yaml" \
    > "${out}/loom_calibrate.txt" 2>&1 || status=1
  tail -n 25 "${out}/loom_calibrate.txt"
  "${python}" - "${out}" >> "${md}" <<'PY' || status=1
import glob, json, os, sys
out = sys.argv[1]
print("## loom run: llama-1.3b on h200-1gpu, gbs 16, seq 2048\n")
print("| constraints | layout | predicted s | measured s | measured / predicted | predicted GiB | "
      "measured GiB | compute s (pred / meas) | optimizer s (pred / meas) | host and other s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for f in sorted(glob.glob(os.path.join(out, "loom_run_*.json"))):
    tag = os.path.basename(f)[len("loom_run_"):-len(".json")]
    if os.path.getsize(f) == 0:
        log = f[:-5] + ".log"
        last = open(log).read().strip().splitlines()[-1:] if os.path.exists(log) else ["no log"]
        print(f"| {tag} | failed: {last[0][:160]} | | | | | | | | |")
        continue
    j = json.load(open(f))
    b = j.get("breakdown", {})
    def pm(name):
        for k, v in b.items():
            if isinstance(v, dict) and k.startswith(name):
                return f"{v['predicted_s']:.3f} / {v['measured_s']:.3f}"
        return ""
    bub = next((v for k, v in b.items() if k.startswith("bubble")), {"measured_s": float("nan")})
    print(f"| {tag} | {j['layout']} | {j['predicted_step_time_s']:.3f} | {j['measured_step_time_s']:.3f} | "
          f"{j['measured_step_time_s'] / j['predicted_step_time_s']:.2f} | {j['predicted_peak_gib']:.2f} | "
          f"{j['measured_peak_gib']:.2f} | {pm('compute')} | {pm('optimizer')} | {bub['measured_s']:.3f} |")
print()
cal = os.path.join(out, "loom_calibrate.txt")
if os.path.exists(cal):
    print("## loom calibrate --measure (Loom's kernels), h200-1gpu, llama-1.3b mbs 8\n")
    print("```")
    print(open(cal).read().strip()[-4000:])
    print("```\n")
PY
fi

step "5. PyTorch reference"
[ "${TORCH_PARTS:-}" = none ] || "${python}" scripts/gpu_torch_reference.py --out "${out}/torch_reference.json" \
  --md "${out}/torch_reference.md" --train-batches "${batches}" \
  --parts "${TORCH_PARTS:-gemm,attention,memory,train,profile}" || status=1
cat "${out}/torch_reference.md" >> "${md}" 2>/dev/null

# The device tool returns at most 8 files: everything but the summary (and a log the caller
# may be writing there) goes into one archive.
( cd "${out}" && find . -maxdepth 1 -type f ! -name gpu-check.md ! -name log.txt ! -name bundle.tgz \
    -printf '%P\n' | tar czf bundle.tgz -T - --remove-files )

echo
echo "gpu-check: $([ ${status} -eq 0 ] && echo passed || echo 'FAILED (see above)'); summary ${md}," \
  "raw results ${out}/bundle.tgz"
exit ${status}
