#!/usr/bin/python3
"""Refits the PyTorch caching-allocator reserve fraction (simulator/framework.cc,
kPyTorchReserveFraction) on the runs of a validation file that report reserved memory
(nanotron's 26 best configurations), and reports its leave-one-out error.

The model: reserved = allocated + fraction x stashed activations. For each run this script asks
`loom memory --json` for the first stage's allocated bytes and stashed activations, then fits
the fraction on a 0.01 grid by mean absolute relative error.

Usage: scripts/fit_reserve_fraction.py [build/cli/loom] [tests/data/validation/published_runs.yaml]
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import yaml

loom = sys.argv[1] if len(sys.argv) > 1 else "build/cli/loom"
runs_file = sys.argv[2] if len(sys.argv) > 2 else "tests/data/validation/published_runs.yaml"

runs = [r for r in yaml.safe_load(open(runs_file))
        if "nanotron" in r["framework"] and r["measured"].get("memory_gb")]
rows = []
with tempfile.TemporaryDirectory() as tmp:
    for r in runs:
        m, l = r["model"], r["layout"]
        seq = 4096  # the file's assumptions: scaling_benchmarks.py SEQUENCE_LENGTHS=[4096]
        spec = dict(name=r["id"], num_layers=m["layers"], hidden_size=m["hidden"],
                    num_heads=m["heads"], num_kv_heads=m["kv_heads"], ffn_hidden_size=m["ffn"],
                    vocab_size=m["vocab"], max_seq_len=seq, norm="rmsnorm", mlp="swiglu",
                    position="rope", tied_embeddings=bool(m.get("tied_embeddings")),
                    make_vocab_size_divisible_by=1)
        path = os.path.join(tmp, r["id"] + ".yaml")
        with open(path, "w") as f:
            yaml.safe_dump(spec, f)
        cmd = [loom, "memory", "--model", path, "--cluster", r["cluster_profile"],
               "--framework", "nanotron", "--gpus", str(r["gpus"]), "--tp", str(l["tp"]),
               "--pp", str(l["pp"]), "--zero", str(l["zero_stage"]), "--mbs", str(l["mbs"]),
               "--gbs", str(l["gbs"]), "--seq", str(seq), "--json"]
        if l["tp"] > 1:
            cmd.append("--sp")  # tp_mode REDUCE_SCATTER
        stage0 = json.loads(subprocess.check_output(cmd))["per_stage"][0]
        rows.append((r["id"], r["measured"]["memory_gb"], stage0["allocated_gib"],
                     stage0["items"]["activations"]["gib"]))

meas = np.array([x[1] for x in rows])
alloc = np.array([x[2] for x in rows])
act = np.array([x[3] for x in rows])
grid = np.arange(0.0, 1.0001, 0.01)


def mean_abs_rel(frac, idx):
    return np.mean(np.abs((alloc[idx] + frac * act[idx]) / meas[idx] - 1))


everything = np.arange(len(rows))
best = min(grid, key=lambda a: mean_abs_rel(a, everything))
loo = []
for i in everything:
    rest = everything[everything != i]
    a = min(grid, key=lambda a: mean_abs_rel(a, rest))
    loo.append(100 * ((alloc[i] + a * act[i]) / meas[i] - 1))
loo = np.array(loo)
print(f"runs: {len(rows)}")
print(f"best fraction: {best:.2f} (mean |error| {100 * mean_abs_rel(best, everything):.1f}%)")
print(f"leave-one-out: mean |error| {np.mean(np.abs(loo)):.1f}%, max {np.max(np.abs(loo)):.1f}%")
for frac in (0.0, 0.25, 0.3, 0.35):
    err = 100 * ((alloc + frac * act) / meas - 1)
    print(f"fraction {frac:.2f}: mean |error| {np.mean(np.abs(err)):.1f}%, max {np.max(np.abs(err)):.1f}%")
