#!/usr/bin/env python3
"""PyTorch measurements on one GPU for Loom's cluster profile and as the trainer's yardstick.

Measures, with CUDA events, on the local GPU:
  gemm       bf16 GEMMs of the shapes Loom's simulator prices (simulator/block_ops.cc: qkv,
             attn_out, mlp_in (gate+up), mlp_out, lm_head; forward, data gradient, weight
             gradient) for a few Llama shapes and token counts, as achieved TFLOP/s and as a
             fraction of the profile's dense peak;
  attention  causal scaled_dot_product_attention (flash, cuDNN and the default choice),
             forward and backward, FLOPs counted as the simulator counts them (causal half,
             backward 2.5 x forward);
  memory     HBM bandwidth of a copy, an add and a scale over multi-GB tensors (bytes read +
             written), and the time of a tiny element-wise kernel (launch + tail);
  train      a Llama-style model trained with PyTorch (fp32 master weights under bf16
             autocast, SDPA, fused AdamW, global-norm clipping): step time, tokens/s, MFU
             (Loom's model-FLOP convention, simulator/flops.h), peak memory.

Writes one JSON (--out) and prints a short summary. Each part catches its own errors and records
them, so that one failure does not lose the others. `--dry-run` runs tiny sizes on the CPU to
check the script itself (no timings worth reading).

Example (on the GPU machine):  python3 scripts/gpu_torch_reference.py --out $OUT/torch.json
"""
import argparse
import json
import math
import platform
import sys
import time
import traceback

import torch
import torch.nn.functional as F

# Llama shapes: (name, hidden, q_dim, kv_dim, ffn, vocab). The first is models/llama-1.3b.yaml.
MODELS = [
    ("llama-1.3b", 2048, 2048, 2048, 5632, 32000),
    ("llama2-7b", 4096, 4096, 4096, 11008, 32000),
    ("llama3-8b", 4096, 4096, 1024, 14336, 128256),
]


# Shims so that --dry-run also runs on an old CPU PyTorch (Debian's 1.13 has neither).
if not hasattr(F, "rms_norm"):
    def _rms_norm(x, shape, weight, eps):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight
    F.rms_norm = _rms_norm
if not hasattr(F, "scaled_dot_product_attention"):
    def _sdpa(q, k, v, is_causal=True, enable_gqa=False):
        if k.shape[1] != q.shape[1]:
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        T = q.shape[-2]
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
        return s.masked_fill(mask, float("-inf")).softmax(-1) @ v
    F.scaled_dot_product_attention = _sdpa


def log(msg):
    print(msg, flush=True)


class Timer:
    """Mean time of fn() over `reps` after `warmup` calls, with CUDA events (wall clock on CPU)."""

    def __init__(self, device):
        self.device = device

    def __call__(self, fn, reps=10, warmup=3):
        for _ in range(warmup):
            fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                fn()
            stop.record()
            stop.synchronize()
            return start.elapsed_time(stop) / 1e3 / reps
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps


