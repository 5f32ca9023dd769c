#!/usr/bin/env python3
"""GPU parity: zipage's CUDA backend against transformers on seeded random models built here
with save_pretrained (issue "The engine on the GPU", checks on the GPU), and against zipage's own
CPU backend on a shipped model.

Per architecture (Qwen3 tied, Qwen2 with q/k/v biases, Llama-3.1 with llama3 RoPE scaling; hidden
1024, 8 layers, 16 query / 8 kv heads, intermediate 3072): random ids, a 512-token prompt
prefilled in one step, then 256 decode steps of one token (teacher-forced: the ids are given).
zipage's bf16 logits and transformers' bf16 logits are both compared with transformers' fp32
logits (TF32 off) on the same bf16 weights: relative L2 error per row, averaged over rows, and
argmax agreement of zipage with transformers' bf16 run (also over the rows whose fp32 top-2
margin exceeds TIE_MARGIN, a diagnostic of near-ties).
Random models: zipage's error <= 1.5x transformers' bf16 error, and argmax agreement with
transformers' bf16 run >= 99% over the rows without an fp32 near-tie (also reported over all
rows).

With --trained DIR (a trained model, e.g. models/zipage-reasoner): the same comparison on real
sequences: problems 0-2 of each JSONL set named by --sets (ChatML prompt + reference trace), the
first 512 tokens prefilled, the next up to 256 teacher-forced decode steps. A trained model's
logits are peaked, so two bf16 runs should pick the same token: agreement >= 99% is checked
here. On the random models it is not: their logits are nearly flat over the whole vocabulary
(the top two of 151,936 logits lie within bf16 rounding of each other on a few percent of rows),
so transformers' own bf16 run agrees with its fp32 run on only 96-97% of rows (docs/PARITY.md).

With --cpu-twin DIR: the same sequence through `zipage logits` on the CPU (f32) and on the GPU.

usage: gpu_parity.py ZIPAGE OUT_JSON [--cpu-twin MODEL_DIR] [--trained MODEL_DIR --sets A,B]
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

N_PROMPT, N_DECODE = 512, 256
TRAINED_PROBLEMS = 3  # --trained: the first problems of each set
TIE_MARGIN = 0.05  # logits closer than this at the top are near-ties for bf16 (diagnostic)
COMMON = dict(hidden_size=1024, num_hidden_layers=8, num_attention_heads=16,
              num_key_value_heads=8, intermediate_size=3072, max_position_embeddings=4096)
ARCHS = {
    "qwen3": ("qwen3", dict(head_dim=128, vocab_size=151936, tie_word_embeddings=True,
                            rope_theta=1000000.0, rms_norm_eps=1e-6)),
    "qwen2": ("qwen2", dict(vocab_size=151936, tie_word_embeddings=False, rope_theta=1000000.0,
                            rms_norm_eps=1e-6)),
    "llama3.1": ("llama", dict(vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0,
                               rms_norm_eps=1e-5,
                               rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                             "original_max_position_embeddings": 8192})),
}


def zp_logits(zp, model_dir, ids, backend, prefill):
    with tempfile.NamedTemporaryFile(suffix=".f32", dir="/tmp") as f:
        t0 = time.time()
        r = subprocess.run([zp, "logits", "--model", model_dir, "--backend", backend,
                            "--prompt-ids", " ".join(map(str, ids)), "--prefill", str(prefill),
                            "--out", f.name], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"zipage logits ({backend}) failed: {r.stderr.strip()}")
        out = np.fromfile(f.name, dtype=np.float32)
        return out.reshape(len(ids), -1), r.stderr.strip(), time.time() - t0


def rel_rows(x, ref):
    """Mean over rows of ||x - ref|| / ||ref||."""
    return float(np.mean(np.linalg.norm(x - ref, axis=1) / np.linalg.norm(ref, axis=1)))


def check_arch(zp, name, seed):
    model_type, extra = ARCHS[name]
    cfg = AutoConfig.for_model(model_type, **COMMON, **extra)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16)
    d = tempfile.mkdtemp(prefix=f"zp_{name}_", dir="/tmp")
    model.save_pretrained(d, safe_serialization=True)
    rng = np.random.default_rng(seed)
    ids = [int(x) for x in rng.integers(0, cfg.vocab_size, N_PROMPT + N_DECODE)]
    x = torch.tensor([ids], device="cuda")
    with torch.no_grad():
        mb = model.to("cuda").eval()
        bf = mb(x).logits[0].float().cpu().numpy()
        mf = mb.float()
        ref = mf(x).logits[0].float().cpu().numpy()
    del model, mb, mf
    torch.cuda.empty_cache()
    got, line, secs = zp_logits(zp, d, ids, "cuda", N_PROMPT)
    res = {"model": name, "backend": line, "zipage_seconds": round(secs, 2)}
    compare(res, got, bf, ref, N_PROMPT)
    a = res["all"]
    res["ok"] = bool(a["nan"] == 0 and a["zipage_rel"] <= 1.5 * a["hf_bf16_rel"] and
                     (a["argmax_agree_hf_bf16_clear"] or 0) >= 0.99)
    return res


def compare(res, got, bf, ref, n_prompt):
    """Fills res["all"] and res["decode"]: zipage (got) and transformers' bf16 (bf) logits
    against transformers' fp32 (ref), rows = positions."""
    for part, sl in (("all", slice(0, None)), ("decode", slice(n_prompt, None))):
        g, b, r = got[sl], bf[sl], ref[sl]
        # rows whose fp32 top-2 margin exceeds TIE_MARGIN: there two bf16 runs should agree
        top2 = np.sort(r, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > TIE_MARGIN
        res[part] = {
            "rows": int(g.shape[0]),
            "zipage_rel": rel_rows(g, r),
            "hf_bf16_rel": rel_rows(b, r),
            "argmax_agree_hf_bf16": float(np.mean(g.argmax(1) == b.argmax(1))),
            "argmax_agree_fp32": float(np.mean(g.argmax(1) == r.argmax(1))),
            "hf_bf16_agree_fp32": float(np.mean(b.argmax(1) == r.argmax(1))),
            "nan": int(np.isnan(g).sum()),
            "clear_rows": int(clear.sum()),
            "argmax_agree_hf_bf16_clear": float(np.mean(g.argmax(1)[clear] == b.argmax(1)[clear]))
            if clear.any() else None,
        }


def check_trained(zp, model_dir, set_path, k):
    """A trained model on problem k of set_path: prompt + reference trace, teacher-forced."""
    from transformers import AutoTokenizer
    with open(set_path) as f:
        prob = json.loads(f.readlines()[k])
    tok = AutoTokenizer.from_pretrained(model_dir)
    text = (f"<|im_start|>user\n{prob['prompt']}<|im_end|>\n<|im_start|>assistant\n"
            f"{prob['trace']}<|im_end|>")
    ids = tok(text)["input_ids"][:N_PROMPT + N_DECODE]
    if len(ids) <= N_PROMPT:
        raise RuntimeError(f"{set_path}: problem {k} has {len(ids)} tokens, need > {N_PROMPT}")
    x = torch.tensor([ids], device="cuda")
    with torch.no_grad():
        m = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.bfloat16)
        mb = m.to("cuda").eval()
        bf = mb(x).logits[0].float().cpu().numpy()
        ref = mb.float()(x).logits[0].float().cpu().numpy()
    del m, mb
    torch.cuda.empty_cache()
    got, line, secs = zp_logits(zp, model_dir, ids, "cuda", N_PROMPT)
    name = f"{os.path.basename(model_dir.rstrip('/'))}:{prob['id']}"
    res = {"model": name, "backend": line, "zipage_seconds": round(secs, 2), "trained": True}
    compare(res, got, bf, ref, N_PROMPT)
    a = res["all"]
    res["ok"] = bool(a["nan"] == 0 and a["zipage_rel"] <= 1.5 * a["hf_bf16_rel"] and
                     a["argmax_agree_hf_bf16"] >= 0.99)
    return res


