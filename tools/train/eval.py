#!/usr/bin/env python3
"""eval.py: greedy full-KV accuracy of a zipage-reasoner checkpoint in transformers/PyTorch, on
task family 1 (reverse running sum, tools/task/gen_task.py) and family 2 (rule machine,
tools/task/gen_task2.py). Used by train.py after each training call and standalone.

The model is reloaded from its saved directory with AutoModelForCausalLM (weights bf16,
computed in float32 unless --dtype says otherwise); batched greedy generation with KV cache
(model.generate, left padding), stop at <|im_end|>; answer rule gen_task.extract_answer (the
same for both families). Results per set: accuracy, trace exact, tokens, accuracy by N.

Set names (comma list):
  dev, test                 family 1: MODEL_DIR/dev.jsonl, test.jsonl (or --data-dir)
  task2-dev, task2-test     family 2: tools/task/data/task2-dev.jsonl, task2-test.jsonl
  gen:NAME:SPLIT:MINN:MAXN:COUNT                       family 1, generated (seed 1)
  gen2:NAME:SPLIT:MINSTEPS:MAXSTEPS:MINR:MAXR:COUNT    family 2, generated (seed 1)
  PATH.jsonl                any file in the common JSONL format
Choices during training (when to stop) use the dev sets only; test is for the final report.

Usage:
  python3 tools/train/eval.py --model DIR [--tokenizer-dir DIR] --sets dev,task2-dev \
      [--limit K] [--device cpu|cuda] --out eval.json
"""
import argparse
import json
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
TASK = os.path.join(HERE, "..", "task")
for cand in (TASK, HERE):
    if os.path.exists(os.path.join(cand, "gen_task.py")):
        sys.path.insert(0, cand)
import gen_task  # noqa: E402
import gen_task2  # noqa: E402

