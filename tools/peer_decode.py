#!/usr/bin/env python3
"""The PyTorch peer of zipage's decode step (issue "The engine on the GPU", spec section 4): one
decode step of a random Qwen3-shaped model captured in a CUDA graph, cuBLAS GEMMs and SDPA over a
static contiguous bf16 KV cache, B requests at context L. Reports output tok/s (B / step time)
and the roofline (weight bytes + KV bytes read per step over the copy bandwidth measured in the
same run). Random weights; what is timed is the arithmetic and memory traffic, not the model.
Prints a table and, with --json FILE, one JSON object per point."""
import argparse
import json

import torch
import torch.nn.functional as F

SHAPES = {  # hidden, layers, q heads, kv heads, head dim, intermediate, vocab
    "qwen3-8b": (4096, 36, 32, 8, 128, 12288, 151936),
    "qwen3-1.7b": (2048, 28, 16, 8, 128, 6144, 151936),
}


def copy_bandwidth():
    n = 1 << 31  # 2 GiB each way
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(10):
        b.copy_(a)
    e1.record()
    e1.synchronize()
    bw = 2 * n * 10 / (e0.elapsed_time(e1) * 1e-3)
    del a, b
    torch.cuda.empty_cache()
    return bw


def rms(x, w, eps=1e-6):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def step_time(shape, B, L, iters):
    H, NL, hq, hkv, D, I, V = SHAPES[shape]
    dev, bf = "cuda", torch.bfloat16
    g = torch.Generator(device=dev).manual_seed(0)
    W = lambda *s: (torch.randn(*s, device=dev, dtype=bf, generator=g) * 0.02)
    layers = [dict(qkv=W((hq + 2 * hkv) * D, H), o=W(H, hq * D), gu=W(2 * I, H), down=W(H, I),
                   n1=torch.ones(H, device=dev, dtype=bf), n2=torch.ones(H, device=dev, dtype=bf),
                   qn=torch.ones(D, device=dev, dtype=bf), kn=torch.ones(D, device=dev, dtype=bf))
              for _ in range(NL)]
    emb, lm = W(V, H), W(V, H)
    kc = [torch.randn(B, hkv, L, D, device=dev, dtype=bf, generator=g) for _ in range(NL)]
    vc = [torch.randn(B, hkv, L, D, device=dev, dtype=bf, generator=g) for _ in range(NL)]
    tok = torch.zeros(B, dtype=torch.long, device=dev)
    pos = torch.full((B,), L - 1, dtype=torch.long, device=dev)
    inv = 1.0 / (1e6 ** (torch.arange(0, D, 2, device=dev).float() / D))

    def rope(x):  # x [B, h, 1, D]
        ang = pos.float()[:, None] * inv[None, :]
        c, s = ang.cos()[:, None, None, :].to(bf), ang.sin()[:, None, None, :].to(bf)
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1)

    def step():
        x = emb[tok]
        for l, w in enumerate(layers):
            h = rms(x, w["n1"])
            qkv = h @ w["qkv"].T
            q = qkv[:, : hq * D].view(B, hq, 1, D)
            k = qkv[:, hq * D:(hq + hkv) * D].view(B, hkv, 1, D)
            v = qkv[:, (hq + hkv) * D:].view(B, hkv, 1, D)
            q, k = rope(rms(q, w["qn"])), rope(rms(k, w["kn"]))
            kc[l][:, :, L - 1:L].copy_(k)
            vc[l][:, :, L - 1:L].copy_(v)
            a = F.scaled_dot_product_attention(q, kc[l], vc[l], enable_gqa=True)
            x = x + a.reshape(B, hq * D) @ w["o"].T
            h = rms(x, w["n2"])
            gu = h @ w["gu"].T
            x = x + (F.silu(gu[:, :I]) * gu[:, I:]) @ w["down"].T
        return (rms(x, layers[0]["n1"]) @ lm.T).argmax(-1)

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    for _ in range(3):
        graph.replay()
    times = []
    for _ in range(iters):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        graph.replay()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1) * 1e-3)
    times.sort()
    wbytes = sum(t.numel() * 2 for w in layers for t in w.values()) + emb[0].numel() * 2 * B + lm.numel() * 2
    kvbytes = NL * 2 * B * hkv * L * D * 2
    del layers, kc, vc, out, graph
    torch.cuda.empty_cache()
    return times[len(times) // 2], wbytes, kvbytes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="qwen3-8b", choices=sorted(SHAPES))
    ap.add_argument("--points", default="1x2048,64x2048,64x8192,256x2048")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--json")
    a = ap.parse_args()
    bw = copy_bandwidth()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, {a.shape}, copy bandwidth {bw / 1e9:.0f} GB/s")
    print(f"{'B x L':>10} {'step (ms)':>10} {'tok/s':>9} {'roofline (ms)':>14} {'of roofline':>12}")
    out = open(a.json, "w") if a.json else None
    for p in a.points.split(","):
        B, L = map(int, p.split("x"))
        t, wb, kb = step_time(a.shape, B, L, a.iters)
        roof = (wb + kb) / bw
        print(f"{p:>10} {t * 1e3:>10.2f} {B / t:>9.0f} {roof * 1e3:>14.2f} {roof / t:>11.0%}")
        if out:
            out.write(json.dumps({"shape": a.shape, "batch": B, "context": L, "step_ms": round(t * 1e3, 3),
                                  "tok_s": round(B / t, 1), "roofline_ms": round(roof * 1e3, 3),
                                  "copy_gbps": round(bw / 1e9, 1)}) + "\n")


if __name__ == "__main__":
    main()
