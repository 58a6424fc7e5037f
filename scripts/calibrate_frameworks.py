#!/usr/bin/python3
"""Grid search of framework traits against the published step times (a calibration aid).

For one framework, evaluates every combination of the given trait values with
`loom validate --metric step-time --json --framework-param ...` over the validation files and
prints the MAPE of that framework's runs, best first. The chosen values go into
simulator/framework.cc with this script's command line as their source.

Usage: scripts/calibrate_frameworks.py FRAMEWORK TRAIT=v1,v2,... [TRAIT=...] [--runs FILE ...]
Example: scripts/calibrate_frameworks.py fsdp attention_efficiency_scale=0.5,0.6,0.7
"""
import argparse
import itertools
import json
import subprocess

parser = argparse.ArgumentParser()
parser.add_argument("framework")
parser.add_argument("grid", nargs="+", help="TRAIT=v1,v2,...")
parser.add_argument("--runs", nargs="+", default=["tests/data/validation/published_runs.yaml",
                                                   "tests/data/validation/vtrain_single_node.yaml"])
parser.add_argument("--loom", default="build/cli/loom")
parser.add_argument("--top", type=int, default=10)
args = parser.parse_args()

names, values = [], []
for item in args.grid:
    name, vals = item.split("=")
    names.append(name)
    values.append(vals.split(","))

results = []
for combo in itertools.product(*values):
    params = []
    for n, v in zip(names, combo):
        params += ["--framework-param", f"{args.framework}.{n}={v}"]
    errors = []
    for runs in args.runs:
        out = subprocess.check_output([args.loom, "validate", "--runs", runs, "--metric",
                                       "step-time", "--json"] + params)
        for r in json.loads(out)["runs"]:
            if r["status"] == "simulated" and r["framework"] == args.framework:
                errors.append(r["error_pct"])
    mape = sum(abs(e) for e in errors) / len(errors)
    mean = sum(errors) / len(errors)
    results.append((mape, mean, max(abs(e) for e in errors), combo, len(errors)))

results.sort()
for mape, mean, worst, combo, n in results[: args.top]:
    setting = " ".join(f"{n}={v}" for n, v in zip(names, combo))
    print(f"MAPE {mape:5.1f}%  mean {mean:+5.1f}%  max {worst:5.1f}%  n={n}  {setting}")
