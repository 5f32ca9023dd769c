#!/usr/bin/env python3
"""The cuBLAS peer of `zipage bench prefill` (issue "Performance at the ceilings"): the GEMMs of one
layer of a model at M rows, each torch.matmul in bf16 (cuBLAS) of an [M, K] activation by a
[N, K] weight transposed, as zipage's linear layers compute them: the fused QKV projection
(N = (Hq + 2 Hkv) D, K = H), O (N = H, K = Hq D), the fused gate/up projection (N = 2 I, K = H)
and down (N = H, K = I), shapes from a Hugging Face config.json (default: the Qwen3-8B shape of
tools/shapes/qwen3-8b). Each GEMM is timed alone with CUDA events (warm-up, then the median of
--iters runs); its TFLOP/s is 2 M N K / time. The total is FLOP-weighted: the four GEMMs' FLOPs
over the sum of their times (one layer's projections back to back), the figure `zipage bench
prefill --peak-tflops` takes (target: a 4,096-token prompt end to end at >= 70% of it at M =
4,096). Prints one JSON object (and writes it to --json FILE). Random weights; torch's default
cuBLAS settings. Without torch or a CUDA device it exits 77 with a message."""
import argparse
import json
import os
import sys


def shapes(cfg):
    """(name, N, K) of one layer's four GEMMs."""
    H, I = cfg["hidden_size"], cfg["intermediate_size"]
    hq = cfg["num_attention_heads"]
    hkv = cfg.get("num_key_value_heads", hq)
    D = cfg.get("head_dim") or H // hq
    return [("qkv", (hq + 2 * hkv) * D, H), ("o", H, hq * D), ("gate_up", 2 * I, H), ("down", H, I)]


def time_gemm(torch, M, N, K, iters):
    """Median seconds of y = x @ w.T for x [M, K], w [N, K], bf16."""
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16, generator=g)
    w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02
    y = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
    wt = w.t()
    for _ in range(5):
        torch.matmul(x, wt, out=y)
    times = []
    for _ in range(iters):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        torch.matmul(x, wt, out=y)
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1) * 1e-3)
    times.sort()
    del x, w, y
    torch.cuda.empty_cache()
    return times[len(times) // 2]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=os.path.join(here, "shapes", "qwen3-8b", "config.json"))
    ap.add_argument("--m", type=int, default=4096, help="rows (prompt tokens in one step)")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--json", help="also write the JSON object to this file")
    a = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("SKIP peer_gemm: torch is not installed", file=sys.stderr)
        return 77
    if not torch.cuda.is_available():
        print("SKIP peer_gemm: no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 77
    with open(a.config) as f:
        cfg = json.load(f)
    gemms, flops, secs = [], 0, 0.0
    for name, N, K in shapes(cfg):
        t = time_gemm(torch, a.m, N, K, a.iters)
        fl = 2 * a.m * N * K
        flops, secs = flops + fl, secs + t
        gemms.append({"gemm": name, "m": a.m, "n": N, "k": K, "ms": round(t * 1e3, 4),
                      "tflops": round(fl / t / 1e12, 2)})
    out = {"config": a.config, "m": a.m, "device": torch.cuda.get_device_name(),
           "torch": torch.__version__, "cublas": "torch.matmul bf16", "gemms": gemms,
           "total_tflops": round(flops / secs / 1e12, 2)}
    text = json.dumps(out)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
