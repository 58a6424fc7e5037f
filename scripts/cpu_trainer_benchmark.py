#!/usr/bin/python3
"""Tokens/s of `loom train` (CPU backend) against PyTorch training the same model, same run.

Builds the architecture of a Loom preset (pre-norm RMSNorm, rotate-half RoPE, grouped-query
attention, SwiGLU, untied LM head, vocabulary padded to a multiple of 128 with the padded
columns left out of the loss) as a PyTorch nn.Module in fp32, and trains it with the step Loom
runs (trainer/trainer.cc): gbs/mbs micro-batches with the loss scaled to the global-batch mean,
global-norm clipping at 1.0, AdamW (0.9, 0.95), eps 1e-8, decay 0.1 on matrices only. Both run
on uniform random tokens with the same thread count, alternating (torch, loom, torch, loom ...)
so that machine noise falls on both; the median tokens/s of each and the ratio loom/torch are
reported. Written for docs/validation/cpu-trainer.md (issue target: ratio >= 0.8).

Run with Debian's interpreter (python3-torch, numpy):
  /usr/bin/python3 scripts/cpu_trainer_benchmark.py --model tests/data/models/llama-10m.yaml \
      --mbs 4 --gbs 8 --seq 256 --steps 5 --repeats 3
"""
import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tests/data/models/llama-10m.yaml", help="Loom preset YAML")
    p.add_argument("--mbs", type=int, default=4)
    p.add_argument("--gbs", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="timed iterations per trial")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed PyTorch iterations per trial (Loom drops its first iteration)")
    p.add_argument("--repeats", type=int, default=3, help="trials of each, alternating")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--attention", choices=["sdpa", "math"], default="sdpa",
                   help="PyTorch attention: the fused scaled-dot-product op, or matmul+softmax")
    p.add_argument("--loom", default=os.path.join(REPO, "build-train/cli/loom"))
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p.parse_args()


ARGS = parse_args()
# OpenBLAS keeps its own thread pool: size it before torch loads it.
os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.threads)
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402


def load_preset(path):
    with open(path) as f:
        m = yaml.safe_load(f)
    for key, want in (("norm", "rmsnorm"), ("mlp", "swiglu"), ("position", "rope")):
        if m.get(key) != want:
            sys.exit(f"{path}: {key} is {m.get(key)!r}; this benchmark builds only {want}")
    if m.get("tied_embeddings", False):
        sys.exit(f"{path}: tied_embeddings is true; this benchmark builds an untied head")
    m.setdefault("num_kv_heads", m["num_heads"])
    m["head_dim"] = m.get("head_dim") or m["hidden_size"] // m["num_heads"]
    # Loom's ModelSpec::padded_vocab(1): vocabulary rounded up to a multiple of 128.
    m["padded_vocab"] = (m["vocab_size"] + 127) // 128 * 128
    return m


class RMSNorm(nn.Module):
    def __init__(self, h, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(h))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Block(nn.Module):
    def __init__(self, m, attention):
        super().__init__()
        h, d = m["hidden_size"], m["head_dim"]
        self.heads, self.kv_heads, self.d = m["num_heads"], m["num_kv_heads"], d
        self.attention = attention
        self.attn_norm = RMSNorm(h, m["norm_eps"])
        self.wq = nn.Linear(h, self.heads * d, bias=False)
        self.wk = nn.Linear(h, self.kv_heads * d, bias=False)
        self.wv = nn.Linear(h, self.kv_heads * d, bias=False)
        self.wo = nn.Linear(self.heads * d, h, bias=False)
        self.mlp_norm = RMSNorm(h, m["norm_eps"])
        f = m["ffn_hidden_size"]
        self.w_gate = nn.Linear(h, f, bias=False)
        self.w_up = nn.Linear(h, f, bias=False)
        self.w_down = nn.Linear(f, h, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        xn = self.attn_norm(x)
        q = self.wq(xn).view(b, t, self.heads, self.d).transpose(1, 2)  # [B, H, T, D]
        k = self.wk(xn).view(b, t, self.kv_heads, self.d).transpose(1, 2)
        v = self.wv(xn).view(b, t, self.kv_heads, self.d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        group = self.heads // self.kv_heads  # query head i reads kv head i // group (as Loom)
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        if self.attention == "sdpa" and hasattr(F, "scaled_dot_product_attention"):  # torch >= 2.0
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif self.attention == "sdpa":  # torch 1.13: the same op under its private name
            o, _ = F._scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            s = (q @ k.transpose(-1, -2)) / math.sqrt(self.d)
            mask = torch.ones(t, t, dtype=torch.bool).triu(1)
            o = torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1) @ v
        x = x + self.wo(o.transpose(1, 2).reshape(b, t, self.heads * self.d))
        xn = self.mlp_norm(x)
        return x + self.w_down(F.silu(self.w_gate(xn)) * self.w_up(xn))


class Model(nn.Module):
    def __init__(self, m, attention):
        super().__init__()
        self.m = m
        self.embed = nn.Embedding(m["padded_vocab"], m["hidden_size"])
        self.layers = nn.ModuleList(Block(m, attention) for _ in range(m["num_layers"]))
        self.final_norm = RMSNorm(m["hidden_size"], m["norm_eps"])
        self.lm_head = nn.Linear(m["hidden_size"], m["padded_vocab"], bias=False)
        # Loom's init: N(0, 0.02), residual projections / sqrt(2 L) (trainer.cc).
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02
                if name.endswith("wo.weight") or name.endswith("w_down.weight"):
                    std /= math.sqrt(2 * m["num_layers"])
                nn.init.normal_(p, 0.0, std)

    def forward(self, tokens, cos, sin):
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin)
        logits = self.lm_head(self.final_norm(x))
        return logits[..., : self.m["vocab_size"]]  # padded columns are not in the loss


