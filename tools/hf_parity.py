#!/usr/bin/env python3
"""External parity: zipage's CPU backend against Hugging Face transformers, fp32 on both sides.

A case is a name, the model zipage loads (--model PATH), a function that loads the same model
in transformers, and the number of ids its tokenizer can produce. Every case goes through the
same comparison (check):
  * logits of every position of a prompt (default 256 ids: random, seeded by --seed and the
    case's name, or with --text the start of a real text for the named cases), from zipage `logits` twice: the whole prompt in one prefill step, and a
    prefill of its first --prefill ids followed by one decode step per remaining id; max
    |diff| against transformers' forward pass must be <= --tol (1e-4) in both, or, where
    fp32 rounding alone is larger than that (a real 30-layer model's logits reach |40|),
    zipage's max |diff| from transformers' float64 forward pass (the same weights in fp64)
    must be at most --fp64-ratio (2) times transformers' own fp32 max |diff| from it: no
    implementation that sums in another order can be closer to transformers than both
    rounding errors together, and this asks zipage's to be of the same size;
  * --gen (128) greedy tokens: zipage `generate --ignore-eos` with compress=false against a
    hand-written greedy loop over transformers' logits with its KV cache (generate() would
    stop at or suppress end-of-sequence ids); both mask the ids the tokenizer never produces.
    The ids must be identical. A teacher-forced pass also reports whether each zipage token
    is transformers' argmax for zipage's own prefix (within 1e-5: random models have
    near-ties) and the top-2 gap where the sequences part.

Cases: each MODEL_DIR given (e.g. a trained model), and the random ones when no case is
named or with --random: Qwen3 (q/k norms), Qwen2 (q/k/v biases) and Llama-3 (llama3
RoPE scaling) directories made by `zipage mkmodel` (seeded, fp32 weights), and (unless
--no-gguf) the same three converted to GGUF by tools/hf_to_gguf.py in quantized types
(GGUF_TYPES), which transformers dequantizes to fp32 as zipage does. --gguf FILE adds a GGUF
file (e.g. SmolLM2-135M-Instruct: tools/fetch-smollm2.sh).

usage: hf_parity.py ZIPAGE OUT_JSON [MODEL_DIR ...] [--gguf FILE ...] [--random] [--no-gguf]
                    [--prompt N] [--gen N] [--prefill N] [--tol X] [--fp64-ratio R] [--text F]
                    [--seed S] [--backend cpu]
Writes a JSON report, prints a table and exits 0 when every case passes, 1 otherwise.
"""
import argparse
import collections
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

# name: the zipage model path, a function returning the transformers model (fp32, eval mode),
# and the ids the tokenizer can produce (greedy decoding on both sides masks the rest)
# named: a model given on the command line (its prompt comes from --text when given)
Case = collections.namedtuple("Case", "name zp_model load_hf n_valid named", defaults=[False])

# `zipage mkmodel` arguments of the random cases. Llama's head dim 16 with rope_theta 500000
# puts its rotary frequencies in all three llama3 scaling bands (kept, blended, divided by 8).
# Untied: mkmodel's embeddings are N(0, 1), so tied logits would be ~12x larger (std ~12) and
# fp32 rounding alone would take most of the 1e-4 absolute bound. Qwen3's head dim is 128, its
# real value, because transformers ignores qwen3.attention.key_length when it loads a GGUF.
RANDOM = {
    "qwen3": "--hidden 128 --layers 3 --heads 4 --kv-heads 2 --head-dim 128 --intermediate 256",
    "qwen2": "--hidden 128 --layers 3 --heads 4 --kv-heads 2 --intermediate 256",
    "llama": "--hidden 128 --layers 3 --heads 8 --kv-heads 2 --head-dim 16 --intermediate 320",
}


