#!/usr/bin/env python3
"""External parity: zipage vs Hugging Face transformers on random models made by
`zipage mkmodel` (fp32 weights, CPU math on both sides).

For each architecture: logits of every position of a 64-token prompt (max |diff| <= 1e-4)
and 64 greedy tokens (identical ids). Writes a JSON report and prints a table.

usage: hf_parity.py ZIPAGE_BINARY OUT_JSON [MODEL_DIR ...]
With MODEL_DIRs given (e.g. a trained model), those are checked instead of random ones.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from transformers import AutoModelForCausalLM

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

ARCHS = {
    "qwen3": "--hidden 128 --layers 3 --heads 4 --kv-heads 2 --head-dim 32 --intermediate 256",
    "qwen2": "--hidden 128 --layers 3 --heads 4 --kv-heads 2 --head-dim 32 --intermediate 256",
    "llama": "--hidden 128 --layers 3 --heads 8 --kv-heads 2 --head-dim 16 --intermediate 320",
}


def tokenizer_ids(model_dir):
    """Number of ids the model's tokenizer.json can produce (0 when there is none)."""
    path = os.path.join(model_dir, "tokenizer.json")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        t = json.load(f)
    ids = list(t["model"]["vocab"].values()) + [a["id"] for a in t.get("added_tokens", [])]
    return max(ids) + 1


def check(zp, model_dir, name, n_prompt=64, n_gen=64, seed=0):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    vocab = model.config.vocab_size
    rng = np.random.default_rng(seed)
    prompt = [int(x) for x in rng.integers(0, min(vocab, 256), n_prompt)]
    with torch.no_grad():
        ref = model(torch.tensor([prompt])).logits[0].float().numpy()
    with tempfile.NamedTemporaryFile(suffix=".f32") as f:
        subprocess.run([zp, "logits", "--model", model_dir, "--prompt-ids",
                        " ".join(map(str, prompt)), "--out", f.name], check=True)
        got = np.fromfile(f.name, dtype=np.float32).reshape(n_prompt, vocab)
    dlogit = float(np.abs(got - ref).max())
    # HF greedy, by hand: generate() would stop at or suppress end-of-sequence ids, while
    # zipage runs with --ignore-eos; both mask the ids the tokenizer never produces.
    n_valid = tokenizer_ids(model_dir) or vocab
    hf_ids = []
    with torch.no_grad():
        seq = torch.tensor([prompt])
        for _ in range(n_gen):
            row = model(seq).logits[0, -1].float()
            row[n_valid:] = -float("inf")
            nxt = int(torch.argmax(row))
            hf_ids.append(nxt)
            seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
    res = subprocess.run([zp, "generate", "--model", model_dir, "--prompt-ids",
                          " ".join(map(str, prompt)), "--max-tokens", str(n_gen),
                          "--ignore-eos", "--json", "--set", "compress=false"],
                         check=True, capture_output=True, text=True)
    zp_ids = json.loads(res.stdout)["token_ids"]
    first_diff = next((i for i, (a, b) in enumerate(zip(hf_ids, zp_ids)) if a != b), None)
    # Teacher-forced check of zipage's own sequence: each greedy token must be HF's argmax
    # for the same prefix, or tie with it within 1e-5 (random models have near-ties).
    with torch.no_grad():
        tf = model(torch.tensor([prompt + zp_ids])).logits[0, n_prompt - 1:-1].float().numpy()
    tf[:, n_valid:] = -np.inf
    margins = [float(tf[i].max() - tf[i][t]) for i, t in enumerate(zp_ids)]
    div_gap = None
    if first_diff is not None:
        row = np.sort(tf[first_diff])[::-1]
        div_gap = float(row[0] - row[1])
    return {
        "model": name,
        "max_abs_dlogit": dlogit,
        "logits_ok": dlogit <= 1e-4,
        "greedy_identical": hf_ids == zp_ids,
        "first_divergence": first_diff,
        "top2_gap_at_divergence": div_gap,
        "greedy_argmax_consistent": max(margins) <= 1e-5,
        "max_margin_below_argmax": max(margins),
        "n_prompt": n_prompt,
        "n_gen": n_gen,
    }


def main():
    zp, out_json = sys.argv[1], sys.argv[2]
    dirs = sys.argv[3:]
    results = []
    if dirs:
        for d in dirs:
            results.append(check(zp, d, os.path.basename(d.rstrip("/"))))
    else:
        for i, (arch, dims) in enumerate(ARCHS.items()):
            d = tempfile.mkdtemp(prefix=f"zp_{arch}_")
            subprocess.run([zp, "mkmodel", "--arch", arch, *dims.split(), "--vocab", "512",
                            "--seed", str(100 + i), "--dtype", "f32", "--out", d], check=True)
            results.append(check(zp, d, f"random {arch}", seed=i))
    with open(out_json, "w") as f:
        json.dump({"transformers": __import__("transformers").__version__,
                   "torch": torch.__version__, "results": results}, f, indent=1)
    print(f"{'model':<22} {'max|dlogit|':>12} {'logits<=1e-4':>13} {'greedy identical':>17} "
          f"{'argmax-consistent':>18} {'gap at divergence':>18}")
    for r in results:
        gap = "-" if r["top2_gap_at_divergence"] is None else f"{r['top2_gap_at_divergence']:.2e}"
        print(f"{r['model']:<22} {r['max_abs_dlogit']:>12.3e} {str(r['logits_ok']):>13} "
              f"{str(r['greedy_identical']):>17} {str(r['greedy_argmax_consistent']):>18} {gap:>18}")
    ok = all(r["logits_ok"] and r["greedy_identical"] for r in results)
    print("PARITY", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