def rope_tables(t, d, theta):
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
    ang = torch.outer(torch.arange(t, dtype=torch.float32), inv_freq)
    ang = torch.cat((ang, ang), dim=-1)  # rotate-half layout: [T, D]
    return ang.cos(), ang.sin()


def torch_trial(m, a, seed):
    """Trains a fresh model for warmup + steps iterations; returns (tokens/s, first loss)."""
    torch.manual_seed(seed)
    model = Model(m, a.attention)
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, foreach=True)
    cos, sin = rope_tables(a.seq, m["head_dim"], m["rope_theta"])
    micro = a.gbs // a.mbs
    times, first_loss = [], None
    for it in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for _ in range(micro):
            tok = torch.randint(0, m["vocab_size"], (a.mbs, a.seq + 1))
            logits = model(tok[:, :-1], cos, sin)
            loss = F.cross_entropy(logits.reshape(-1, m["vocab_size"]), tok[:, 1:].reshape(-1))
            (loss / micro).backward()
            loss_sum += loss.item() / micro
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        if it == 0:
            first_loss = loss_sum
        if it >= a.warmup:
            times.append(dt)
    return a.gbs * a.seq / statistics.mean(times), first_loss


def loom_trial(a, seed):
    """One `loom train` process of 1 + steps iterations (Loom times all but its first)."""
    cmd = [a.loom, "train", "--model", a.model, "--synthetic", "--steps", str(a.steps + 1),
           "--mbs", str(a.mbs), "--gbs", str(a.gbs), "--seq", str(a.seq), "--lr", str(a.lr),
           "--threads", str(a.threads), "--seed", str(seed), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    summary = json.loads(r.stdout)
    # Iteration lines go to stderr with --json (no --quiet): the first one has the initial loss.
    first = re.search(r"lm loss: ([0-9.eE+-]+)", r.stderr)
    return summary["tokens_per_s"], float(first.group(1)) if first else float("nan"), cmd


def blas_library():
    """The BLAS shared object torch has mapped (Debian's libblas.so.3 is an alternative)."""
    torch.randn(64, 64) @ torch.randn(64, 64)
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if re.search(r"(blas|mkl|blis|dnnl)", os.path.basename(path)):
                libs.add(os.path.realpath(path))
    return sorted(libs)


def environment(a):
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip() != ""
    blas_info = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": a.threads,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torch_blas_info": blas_info.group(1) if blas_info else "unknown",
        "torch_blas_libraries": blas_library(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()
        if hasattr(torch.backends, "cpu") else "unknown",
        "loom_commit": commit + ("+uncommitted" if dirty else ""),
        "load_average_before": list(os.getloadavg()),
    }


def main():
    a = ARGS
    if a.gbs % a.mbs:
        sys.exit(f"--gbs {a.gbs} is not a multiple of --mbs {a.mbs}")
    a.model = os.path.abspath(a.model)
    torch.set_num_threads(a.threads)
    m = load_preset(a.model)
    env = environment(a)
    torch_tps, loom_tps, torch_loss0, loom_loss0, loom_cmd = [], [], [], [], None
    for r in range(a.repeats):  # alternate so that load changes fall on both
        tps, l0 = torch_trial(m, a, seed=1234 + r)
        torch_tps.append(tps)
        torch_loss0.append(l0)
        tps, l0, loom_cmd = loom_trial(a, seed=1234 + r)
        loom_tps.append(tps)
        loom_loss0.append(l0)
    env["load_average_after"] = list(os.getloadavg())
    t_med, l_med = statistics.median(torch_tps), statistics.median(loom_tps)
    result = {
        "model": m["name"],
        "params": sum(p.numel() for p in Model(m, a.attention).parameters()),
        "mbs": a.mbs, "gbs": a.gbs, "seq": a.seq, "steps": a.steps, "warmup": a.warmup,
        "repeats": a.repeats, "attention": a.attention,
        "torch_tokens_per_s": torch_tps, "loom_tokens_per_s": loom_tps,
        "torch_median_tokens_per_s": t_med, "loom_median_tokens_per_s": l_med,
        "ratio_loom_over_torch": l_med / t_med,
        # Trial i of each ran back to back: their ratio sees the same load (robust when it varies).
        "paired_ratio_median": statistics.median(l / t for l, t in zip(loom_tps, torch_tps)),
        "log_vocab": math.log(m["vocab_size"]),
        "torch_initial_loss": torch_loss0, "loom_initial_loss": loom_loss0,
        "loom_command": " ".join(loom_cmd),
        "environment": env,
    }
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{m['name']} ({result['params']:,} parameters), mbs {a.mbs} gbs {a.gbs} seq {a.seq}, "
          f"{a.threads} threads, {a.repeats} alternating trials of {a.steps} timed iterations")
    print(f"{'':8} {'median tok/s':>12}  {'trials tok/s':<30} {'initial loss':>12}")
    for name, tps, l0 in (("torch", torch_tps, torch_loss0), ("loom", loom_tps, loom_loss0)):
        trials = " ".join(f"{x:.0f}" for x in tps)
        print(f"{name:8} {statistics.median(tps):12.0f}  {trials:<30} {l0[0]:12.4f}")
    print(f"ratio loom/torch: {l_med / t_med:.2f} (target >= 0.8); median of paired trial "
          f"ratios: {result['paired_ratio_median']:.2f}; log(vocab) = {math.log(m['vocab_size']):.4f}")
    print(f"environment: {json.dumps(env)}")


if __name__ == "__main__":
    main()