def tokenizer_ids(model_dir):
    """Number of ids the directory's tokenizer.json can produce (None when there is none)."""
    path = os.path.join(model_dir, "tokenizer.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        t = json.load(f)
    ids = list(t["model"]["vocab"].values()) + [a["id"] for a in t.get("added_tokens", [])]
    return max(ids) + 1


def dir_case(name, model_dir):
    """A Hugging Face model directory, loaded by both sides from the same files."""
    def load():
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return Case(name, model_dir, load, tokenizer_ids(model_dir))


def gguf_case(name, path, n_valid=None):
    """A GGUF file: transformers dequantizes it to fp32 as zipage's loader does."""
    def load():
        return AutoModelForCausalLM.from_pretrained(
            os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path),
            dtype=torch.float32).eval()
    if n_valid is None:
        import gguf
        f = gguf.GGUFReader(path).fields.get("tokenizer.ggml.tokens")
        n_valid = len(f.data) if f is not None else None
    return Case(name, path, load, n_valid)


# Tensor types of the random GGUF cases (tools/hf_to_gguf.py), one architecture each, so every
# type the converter writes crosses zipage's loader once; llama's q/k rows are permuted.
GGUF_TYPES = {"qwen3": ("Q8_0", "F16"), "qwen2": ("Q4_0", "BF16"), "llama": ("Q4_1", "Q8_0")}


def random_gguf_cases(work, dir_cases):
    """The random directories converted to GGUF. Without rope scaling: transformers ignores
    llama.cpp's rope_freqs.weight (zipage applies it; tests/test_gguf_model.sh covers it)."""
    cases = []
    here = os.path.dirname(os.path.abspath(__file__))
    for c in dir_cases:
        arch = c.name.split()[-1]
        qtype, etype = GGUF_TYPES[arch]
        out = os.path.join(work, f"random-{arch}.gguf")
        subprocess.run([sys.executable, os.path.join(here, "hf_to_gguf.py"), c.zp_model, out,
                        "--type", qtype, "--embed-type", etype, "--no-rope-scaling"], check=True)
        # no tokenizer in the file: zipage may produce every id, so transformers must too
        cases.append(gguf_case(f"gguf {arch} {qtype}", out, 0))
    return cases


def random_cases(zp, work, seed):
    cases = []
    for i, (arch, dims) in enumerate(RANDOM.items()):
        d = os.path.join(work, f"random-{arch}")
        subprocess.run([zp, "mkmodel", "--arch", arch, *dims.split(), "--vocab", "512",
                        "--seed", str(seed + 100 + i), "--dtype", "f32", "--out", d], check=True)
        cases.append(dir_case(f"random {arch}", d))
    return cases


def text_ids(zp, model, path):
    """path's text as zipage's tokenizer encodes it (no special tokens; the ids are
    transformers' too: tests/test_tok_gguf_hf.sh, test_tokenizer_golden)."""
    res = subprocess.run([zp, "tokenize", "--model", model, "--file", path], check=True,
                         capture_output=True, text=True)
    return json.loads(res.stdout)


def zp_logits(zp, opts, model, prompt, prefill, work):
    """zipage's logits of every position, [len(prompt), vocab]; prefill=None: one prefill."""
    out = os.path.join(work, "logits.f32")
    cmd = [zp, "logits", "--backend", opts.backend, "--model", model,
           "--prompt-ids", " ".join(map(str, prompt)), "--out", out]
    if prefill:
        cmd += ["--prefill", str(prefill)]
    subprocess.run(cmd, check=True)
    got = np.fromfile(out, dtype=np.float32)
    os.unlink(out)
    return got.reshape(len(prompt), -1)


def hf_greedy(model, prompt, n_gen, n_valid):
    """n_gen greedy ids from transformers, one forward step per token on its KV cache."""
    # the cache argument is `cache` from transformers 5.25 on, `past_key_values` before
    arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    ids = []
    with torch.no_grad():
        out = model(torch.tensor([prompt]), use_cache=True)
        for step in range(n_gen):
            row = out.logits[0, -1].float()
            row[n_valid:] = -float("inf")
            ids.append(int(torch.argmax(row)))
            if step + 1 < n_gen:
                out = model(torch.tensor([[ids[-1]]]), use_cache=True, **{arg: getattr(out, arg)})
    return ids