def gemm_shapes(tokens_list, scale):
    """(model, T, op, pass, m, n, k) as simulator/block_ops.cc names them."""
    out = []
    for name, h, q, kv, f, vocab in MODELS:
        for T in tokens_list:
            T = max(1, T // scale)
            fwd = [("qkv", q + 2 * kv, h), ("attn_out", h, q), ("mlp_in", 2 * f, h),
                   ("mlp_out", h, f), ("lm_head", vocab, h)]
            for op, n, k in fwd:
                n, k = max(1, n // scale), max(1, k // scale)
                out.append((name, T, op, "fwd", T, n, k))
                out.append((name, T, op, "dgrad", T, k, n))
                out.append((name, T, op, "wgrad", k, n, T))
    return out


def run_gemm(args, dev, timer, peak):
    rows = []
    tokens = [2048, 8192, 16384]
    for model, T, op, kind, m, n, k in gemm_shapes(tokens, args.scale):
        # Layouts as a trainer has them: forward X[T,k] W[n,k]^T; dgrad dY[T,n'] W; wgrad dY^T X.
        if kind == "fwd":
            a = torch.randn(m, k, device=dev, dtype=args.dtype)
            b = torch.randn(n, k, device=dev, dtype=args.dtype).t()
        elif kind == "dgrad":
            a = torch.randn(m, k, device=dev, dtype=args.dtype)
            b = torch.randn(k, n, device=dev, dtype=args.dtype)
        else:
            a = torch.randn(k, m, device=dev, dtype=args.dtype).t()
            b = torch.randn(k, n, device=dev, dtype=args.dtype)
        c = torch.empty(m, n, device=dev, dtype=args.dtype)
        flops = 2.0 * m * n * k
        reps = max(3, min(50, int(2e13 / flops)))
        t = timer(lambda: torch.matmul(a, b, out=c), reps=reps)
        rows.append({"model": model, "tokens": T, "op": op, "pass": kind, "m": m, "n": n, "k": k,
                     "seconds": t, "tflops": flops / t / 1e12,
                     "fraction_of_peak": flops / t / peak})
        del a, b, c
    fr = sorted(r["fraction_of_peak"] for r in rows)
    log(f"gemm: {len(rows)} shapes, fraction of peak min {fr[0]:.3f} median "
        f"{fr[len(fr) // 2]:.3f} max {fr[-1]:.3f}")
    return rows


def attention_backends():
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return [("math-only", None)]
    return [("default", None), ("flash", (sdpa_kernel, SDPBackend.FLASH_ATTENTION)),
            ("cudnn", (sdpa_kernel, SDPBackend.CUDNN_ATTENTION))]


def run_attention(args, dev, timer, peak):
    rows = []
    # (label, batch, q heads, kv heads, seq, head_dim)
    cases = [("llama-1.3b mbs8", 8, 16, 16, 2048, 128), ("llama2-7b mbs4 s4096", 4, 32, 32, 4096, 128),
             ("llama3-8b mbs2 s8192 gqa", 2, 32, 8, 8192, 128)]
    for label, b, hq, hkv, s, d in cases:
        s = max(16, s // args.scale)
        q = torch.randn(b, hq, s, d, device=dev, dtype=args.dtype, requires_grad=True)
        k = torch.randn(b, hkv, s, d, device=dev, dtype=args.dtype, requires_grad=True)
        v = torch.randn(b, hkv, s, d, device=dev, dtype=args.dtype, requires_grad=True)
        do = torch.randn(b, hq, s, d, device=dev, dtype=args.dtype)
        fwd_flops = 4.0 * b * hq * s * s * d * 0.5
        for backend, ctx in attention_backends():
            def attn():
                if hkv != hq:
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)

            def fwd_bwd():
                out = attn()
                torch.autograd.backward(out, do)

            def measure():
                with torch.no_grad():
                    tf = timer(attn, reps=10)
                tfb = timer(fwd_bwd, reps=10)
                return tf, tfb

            try:
                if ctx is None:
                    tf, tfb = measure()
                else:
                    with ctx[0](ctx[1]):
                        tf, tfb = measure()
            except Exception as e:  # a backend may not support a shape: record why
                rows.append({"case": label, "backend": backend, "error": str(e).splitlines()[0]})
                continue
            tb = max(tfb - tf, 1e-12)
            row = {"case": label, "backend": backend, "batch": b, "q_heads": hq, "kv_heads": hkv,
                   "seq": s, "head_dim": d, "fwd_seconds": tf, "bwd_seconds": tb,
                   "fwd_tflops": fwd_flops / tf / 1e12, "bwd_tflops": 2.5 * fwd_flops / tb / 1e12,
                   "fwd_efficiency": fwd_flops / tf / peak, "bwd_efficiency": 2.5 * fwd_flops / tb / peak}
            rows.append(row)
            log(f"attention {label:26s} {backend:8s} fwd {row['fwd_tflops']:6.1f} TFLOP/s "
                f"({row['fwd_efficiency']:.3f})  bwd {row['bwd_tflops']:6.1f} ({row['bwd_efficiency']:.3f})")
        del q, k, v, do
    return rows


def run_memory(args, dev, timer):
    n = (1 << 30) // max(1, args.scale ** 2)  # 1 Gi elements of bf16 = 2 GiB per tensor
    x = torch.randn(n, device=dev, dtype=args.dtype)
    y = torch.empty_like(x)
    z = torch.empty_like(x)
    el = x.element_size()
    res = {}
    t = timer(lambda: y.copy_(x), reps=20)
    res["copy_gb_s"] = 2 * n * el / t / 1e9
    t = timer(lambda: torch.add(x, y, out=z), reps=20)
    res["add_gb_s"] = 3 * n * el / t / 1e9
    t = timer(lambda: torch.mul(x, 1.5, out=z), reps=20)
    res["scale_gb_s"] = 2 * n * el / t / 1e9
    del x, y, z
    small = torch.randn(1024, device=dev)
    small_out = torch.empty_like(small)
    res["tiny_kernel_us"] = timer(lambda: torch.mul(small, 1.5, out=small_out), reps=200) * 1e6
    log(f"memory: copy {res['copy_gb_s']:.0f} GB/s, add {res['add_gb_s']:.0f}, scale "
        f"{res['scale_gb_s']:.0f}; tiny kernel {res['tiny_kernel_us']:.1f} us")
    return res


# --- the training reference -------------------------------------------------------------------

def rope_tables(seq, dim, theta, dev):
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=dev) / dim))
    ang = torch.outer(torch.arange(seq, dtype=torch.float32, device=dev), inv)
    emb = torch.cat([ang, ang], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


class Block(torch.nn.Module):
    def __init__(self, h, heads, kv_heads, ffn, eps):
        super().__init__()
        self.heads, self.kv_heads, self.d, self.eps, self.ffn = heads, kv_heads, h // heads, eps, ffn
        self.attn_norm = torch.nn.Parameter(torch.ones(h))
        self.wqkv = torch.nn.Linear(h, (heads + 2 * kv_heads) * self.d, bias=False)
        self.wo = torch.nn.Linear(heads * self.d, h, bias=False)
        self.mlp_norm = torch.nn.Parameter(torch.ones(h))
        self.w_gate_up = torch.nn.Linear(h, 2 * ffn, bias=False)
        self.w_down = torch.nn.Linear(ffn, h, bias=False)

    def forward(self, x, cos, sin):
        B, T, H = x.shape
        y = F.rms_norm(x, (H,), self.attn_norm, self.eps)
        qkv = self.wqkv(y).view(B, T, self.heads + 2 * self.kv_heads, self.d).transpose(1, 2)
        q, k, v = qkv.split([self.heads, self.kv_heads, self.kv_heads], dim=1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        gqa = {"enable_gqa": True} if self.kv_heads != self.heads else {}
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, **gqa)
        x = x + self.wo(a.transpose(1, 2).reshape(B, T, self.heads * self.d))
        y = F.rms_norm(x, (H,), self.mlp_norm, self.eps)
        g, u = self.w_gate_up(y).split(self.ffn, dim=-1)
        return x + self.w_down(F.silu(g) * u)


class Llama(torch.nn.Module):
    def __init__(self, layers, h, heads, kv_heads, ffn, vocab, eps=1e-5):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, h)
        self.blocks = torch.nn.ModuleList(Block(h, heads, kv_heads, ffn, eps) for _ in range(layers))
        self.norm = torch.nn.Parameter(torch.ones(h))
        self.head = torch.nn.Linear(h, vocab, bias=False)
        self.h, self.eps, self.d = h, eps, h // heads
        for p in self.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, std=0.02)

    def forward(self, tokens, cos, sin):
        x = self.embed(tokens)
        for blk in self.blocks:
            x = blk(x, cos, sin)
        return self.head(F.rms_norm(x, (self.h,), self.norm, self.eps))