TASK2_DATA = os.path.join(TASK, "data")


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def load_jsonl(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def load_sets(spec, data_dir, tok_path, limit=0):
    """[(name, problems)] for a comma list of set names (module docstring)."""
    sets = []
    for s in [x for x in spec.split(",") if x]:
        if s.startswith("gen:"):
            _, name, split, lo, hi, cnt = s.split(":")
            ptok = gen_task.Tokenizer(tok_path)
            probs = [gen_task.public(p) for p in gen_task.generate(
                split, 1, int(cnt), int(lo), int(hi), ptok, 0)]
        elif s.startswith("gen2:"):
            _, name, split, lo, hi, rlo, rhi, cnt = s.split(":")
            ptok = gen_task.Tokenizer(tok_path)
            probs = [gen_task2.public(p) for p in gen_task2.generate(
                split, 1, int(cnt), int(lo), int(hi), int(rlo), int(rhi), ptok)]
        elif s.endswith(".jsonl"):
            name, probs = os.path.basename(s)[:-len(".jsonl")], load_jsonl(s)
        elif s.startswith("task2-"):
            name, probs = s, load_jsonl(os.path.join(TASK2_DATA, s + ".jsonl"))
        else:
            name, probs = s, load_jsonl(os.path.join(data_dir, s + ".jsonl"))
        if limit:
            probs = probs[:limit]
        sets.append((name, probs))
    return sets


@torch.no_grad()
def evaluate(model_dir, sets, dev, batch, compute_dtype, time_budget, tok_dir=None):
    """Greedy full-KV accuracy on each (name, problems) set; sets are skipped once
    time_budget seconds have passed. tok_dir: where the tokenizer files are (default
    model_dir)."""
    tok = AutoTokenizer.from_pretrained(tok_dir or model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=compute_dtype).to(dev).eval()
    wdt = {str(p.dtype) for p in model.parameters()}
    log("eval: loaded %s (%s, params %s)" % (model_dir, type(model).__name__, wdt))
    eos, pad = tok.eos_token_id, tok.pad_token_id
    results = {}
    t_start = time.time()
    for name, probs in sets:
        if time.time() - t_start > time_budget:
            log("eval: skipping %s (time budget)" % name)
            continue
        t0 = time.time()
        rows = []
        for b in range(0, len(probs), batch):
            chunk = probs[b:b + batch]
            prompts = [tok.apply_chat_template([{"role": "user", "content": p["prompt"]}],
                                               add_generation_prompt=True, tokenize=False)
                       for p in chunk]
            enc = [tok(s, add_special_tokens=False)["input_ids"] for s in prompts]
            L = max(len(e) for e in enc)
            ids = torch.full((len(enc), L), pad, dtype=torch.long)
            am = torch.zeros((len(enc), L), dtype=torch.long)
            for r, e in enumerate(enc):
                ids[r, L - len(e):] = torch.tensor(e)
                am[r, L - len(e):] = 1
            ref_max = max(p.get("trace_tokens", 4 * len(p["prompt"])) for p in chunk)
            gen = model.generate(input_ids=ids.to(dev), attention_mask=am.to(dev),
                                 max_new_tokens=min(4096 - L, ref_max + 200), do_sample=False,
                                 eos_token_id=eos, pad_token_id=pad)
            gen = gen[:, L:].tolist()
            for p, g in zip(chunk, gen):
                n_tok = g.index(eos) + 1 if eos in g else len(g)
                text = tok.decode(g[:n_tok], skip_special_tokens=False)
                if text.endswith("<|im_end|>"):
                    text = text[:-len("<|im_end|>")]
                pred = gen_task.extract_answer(text)
                rows.append({"id": p["id"], "n": p["n"], "answer": p["answer"], "pred": pred,
                             "correct": pred == p["answer"], "gen_tokens": n_tok,
                             "ref_tokens": p.get("trace_tokens"),
                             "trace_exact": text == p.get("trace"),
                             "stopped": eos in g})
        dt = time.time() - t0
        acc = sum(r["correct"] for r in rows) / len(rows)
        by_n = {}
        for r in rows:
            k = "%d-%d" % (r["n"] // 10 * 10, r["n"] // 10 * 10 + 9)
            c = by_n.setdefault(k, [0, 0])
            c[0] += r["correct"]
            c[1] += 1
        res = {"problems": len(rows), "accuracy": acc,
               "trace_exact": sum(r["trace_exact"] for r in rows) / len(rows),
               "mean_gen_tokens": sum(r["gen_tokens"] for r in rows) / len(rows),
               "mean_ref_tokens": (sum(r["ref_tokens"] or 0 for r in rows) / len(rows)),
               "by_n": {k: {"correct": v[0], "total": v[1]} for k, v in sorted(by_n.items())},
               "seconds": round(dt, 1), "rows": rows}
        results[name] = res
        log("eval %s: accuracy %.3f (%d/%d), trace exact %.3f, mean generated %.0f tokens "
            "(reference %.0f), %.1f s; by N %s" % (
                name, acc, sum(r["correct"] for r in rows), len(rows), res["trace_exact"],
                res["mean_gen_tokens"], res["mean_ref_tokens"], dt,
                {k: "%d/%d" % tuple(v) for k, v in sorted(by_n.items())}))
    return results


def summary_table(results):
    lines = ["%-12s %9s %10s %12s %12s %8s" % ("set", "problems", "accuracy", "gen tokens",
                                               "ref tokens", "secs")]
    for name, r in results.items():
        lines.append("%-12s %9d %10.3f %12.0f %12.0f %8.1f" % (
            name, r["problems"], r["accuracy"], r["mean_gen_tokens"], r["mean_ref_tokens"],
            r["seconds"]))
    return "\n".join(lines)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="saved model directory")
    ap.add_argument("--tokenizer-dir", default="",
                    help="tokenizer files (default: --model, else models/zipage-reasoner)")
    ap.add_argument("--data-dir", default=os.path.join(HERE, "..", "..", "models",
                                                       "zipage-reasoner"),
                    help="where family 1's dev.jsonl / test.jsonl are")
    ap.add_argument("--sets", default="dev,task2-dev")
    ap.add_argument("--limit", type=int, default=0, help="first K problems of each set")
    ap.add_argument("--batch", type=int, default=320)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--time", type=float, default=1e9, help="skip sets after this many s")
    ap.add_argument("--out", default="", help="JSON file for the results")
    a = ap.parse_args(argv)
    tok_dir = a.tokenizer_dir or (a.model if os.path.exists(
        os.path.join(a.model, "tokenizer.json")) else a.data_dir)
    sets = load_sets(a.sets, a.data_dir, os.path.join(tok_dir, "tokenizer.json"), a.limit)
    res = evaluate(a.model, sets, torch.device(a.device), a.batch, getattr(torch, a.dtype),
                   a.time, tok_dir)
    print(summary_table(res))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"model": a.model, "device": a.device, "dtype": a.dtype,
                       "torch": torch.__version__, "sets": res}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