def check(zp, opts, case, work):
    t0 = time.monotonic()
    model = case.load_hf()
    vocab = model.config.vocab_size
    n_valid = min(case.n_valid or vocab, vocab)
    if opts.text and case.named and case.n_valid:
        prompt = text_ids(zp, case.zp_model, opts.text)[:opts.prompt]
        if len(prompt) < opts.prompt:
            raise SystemExit(f"{opts.text}: {len(prompt)} tokens, fewer than --prompt {opts.prompt}")
    else:
        rng = np.random.default_rng([opts.seed, zlib.crc32(case.name.encode())])
        prompt = [int(x) for x in rng.integers(0, n_valid, opts.prompt)]
    with torch.no_grad():
        ref = model(torch.tensor([prompt])).logits[0].float().numpy()
        # nn.Module's casts: transformers refuses .float() on a model read from GGUF
        ref64 = torch.nn.Module.double(model)(torch.tensor([prompt])).logits[0].numpy()
        torch.nn.Module.float(model)  # f32 -> f64 -> f32 is exact: the same model again
    zp_prefill = zp_logits(zp, opts, case.zp_model, prompt, None, work)
    zp_decode = zp_logits(zp, opts, case.zp_model, prompt, opts.prefill, work)
    d_prefill = float(np.abs(zp_prefill - ref).max())
    d_decode = float(np.abs(zp_decode - ref).max())
    hf_err64 = float(np.abs(ref - ref64).max())
    zp_err64 = float(max(np.abs(zp_prefill - ref64).max(), np.abs(zp_decode - ref64).max()))
    hf_ids = hf_greedy(model, prompt, opts.gen, n_valid)
    res = subprocess.run([zp, "generate", "--backend", opts.backend, "--model", case.zp_model,
                          "--prompt-ids", " ".join(map(str, prompt)),
                          "--max-tokens", str(opts.gen), "--ignore-eos", "--json",
                          "--set", "compress=false"],
                         check=True, capture_output=True, text=True)
    zp_ids = json.loads(res.stdout)["token_ids"]
    first_diff = next((i for i, (a, b) in enumerate(zip(hf_ids, zp_ids)) if a != b), None)
    if first_diff is None and len(hf_ids) != len(zp_ids):
        first_diff = min(len(hf_ids), len(zp_ids))
    # teacher-forced: transformers' logits for zipage's own sequence
    with torch.no_grad():
        tf = model(torch.tensor([prompt + zp_ids])).logits[0, opts.prompt - 1:-1].float().numpy()
    tf[:, n_valid:] = -np.inf
    margins = [float(tf[i].max() - tf[i][t]) for i, t in enumerate(zp_ids)]
    div_gap = None
    if first_diff is not None and first_diff < len(tf):
        row = np.sort(tf[first_diff])[::-1]
        div_gap = float(row[0] - row[1])
    dlogit = max(d_prefill, d_decode)
    within_tol = dlogit <= opts.tol
    return {
        "model": case.name,
        "zipage_model": case.zp_model,
        "max_abs_dlogit": dlogit,
        "max_abs_dlogit_prefill": d_prefill,
        "max_abs_dlogit_prefill_decode": d_decode,
        "within_tol": within_tol,
        "max_abs_fp64_err_transformers": hf_err64,
        "max_abs_fp64_err_zipage": zp_err64,
        "logits_ok": within_tol or zp_err64 <= opts.fp64_ratio * hf_err64,
        "greedy_identical": hf_ids == zp_ids,
        "distinct_greedy_ids": len(set(zp_ids)),
        "first_divergence": first_diff,
        "top2_gap_at_divergence": div_gap,
        "greedy_argmax_consistent": bool(margins) and max(margins) <= 1e-5,
        "max_margin_below_argmax": max(margins, default=None),
        "n_prompt": opts.prompt,
        "prefill": opts.prefill,
        "n_gen": opts.gen,
        "seconds": round(time.monotonic() - t0, 2),
    }