def model_flops_per_token(layers, h, q, kv, ffn, vocab, seq):
    """simulator/flops.h: 6 x N_matmul + 12 x L x s x q_dim."""
    n_matmul = layers * (h * (q + 2 * kv) + q * h + 3 * h * ffn) + vocab * h
    return 6.0 * n_matmul + 12.0 * layers * seq * q


def training_step(dev, dims, mbs, gbs, seq):
    """A Llama of `dims` (layers, h, heads, kv_heads, ffn, vocab) and one-iteration closure: gbs/mbs
    micro-batches under bf16 autocast, the mean loss's backward, clipping at 1.0, fused AdamW."""
    layers, h, heads, kv_heads, ffn, vocab = dims
    torch.manual_seed(0)
    model = Llama(layers, h, heads, kv_heads, ffn, vocab).to(dev)
    fused = {"fused": True} if dev.type == "cuda" else {}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.1, **fused)
    cos, sin = rope_tables(seq, h // heads, 10000.0, dev)
    data = torch.randint(0, vocab, (gbs // mbs, mbs, seq + 1), device=dev)
    amp = dev.type == "cuda"

    def step():
        for mb in range(gbs // mbs):
            x, y = data[mb, :, :-1], data[mb, :, 1:]
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x, cos, sin)
                loss = F.cross_entropy(logits.view(-1, vocab).float(), y.reshape(-1))
            (loss / (gbs // mbs)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return model, step


def model_dims(args):
    """models/llama-1.3b (layers, h, heads, kv_heads, ffn, vocab) and seq; tiny for --dry-run."""
    if args.dry_run:
        return (2, 64, 4, 4, 160, 257), 32
    return (24, 2048, 16, 16, 5632, 32000), args.seq


def run_train(args, dev, timer, peak):
    dims, seq = model_dims(args)
    layers, h, heads, kv_heads, ffn, vocab = dims
    rows = []
    for mbs, gbs in args.train_batches:
        model, step = training_step(dev, dims, mbs, gbs, seq)
        n_params = sum(p.numel() for p in model.parameters())
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = timer(step, reps=args.train_steps, warmup=2)
        peak_alloc = torch.cuda.max_memory_allocated() if dev.type == "cuda" else 0
        peak_reserved = torch.cuda.max_memory_reserved() if dev.type == "cuda" else 0
        tokens = gbs * seq
        flops = model_flops_per_token(layers, h, h, h * kv_heads // heads, ffn, vocab, seq) * tokens
        row = {"model": "llama-1.3b" if not args.dry_run else "dry-run", "params": n_params,
               "mbs": mbs, "gbs": gbs, "seq": seq, "step_seconds": t, "tokens_per_s": tokens / t,
               "model_tflops": flops / t / 1e12, "mfu": flops / t / peak,
               "peak_allocated_gib": peak_alloc / 2**30, "peak_reserved_gib": peak_reserved / 2**30,
               "recipe": "fp32 master weights, bf16 autocast, SDPA causal, fused AdamW, clip 1.0, eager"}
        rows.append(row)
        log(f"train {row['model']} ({n_params / 1e9:.3f} B) mbs {mbs} gbs {gbs} seq {seq}: "
            f"{t:.3f} s/step, {row['tokens_per_s']:.0f} tok/s, MFU {row['mfu'] * 100:.1f}%, "
            f"peak {row['peak_allocated_gib']:.1f} GiB allocated, {row['peak_reserved_gib']:.1f} reserved")
        del model, step
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def write_markdown(result, path):
    """One Markdown summary of the JSON: the figures a reader checks first."""
    lines = [f"# PyTorch reference on {result['device']}", "",
             f"torch {result['torch']}, CUDA {result['cuda']}, cuDNN {result['cudnn']}, "
             f"SMs {result.get('sm_count')}, peak assumed {result['peak_tflops_assumed']} TFLOP/s", ""]
    if result.get("gemm"):
        lines += ["## GEMM (bf16, fraction of the dense peak)", "",
                  "| model | tokens | op | fwd | dgrad | wgrad |", "|---|---|---|---|---|---|"]
        cell = {(r["model"], r["tokens"], r["op"], r["pass"]): r for r in result["gemm"]}
        for (model, T, op, kind), r in cell.items():
            if kind != "fwd":
                continue
            vals = [cell[(model, T, op, k)]["fraction_of_peak"] for k in ("fwd", "dgrad", "wgrad")]
            lines.append(f"| {model} | {T} | {op} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
        lines.append("")
    if result.get("attention"):
        lines += ["## Causal attention (SDPA)", "", "| case | backend | fwd TFLOP/s | fwd eff | bwd TFLOP/s | bwd eff |",
                  "|---|---|---|---|---|---|"]
        for r in result["attention"]:
            if "error" in r:
                lines.append(f"| {r['case']} | {r['backend']} | error: {r['error'][:60]} | | | |")
            else:
                lines.append(f"| {r['case']} | {r['backend']} | {r['fwd_tflops']:.0f} | {r['fwd_efficiency']:.3f} "
                             f"| {r['bwd_tflops']:.0f} | {r['bwd_efficiency']:.3f} |")
        lines.append("")
    if result.get("memory"):
        m = result["memory"]
        lines += ["## Memory bandwidth", "", f"copy {m['copy_gb_s']:.0f} GB/s, add {m['add_gb_s']:.0f} GB/s, "
                  f"scale {m['scale_gb_s']:.0f} GB/s (bytes read + written); tiny kernel {m['tiny_kernel_us']:.1f} us", ""]
    if result.get("train"):
        lines += ["## Training (PyTorch eager)", "", "| model | mbs | gbs | seq | s/step | tokens/s | MFU | peak alloc GiB | peak reserved GiB |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in result["train"]:
            lines.append(f"| {r['model']} | {r['mbs']} | {r['gbs']} | {r['seq']} | {r['step_seconds']:.3f} | "
                         f"{r['tokens_per_s']:.0f} | {r['mfu'] * 100:.1f}% | {r['peak_allocated_gib']:.2f} | "
                         f"{r['peak_reserved_gib']:.2f} |")
        lines.append("")
    if result.get("profile"):
        pr = result["profile"]
        lines += ["## One training step's kernels by kind (torch.profiler)", "",
                  f"mbs {pr['mbs']} gbs {pr['gbs']} seq {pr['seq']}: wall {pr['wall_seconds_profiled']:.3f} s "
                  f"under the profiler, kernels {pr['kernel_seconds_total']:.3f} s", "",
                  "| kind | seconds |", "|---|---|"]
        for k, v in sorted(pr["kernel_seconds_by_kind"].items()):
            lines.append(f"| {k} | {v:.4f} |")
        lines += ["", "| top kernel | kind | seconds |", "|---|---|---|"]
        for t in pr["top_kernels"][:12]:
            lines.append(f"| `{t['name'][:70]}` | {t['kind']} | {t['seconds']:.4f} |")
        lines.append("")
    for part, err in result["errors"].items():
        lines += [f"## {part}: FAILED", "", "```", err.strip(), "```", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def kernel_kind(name):
    """GEMM, attention, optimizer or element-wise, from a CUDA kernel's name."""
    n = name.lower()
    if any(t in n for t in ("flash", "fmha", "cudnn", "sdpa", "attn", "attention")):
        return "attention"
    if any(t in n for t in ("gemm", "nvjet", "cutlass", "xmma", "cublas", "matmul", "splitk")):
        return "gemm"
    if any(t in n for t in ("adam", "multi_tensor", "fused_optim")):
        return "optimizer"
    return "elementwise"


def run_profile(args, dev, timer, peak):
    """Kernel time of one training step by kind (torch.profiler), for the simulator's split."""
    import os
    import tempfile
    from torch.profiler import ProfilerActivity, profile

    mbs, gbs = args.train_batches[-1]
    dims, seq = model_dims(args)
    model, step = training_step(dev, dims, mbs, gbs, seq)

    for _ in range(2):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    path = os.path.join(tempfile.mkdtemp(), "trace.json")
    prof.export_chrome_trace(path)
    with open(path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    kinds, per_name = {}, {}
    for e in events:
        if e.get("cat") != "kernel" or "dur" not in e:
            continue
        k = kernel_kind(e["name"])
        kinds[k] = kinds.get(k, 0.0) + e["dur"] * 1e-6
        per_name[e["name"]] = per_name.get(e["name"], 0.0) + e["dur"] * 1e-6
    top = sorted(per_name.items(), key=lambda kv: -kv[1])[:25]
    res = {"mbs": mbs, "gbs": gbs, "seq": seq, "wall_seconds_profiled": wall,
           "kernel_seconds_by_kind": kinds, "kernel_seconds_total": sum(kinds.values()),
           "top_kernels": [{"name": n[:160], "seconds": t, "kind": kernel_kind(n)} for n, t in top]}
    log(f"profile mbs {mbs} gbs {gbs}: wall {wall:.3f} s (profiled), kernels {res['kernel_seconds_total']:.3f} s: "
        + ", ".join(f"{k} {v:.3f}" for k, v in sorted(kinds.items())))
    del model, step
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--md", help="Markdown summary to write")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the profile")
    p.add_argument("--parts", default="gemm,attention,memory,train,profile")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--train-batches", default="4:16,8:16", help="mbs:gbs pairs")
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (checks the script)")
    args = p.parse_args()
    args.train_batches = [tuple(int(v) for v in s.split(":")) for s in args.train_batches.split(",")]
    dev = torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    if dev.type == "cpu" and not args.dry_run:
        sys.exit("no CUDA device visible to PyTorch; use --dry-run to check the script on the CPU")
    args.scale = 64 if args.dry_run else 1
    args.dtype = torch.float32 if args.dry_run else torch.bfloat16
    if args.dry_run:
        args.train_steps = 1
    peak = args.peak_tflops * 1e12
    timer = Timer(dev)
    result = {"torch": torch.__version__, "python": platform.python_version(),
              "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu (dry run)",
              "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if dev.type == "cuda" else None,
              "peak_tflops_assumed": args.peak_tflops, "errors": {}}
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        result["sm_count"] = props.multi_processor_count
        result["memory_bytes"] = props.total_memory
        torch.backends.cuda.matmul.allow_tf32 = True
    parts = args.parts.split(",")
    jobs = {"gemm": lambda: run_gemm(args, dev, timer, peak),
            "attention": lambda: run_attention(args, dev, timer, peak),
            "memory": lambda: run_memory(args, dev, timer),
            "train": lambda: run_train(args, dev, timer, peak),
            "profile": lambda: run_profile(args, dev, timer, peak)}
    for part in parts:
        t0 = time.time()
        try:
            result[part] = jobs[part]()
        except Exception:
            result["errors"][part] = traceback.format_exc()
            log(f"{part}: FAILED\n{traceback.format_exc()}")
        log(f"({part}: {time.time() - t0:.1f} s)")
        with open(args.out, "w") as f:  # after every part, so that a later crash keeps it
            json.dump(result, f, indent=1)
        if args.md:
            write_markdown(result, args.md)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
