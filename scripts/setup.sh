#!/usr/bin/env bash
# README command 1: installs the dependencies, builds Loom (with the CUDA targets when
# /usr/local/cuda exists) and runs its main job on the shipped defaults: the simulated
# iteration (step time, breakdown, per-stage memory, checkpoint) of BLOOM-176B as BigScience
# ran it on Jean Zay (384 A100-80GB, TP4 PP12 DP8, ZeRO-1).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake --preset default
cmake --build --preset default

echo
echo "== loom simulate: BLOOM-176B on jean-zay-a100-80gb, TP4 PP12 DP8 ZeRO-1, embedding + head as layers =="
build/cli/loom simulate --model bloom-176b --cluster jean-zay-a100-80gb --framework megatron-deepspeed \
  --gpus 384 --tp 4 --pp 12 --zero 1 --mbs 2 --gbs 2048 --seq 2048 --recompute full \
  --partition-method embedding-as-layer