def parse_args(argv):
    p = argparse.ArgumentParser(description="zipage against transformers (fp32, CPU)")
    p.add_argument("zipage", help="the zipage binary")
    p.add_argument("out_json", help="where the JSON report goes")
    p.add_argument("model_dirs", nargs="*", metavar="MODEL_DIR",
                   help="Hugging Face model directories to check")
    p.add_argument("--gguf", action="append", default=[], metavar="FILE",
                   help="a GGUF model file to check (any number of times)")
    p.add_argument("--no-gguf", action="store_true",
                   help="skip the random models converted to GGUF (tools/hf_to_gguf.py)")
    p.add_argument("--random", action="store_true",
                   help="also the random models when cases are named (alone they are the default)")
    p.add_argument("--prompt", type=int, default=256, help="prompt ids (default 256)")
    p.add_argument("--gen", type=int, default=128, help="greedy tokens (default 128)")
    p.add_argument("--prefill", type=int, default=100,
                   help="ids prefilled before the decode steps of the second logits run "
                        "(default 100)")
    p.add_argument("--tol", type=float, default=1e-4, help="max |dlogit| allowed (default 1e-4)")
    p.add_argument("--fp64-ratio", type=float, default=2.0,
                   help="beyond --tol, zipage's max |diff| from transformers' fp64 logits may be "
                        "this many times transformers' own fp32 one (default 2)")
    p.add_argument("--text", metavar="FILE",
                   help="prompts of the named cases with a tokenizer: the first --prompt tokens "
                        "of FILE (default: random ids)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompts and random models")
    p.add_argument("--backend", default="cpu", help="zipage --backend (default cpu)")
    opts = p.parse_args(argv)
    if not 0 < opts.prefill < opts.prompt:
        p.error(f"--prefill must be between 1 and --prompt - 1 ({opts.prompt - 1})")
    if opts.gen < 1:
        p.error("--gen must be at least 1")
    return opts


def main(argv):
    opts = parse_args(argv)
    zp = opts.zipage
    with tempfile.TemporaryDirectory(prefix="zp_hf_parity_") as work:
        cases = [dir_case(os.path.basename(d.rstrip("/")), d) for d in opts.model_dirs]
        cases += [gguf_case(os.path.basename(g), g) for g in opts.gguf]
        cases = [c._replace(named=True) for c in cases]
        if opts.random or not cases:
            rnd = random_cases(zp, work, opts.seed)
            cases += rnd
            if not opts.no_gguf:
                cases += random_gguf_cases(work, rnd)
        results = [check(zp, opts, c, work) for c in cases]
    with open(opts.out_json, "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
                   "tol": opts.tol, "fp64_ratio": opts.fp64_ratio, "results": results}, f, indent=1)
    print(f"{opts.prompt}-id prompt (prefill, and {opts.prefill} prefilled + "
          f"{opts.prompt - opts.prefill} decode steps), {opts.gen} greedy tokens, "
          f"torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"{'model':<30} {'max|dlogit|':>12} {'prefill':>10} {'+decode':>10} "
          f"{'<=' + format(opts.tol, 'g'):>8} {'fp64 hf':>9} {'fp64 zp':>9} {'logits ok':>9} "
          f"{'greedy identical':>17} {'argmax-consistent':>18} {'gap at divergence':>18} "
          f"{'distinct ids':>13} {'s':>6}")
    for r in results:
        gap = "-" if r["top2_gap_at_divergence"] is None else f"{r['top2_gap_at_divergence']:.2e}"
        print(f"{r['model']:<30} {r['max_abs_dlogit']:>12.3e} "
              f"{r['max_abs_dlogit_prefill']:>10.3e} {r['max_abs_dlogit_prefill_decode']:>10.3e} "
              f"{str(r['within_tol']):>8} {r['max_abs_fp64_err_transformers']:>9.2e} "
              f"{r['max_abs_fp64_err_zipage']:>9.2e} {str(r['logits_ok']):>9} "
              f"{str(r['greedy_identical']):>17} "
              f"{str(r['greedy_argmax_consistent']):>18} {gap:>18} {r['distinct_greedy_ids']:>13} "
              f"{r['seconds']:>6.1f}")
    ok = all(r["logits_ok"] and r["greedy_identical"] for r in results)
    print("PARITY", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
