#!/usr/bin/env python3
"""Independent NumPy reference forward pass for Hugging Face causal-LM folders.

Reads config.json and the safetensors weights (one file, or shards listed in
model.safetensors.index.json) of a LlamaForCausalLM, Qwen2ForCausalLM or BloomForCausalLM folder,
runs the forward pass in float64 following the conventions of transformers' modeling_llama.py,
modeling_qwen2.py and modeling_bloom.py, and writes the logits [T, vocab] as .npy.
It is written from those published definitions, not from Loom's C++: it is the independent check
of `loom export-hf` (tests/checkpoint/hf_reference_forward_test.cc). NumPy only; no torch.

  /usr/bin/python3 scripts/hf_reference_forward.py --model DIR --tokens "1 2 3" --out logits.npy
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np

# safetensors dtype -> numpy dtype of the stored bits (BF16 is widened by hand below).
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
           "I64": "<i8", "I32": "<i4", "U8": "u1"}


def read_safetensors(path):
    """{name: float64 array} from one safetensors file (8-byte LE length, JSON header, data)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    header.pop("__metadata__", None)
    out = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        raw = np.frombuffer(data[8 + n + begin:8 + n + end], dtype=_DTYPES[e["dtype"]])
        if e["dtype"] == "BF16":  # bfloat16 = the upper 16 bits of a float32
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        out[name] = raw.astype(np.float64).reshape(e["shape"])
    return out


def load_weights(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    weights = {}
    for name in files:
        weights.update(read_safetensors(os.path.join(model_dir, name)))
    return weights


# --- building blocks (float64) --------------------------------------------------------------

def rms_norm(x, w, eps):
    # LlamaRMSNorm: x * rsqrt(mean(x^2) + eps) * weight
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def layer_norm(x, w, b, eps):
    mu = np.mean(x, axis=-1, keepdims=True)
    var = np.mean((x - mu) ** 2, axis=-1, keepdims=True)  # biased, as torch.nn.LayerNorm
    return (x - mu) / np.sqrt(var + eps) * w + b


def linear(x, weights, name):
    # nn.Linear: y = x W^T + b, weights stored [out, in]
    y = x @ weights[name + ".weight"].T
    bias = weights.get(name + ".bias")
    return y if bias is None else y + bias


def silu(x):
    return x / (1.0 + np.exp(-x))


def bloom_gelu(x):
    # modeling_bloom.bloom_gelu_forward: tanh approximation with the constant 0.79788456
    return x * 0.5 * (1.0 + np.tanh(0.79788456 * x * (1.0 + 0.044715 * x * x)))


def rope_cos_sin(seq_len, dim, theta):
    """LlamaRotaryEmbedding: inv_freq and the angles in float32 as transformers computes them."""
    exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    inv_freq = (np.float32(1.0) / (np.float32(theta) ** exponents)).astype(np.float32)
    freqs = np.outer(np.arange(seq_len, dtype=np.float32), inv_freq).astype(np.float32)
    emb = np.concatenate([freqs, freqs], axis=-1).astype(np.float64)
    return np.cos(emb), np.sin(emb)  # [T, dim]


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def alibi_slopes(n_head):
    """modeling_bloom.build_alibi_tensor's slopes (Press et al. 2022), in float64."""
    closest = 2 ** math.floor(math.log2(n_head))
    base = 2.0 ** (-(2.0 ** -(math.log2(closest) - 3)))
    slopes = [base ** p for p in range(1, closest + 1)]
    if closest != n_head:
        extra_base = 2.0 ** (-(2.0 ** -(math.log2(2 * closest) - 3)))
        remaining = min(closest, n_head - closest)
        slopes += [extra_base ** p for p in range(1, 1 + 2 * remaining, 2)]
    return np.array(slopes, dtype=np.float64)


def attention(q, k, v, bias=None):
    """Causal attention. q [T, Hq, D], k/v [T, Hkv, D]; bias [Hq, T, T] or None."""
    t, hq, d = q.shape
    n_rep = hq // k.shape[1]
    k = np.repeat(k, n_rep, axis=1)  # repeat_kv: kv head j serves q heads j*n_rep .. +n_rep-1
    v = np.repeat(v, n_rep, axis=1)
    scores = np.einsum("thd,shd->hts", q, k) / math.sqrt(d)
    if bias is not None:
        scores = scores + bias
    future = np.triu(np.ones((t, t), dtype=bool), k=1)  # key s > query t is masked
    scores = np.where(future[None], -np.inf, scores)
    scores = scores - scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p = p / p.sum(axis=-1, keepdims=True)
    return np.einsum("hts,shd->thd", p, v).reshape(t, hq * d)


def lm_head(cfg, w, embed_name, tied_default):
    """The output matrix: the word embedding when tied (transformers re-ties it on load)."""
    if cfg.get("tie_word_embeddings", tied_default):
        return w[embed_name]
    if "lm_head.weight" not in w:
        raise SystemExit("tie_word_embeddings is false but the weights have no lm_head.weight")
    return w["lm_head.weight"]


# --- architectures --------------------------------------------------------------------------

def llama_forward(cfg, w, tokens):
    """LlamaForCausalLM / Qwen2ForCausalLM (q/k/v biases come from the weights when present)."""
    if cfg.get("rope_scaling"):
        raise SystemExit("rope_scaling %r is not supported by this reference" % cfg["rope_scaling"])
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise SystemExit("hidden_act %r is not supported (silu only)" % act)
    h = cfg["hidden_size"]
    hq = cfg["num_attention_heads"]
    hkv = cfg.get("num_key_value_heads") or hq
    d = cfg.get("head_dim") or h // hq
    eps = cfg.get("rms_norm_eps", 1e-6)
    theta = cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0))
    t = len(tokens)
    cos, sin = rope_cos_sin(t, d, theta)
    x = w["model.embed_tokens.weight"][tokens]
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        n = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = linear(n, w, p + "self_attn.q_proj").reshape(t, hq, d)
        k = linear(n, w, p + "self_attn.k_proj").reshape(t, hkv, d)
        v = linear(n, w, p + "self_attn.v_proj").reshape(t, hkv, d)
        q = q * cos[:, None] + rotate_half(q) * sin[:, None]
        k = k * cos[:, None] + rotate_half(k) * sin[:, None]
        x = x + linear(attention(q, k, v), w, p + "self_attn.o_proj")
        n = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = silu(linear(n, w, p + "mlp.gate_proj"))
        x = x + linear(gate * linear(n, w, p + "mlp.up_proj"), w, p + "mlp.down_proj")
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = lm_head(cfg, w, "model.embed_tokens.weight", tied_default=False)
    return x @ head.T