def cpu_twin(zp, model_dir):
    vocab = json.load(open(os.path.join(model_dir, "config.json")))["vocab_size"]
    rng = np.random.default_rng(7)
    ids = [int(x) for x in rng.integers(0, vocab, 384)]
    cpu, _, _ = zp_logits(zp, model_dir, ids, "cpu", 256)
    gpu, line, _ = zp_logits(zp, model_dir, ids, "cuda", 256)
    return {"model": os.path.basename(model_dir.rstrip("/")), "backend": line,
            "rows": len(ids), "rel": rel_rows(gpu, cpu),
            "argmax_agree": float(np.mean(gpu.argmax(1) == cpu.argmax(1))),
            "nan": int(np.isnan(gpu).sum())}


def main():
    zp, out_json = sys.argv[1], sys.argv[2]
    opts = dict(zip(sys.argv[3::2], sys.argv[4::2]))
    if len(sys.argv) % 2 == 0 or not set(opts) <= {"--cpu-twin", "--trained", "--sets"}:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    twin_dir, trained = opts.get("--cpu-twin"), opts.get("--trained")
    sets = [p for p in opts.get("--sets", "").split(",") if p]
    report = {"transformers": transformers.__version__, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(0), "results": []}
    ok = True
    if twin_dir:
        t = cpu_twin(zp, twin_dir)
        report["cpu_twin"] = t
        print(f"cpu twin {t['model']}: rel {t['rel']:.3e}, argmax agree {t['argmax_agree']:.4f}, "
              f"NaN {t['nan']}")
    print(f"{'model':<10} {'rows':>5} {'zipage rel':>11} {'hf bf16 rel':>12} {'ratio':>6} "
          f"{'agree bf16':>10} {'agree fp32':>10} {'hf bf16~fp32':>12} {'clear rows agree':>17}  ok")
    jobs = [(name, lambda n=name, i=i: check_arch(zp, n, 1000 + i))
            for i, name in enumerate(ARCHS)]
    if trained:
        jobs += [(os.path.basename(p), lambda p=p, k=k: check_trained(zp, trained, p, k))
                 for p in sets for k in range(TRAINED_PROBLEMS)]
    for name, job in jobs:
        try:
            r = job()
        except Exception as e:  # a failure is reported, and the other models still run
            r = {"model": name, "error": str(e), "ok": False}
            print(f"{name:<10} ERROR {e}")
        report["results"].append(r)
        ok &= r["ok"]
        for part in ("all", "decode"):
            if part not in r:
                continue
            a = r[part]
            print(f"{r['model'] + ' ' + part:<10} {a['rows']:>5} {a['zipage_rel']:>11.3e} "
                  f"{a['hf_bf16_rel']:>12.3e} {a['zipage_rel'] / a['hf_bf16_rel']:>6.2f} "
                  f"{a['argmax_agree_hf_bf16']:>10.4f} {a['argmax_agree_fp32']:>10.4f} "
                  f"{a['hf_bf16_agree_fp32']:>12.4f} "
                  f"{a['argmax_agree_hf_bf16_clear'] or 0:>9.4f} ({a['clear_rows']:>4}) "
                  f" {r['ok'] if part == 'all' else ''}")
    with open(out_json, "w") as f:
        json.dump(report, f, indent=1)
    print("GPU PARITY", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
