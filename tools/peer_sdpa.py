#!/usr/bin/env python3
"""The peer of `zipage bench attention`: torch SDPA decode attention over contiguous bf16 KV on
the same shapes (one query token per sequence, GQA through enable_gqa), timed with CUDA events
(median of --iters after warm-up). Tries cuDNN's SDPA first, then PyTorch's default choice.
Prints a table and, with --json FILE, one JSON object per point (KV bytes read per second)."""
import argparse
import json

import torch
import torch.nn.functional as F


def backend_ctx(name):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([getattr(SDPBackend, name)])


def time_point(B, L, G, hkv, D, iters, backend):
    hq = hkv * G
    q = torch.randn(B, hq, 1, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(B, hkv, L, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(B, hkv, L, D, device="cuda", dtype=torch.bfloat16)

    def run():
        with backend_ctx(backend):
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    for _ in range(3):
        run()
    times = []
    for _ in range(iters):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        run()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1) * 1e-3)
    times.sort()
    med = times[len(times) // 2]
    return med, B * L * hkv * D * 2 * 2 / med / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--contexts", default="2048,8192,16384")
    ap.add_argument("--gqa", default="4,8")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--json")
    a = ap.parse_args()
    out = open(a.json, "w") if a.json else None
    print(f"torch {torch.__version__} SDPA decode, {torch.cuda.get_device_name()}, batch {a.batch}, "
          f"head dim {a.head_dim}, {a.kv_heads} kv heads")
    print(f"{'ctx':>6} {'gqa':>4} {'backend':>18} {'time (us)':>10} {'GB/s':>9}")
    for L in map(int, a.contexts.split(",")):
        for G in map(int, a.gqa.split(",")):
            for backend in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"):
                try:
                    t, gbps = time_point(a.batch, L, G, a.kv_heads, a.head_dim, a.iters, backend)
                except RuntimeError:
                    continue
                print(f"{L:>6} {G:>4} {backend:>18} {t * 1e6:>10.1f} {gbps:>9.0f}")
                if out:
                    out.write(json.dumps({"context": L, "gqa": G, "batch": a.batch, "head_dim": a.head_dim,
                                          "kv_heads": a.kv_heads, "backend": backend, "us": round(t * 1e6, 2),
                                          "gbps": round(gbps, 1)}) + "\n")
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