def bloom_forward(cfg, w, tokens):
    """BloomForCausalLM: embedding LayerNorm, ALiBi, fused per-head qkv, tanh GeLU, tied head."""
    w = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in w.items()}
    h = cfg.get("hidden_size", cfg.get("n_embed"))
    heads = cfg.get("n_head", cfg.get("num_attention_heads"))
    layers = cfg.get("n_layer", cfg.get("num_hidden_layers"))
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    post_ln_residual = cfg.get("apply_residual_connection_post_layernorm", False)
    d = h // heads
    t = len(tokens)
    # build_alibi_tensor: slope * key position, the same for every query (softmax is
    # shift-invariant per row, so this equals -slope * (query - key) under the causal mask).
    bias = alibi_slopes(heads)[:, None, None] * np.arange(t, dtype=np.float64)[None, None, :]
    bias = np.broadcast_to(bias, (heads, t, t))
    x = layer_norm(w["word_embeddings.weight"][tokens], w["word_embeddings_layernorm.weight"],
                   w["word_embeddings_layernorm.bias"], eps)
    for i in range(layers):
        p = "h.%d." % i
        n = layer_norm(x, w[p + "input_layernorm.weight"], w[p + "input_layernorm.bias"], eps)
        residual = n if post_ln_residual else x
        fused = linear(n, w, p + "self_attention.query_key_value").reshape(t, heads, 3, d)
        q, k, v = fused[:, :, 0], fused[:, :, 1], fused[:, :, 2]  # _split_heads
        x = residual + linear(attention(q, k, v, bias), w, p + "self_attention.dense")
        n = layer_norm(x, w[p + "post_attention_layernorm.weight"],
                       w[p + "post_attention_layernorm.bias"], eps)
        residual = n if post_ln_residual else x
        x = residual + linear(bloom_gelu(linear(n, w, p + "mlp.dense_h_to_4h")), w,
                              p + "mlp.dense_4h_to_h")
    x = layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], eps)
    head = lm_head(cfg, w, "word_embeddings.weight", tied_default=True)
    return x @ head.T


def forward(model_dir, tokens):
    """Logits [T, vocab] (float64) of the folder's model for the token ids."""
    config_path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(config_path):
        raise SystemExit("%s: no config.json (expected a Hugging Face model folder)" % model_dir)
    with open(config_path) as f:
        cfg = json.load(f)
    weights = load_weights(model_dir)
    tokens = np.asarray(tokens, dtype=np.int64)
    vocab = cfg["vocab_size"]
    if tokens.size == 0 or tokens.min() < 0 or tokens.max() >= vocab:
        raise SystemExit("token ids must be non-empty and in [0, %d)" % vocab)
    model_type = cfg.get("model_type")
    if model_type in ("llama", "mistral", "qwen2"):
        return llama_forward(cfg, weights, tokens)
    if model_type == "bloom":
        return bloom_forward(cfg, weights, tokens)
    raise SystemExit("model_type %r is not supported (llama, qwen2, bloom)" % model_type)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="folder with config.json and safetensors")
    ap.add_argument("--tokens", help='token ids, e.g. "1 2 3"')
    ap.add_argument("--tokens-file", help="file of whitespace-separated token ids")
    ap.add_argument("--out", help="write the logits [T, vocab] float64 as .npy")
    ap.add_argument("--print", action="store_true", help="print the logits")
    args = ap.parse_args(argv)
    if (args.tokens is None) == (args.tokens_file is None):
        ap.error("give exactly one of --tokens and --tokens-file")
    text = args.tokens if args.tokens is not None else open(args.tokens_file).read()
    tokens = [int(s) for s in text.replace(",", " ").split()]
    logits = forward(args.model, tokens)
    if args.out:
        np.save(args.out, logits)
    if args.print or not args.out:
        np.set_printoptions(precision=6, suppress=True, linewidth=120)
        print(logits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
