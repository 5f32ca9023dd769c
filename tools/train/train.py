#!/usr/bin/env python3
"""train.py: trains, saves and evaluates zipage's reasoning model (issue 7) on one GPU.

Model: Qwen3ForCausalLM (q/k RMS norms, GQA, RoPE), hidden 256, 6 layers, 4 query heads,
2 kv heads, head dim 64, MLP 768, vocab 320 (286 used), tied embeddings, context 4,096.
Data: tools/task/gen_task.py problems drawn from the "train" stream (never dev/test), made
into ChatML sequences with the model's own tokenizer (transformers, tokenizer.json beside
this model); loss only on the assistant part. Each step holds about --tokens-per-step tokens
of problems of similar length (no cross-problem attention, little padding); the chain length
N follows a curriculum (cap rising from 8 to --nmax over the first --curriculum fraction of
steps), then a mix centred on the test range. AdamW, warm-up + cosine, bf16 autocast.
Everything is seeded by --seed and the step number, so the data stream is reproducible.

After training: save_pretrained in bf16 (config.json, model.safetensors,
generation_config.json) + the tokenizer files copied unchanged, reload with
AutoModelForCausalLM/AutoTokenizer, and run batched greedy generation with KV cache on the
eval sets (answer rule: gen_task.extract_answer). Results: eval.json and a summary table.

Run (see tools/train/README.md for the recorded command):
  python3 tools/train/train.py --model-dir models/zipage-reasoner --out OUTDIR --steps N
"""
import argparse
import json
import math
import os
import random
import shutil
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (AutoModelForCausalLM, AutoTokenizer, GenerationConfig,  # noqa: E402
                          Qwen3Config, Qwen3ForCausalLM)

HERE = os.path.dirname(os.path.abspath(__file__))
for cand in (os.path.join(HERE, "..", "task"), HERE):
    if os.path.exists(os.path.join(cand, "gen_task.py")):
        sys.path.insert(0, cand)
import gen_task  # noqa: E402

TOK_FILES = ["tokenizer.json", "tokenizer_config.json"]


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ------------------------------------------------------------------ tokenizer checks

def check_tokenizer(tok, py_tok, tok_path):
    """The HF tokenizer and gen_task's stdlib encoder must give the same ids; the chat
    template must render the documented ChatML prefix."""
    import tokenizers
    raw = tokenizers.Tokenizer.from_file(tok_path)
    n_ok = 0
    for k in range(40):
        rng = gen_task.problem_rng("tokcheck", 1, k)
        p = gen_task.make_problem(rng, rng.randint(1, 130))
        pre = gen_task.chat_prefix(p["prompt"])
        full = pre + p["trace"] + "<|im_end|>"
        a = tok(full, add_special_tokens=False)["input_ids"]
        b = py_tok.encode(full)
        c = raw.encode(full, add_special_tokens=False).ids
        d = tok(pre, add_special_tokens=False)["input_ids"] + \
            tok(p["trace"] + "<|im_end|>", add_special_tokens=False)["input_ids"]
        assert a == b == c == d, "tokenizer mismatch on problem %d" % k
        assert tok.decode(a) == full, "decode mismatch"
        r = tok.apply_chat_template([{"role": "user", "content": p["prompt"]}],
                                    add_generation_prompt=True, tokenize=False)
        assert r == pre, "chat template mismatch: %r" % r[-60:]
        n_ok += 1
    extra = ["Hello, world! It's 12:30.\n\n  x", "answer 42\n", "<think>\n</think>"]
    for s in extra:
        assert tok(s, add_special_tokens=False)["input_ids"] == py_tok.encode(s), s
    log("tokenizer: HF == tokenizers == gen_task encoder on %d problems + %d strings; "
        "chat template OK; eos %s=%d pad %s=%d" % (n_ok, len(extra), tok.eos_token,
                                                  tok.eos_token_id, tok.pad_token,
                                                  tok.pad_token_id))


# ------------------------------------------------------------------ data

class Batches(torch.utils.data.IterableDataset):
    """Batch for step s is a pure function of (seed, s); worker w of W makes steps w, w+W, ..."""

    def __init__(self, tok, a, first_step, last_step):
        self.tok, self.a = tok, a
        self.first, self.last = first_step, last_step
        self.pad = tok.pad_token_id

    def n_center(self, rng, step):
        a = self.a
        p = step / a.steps
        if p < a.curriculum:
            cap = int(8 + (a.nmax - 8) * p / a.curriculum)
            lo = 4 if rng.random() < 0.25 else max(4, cap // 2)
            return rng.randint(lo, cap)
        if rng.random() < a.focus:
            return rng.randint(a.focus_lo, a.focus_hi)
        return rng.randint(4, a.nmax)

    def make(self, step):
        rng = gen_task.problem_rng("train", self.a.seed, step)
        nc = self.n_center(rng, step)
        rows, maxlen = [], 0
        while True:
            n = max(1, nc + rng.randint(-2, 2))
            p = gen_task.make_problem(rng, n)
            pre = self.tok(gen_task.chat_prefix(p["prompt"]), add_special_tokens=False)
            comp = self.tok(p["trace"] + "<|im_end|>", add_special_tokens=False)
            ids_p, ids_c = pre["input_ids"], comp["input_ids"]
            L = len(ids_p) + len(ids_c)
            m = max(maxlen, L)
            if rows and (len(rows) + 1) * ((m + 63) // 64 * 64) > self.a.tokens_per_step:
                break
            rows.append((ids_p, ids_c))
            maxlen = m
        T = (maxlen + 63) // 64 * 64
        x = torch.full((len(rows), T), self.pad, dtype=torch.long)
        y = torch.full((len(rows), T), -100, dtype=torch.long)
        for r, (ip, ic) in enumerate(rows):
            x[r, :len(ip)] = torch.tensor(ip)
            x[r, len(ip):len(ip) + len(ic)] = torch.tensor(ic)
            y[r, len(ip):len(ip) + len(ic)] = torch.tensor(ic)
        return step, nc, x, y

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, W = (info.id, info.num_workers) if info else (0, 1)
        for s in range(self.first + w, self.last, W):
            yield self.make(s)


# ------------------------------------------------------------------ model

def make_config(tok, a):
    kw = dict(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.mlp,
              num_hidden_layers=a.layers, num_attention_heads=a.heads,
              num_key_value_heads=a.kv_heads, head_dim=64, max_position_embeddings=4096,
              rms_norm_eps=1e-6, tie_word_embeddings=True, attention_bias=False,
              hidden_act="silu", use_sliding_window=False, initializer_range=0.02,
              bos_token_id=tok.convert_tokens_to_ids("<|im_start|>"),
              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if int(transformers.__version__.split(".")[0]) >= 5:
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
    else:
        kw["rope_theta"] = 10000.0
    return Qwen3Config(**kw)


def lr_at(a, step):
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    p = min(1.0, (step - a.warmup) / max(1, a.steps - a.warmup))
    return a.lr * (a.lr_floor + (1 - a.lr_floor) * 0.5 * (1 + math.cos(math.pi * p)))


def train(a, tok, dev):
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    cfg = make_config(tok, a)
    if a.init_from:
        model = Qwen3ForCausalLM.from_pretrained(a.init_from, dtype=torch.float32)
        log("initialised from", a.init_from)
    else:
        model = Qwen3ForCausalLM(cfg)
    model.to(dev).train()
    nparam = sum(p.numel() for p in model.parameters())
    log("model: %.3f M parameters, config %s" % (nparam / 1e6, {
        k: getattr(model.config, k) for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads",
                                              "head_dim", "intermediate_size")}))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    nodecay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), fused=True)
    ds = Batches(tok, a, a.start_step, a.steps)
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=a.workers,
                                     prefetch_factor=8, pin_memory=True,
                                     persistent_workers=False)
    t0 = time.time()
    hist, tok_count, last = [], 0, (t0, 0)
    acc_loss, acc_n = torch.zeros((), device=dev), 0
    step = a.start_step
    stopped = None
    for step, nc, x, y in dl:
        for g in opt.param_groups:
            g["lr"] = lr_at(a, step)
        x = x.to(dev, non_blocking=True)
        y = y.to(dev, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(input_ids=x, labels=y, use_cache=False)
        loss = out.loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        acc_loss += loss.detach()
        acc_n += 1
        tok_count += x.numel()
        if (step + 1) % a.log_every == 0 or step + 1 == a.steps:
            now = time.time()
            l = (acc_loss / acc_n).item()
            sps = (step + 1 - last[1]) / (now - last[0])
            last = (now, step + 1)
            hist.append({"step": step + 1, "loss": l, "n_center": nc, "rows": x.shape[0],
                         "T": x.shape[1], "lr": lr_at(a, step), "t": round(now - t0, 1)})
            log("step %5d loss %.6f lr %.2e nc %3d batch %dx%d %.2f steps/s %.0f s" % (
                step + 1, l, lr_at(a, step), nc, x.shape[0], x.shape[1], sps, now - t0))
            acc_loss.zero_()
            acc_n = 0
        if time.time() - t0 > a.time_limit:
            stopped = step + 1
            log("TIME LIMIT: stopped at step %d of %d" % (stopped, a.steps))
            break
    del dl
    t_train = time.time() - t0
    log("training done: %d steps, %.1f s, %.1f M tokens (padded)" % (
        step + 1, t_train, tok_count / 1e6))
    return model, {"steps_done": step + 1, "steps_planned": a.steps, "stopped_early": stopped,
                   "train_seconds": round(t_train, 1), "parameters": nparam,
                   "final_loss": hist[-1]["loss"] if hist else None, "history": hist}


def bench(a, tok, dev):
    """Step time at fixed N, for planning --steps."""
    model = Qwen3ForCausalLM(make_config(tok, a)).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ds = Batches(tok, a, 0, 1)
    res = {}
    for n in (10, 40, 60, 90, 120):
        ds.n_center = lambda rng, step, n=n: n
        batches = [ds.make(s) for s in range(6)]
        for i, (_, _, x, y) in enumerate(batches):
            if i == 1:
                torch.cuda.synchronize()
                t = time.time()
            x, y = x.to(dev), y.to(dev)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(input_ids=x, labels=y, use_cache=False).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        dt = (time.time() - t) / (len(batches) - 1)
        t1 = time.time()
        for s in range(20):
            ds.make(s)
        res[n] = {"step_s": round(dt, 4), "batch": list(x.shape),
                  "make_batch_s": round((time.time() - t1) / 20, 4)}
        log("bench N=%d: %.1f ms/step, batch %s, %.1f ms to make a batch on one CPU" % (
            n, dt * 1e3, list(x.shape), res[n]["make_batch_s"] * 1e3))
    return res


# ------------------------------------------------------------------ save / eval

def save(model, tok_dir, out_dir, tok):
    os.makedirs(out_dir, exist_ok=True)
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=model.config.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, do_sample=False)
    model.save_pretrained(out_dir, safe_serialization=True)
    # Readers of pre-v5 Qwen3 configs look for a top-level rope_theta: add it beside v5's
    # rope_parameters, and keep it only if transformers still reads the same rope settings.
    cpath = os.path.join(out_dir, "config.json")
    with open(cpath) as f:
        orig = f.read()
    cj = json.loads(orig)
    rp = cj.get("rope_parameters") or {}
    if "rope_theta" not in cj and "rope_theta" in rp:
        cj["rope_theta"] = rp["rope_theta"]
        with open(cpath, "w") as f:
            json.dump(cj, f, indent=2, sort_keys=True)
            f.write("\n")
        try:
            back = transformers.AutoConfig.from_pretrained(out_dir)
            assert back.rope_parameters["rope_theta"] == rp["rope_theta"]
            assert back.rope_parameters.get("rope_type", "default") == "default"
        except Exception as e:  # keep the file transformers wrote
            log("rope_theta patch reverted:", repr(e))
            with open(cpath, "w") as f:
                f.write(orig)
    for f in TOK_FILES:
        shutil.copyfile(os.path.join(tok_dir, f), os.path.join(out_dir, f))
    sizes = {f: os.path.getsize(os.path.join(out_dir, f)) for f in sorted(os.listdir(out_dir))}
    log("saved", out_dir, sizes)
    return sizes


def load_jsonl(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


@torch.no_grad()
def evaluate(model_dir, sets, dev, batch, compute_dtype, time_budget):
    tok = AutoTokenizer.from_pretrained(model_dir)
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


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=os.path.join(HERE, "..", "..", "models",
                                                        "zipage-reasoner"),
                    help="holds tokenizer.json, tokenizer_config.json, dev/test.jsonl")
    ap.add_argument("--out", required=True, help="output directory (model goes to OUT/model)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--start-step", type=int, default=0)
    ap.add_argument("--init-from", default="")
    ap.add_argument("--tokens-per-step", type=int, default=131072)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--lr-floor", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--nmax", type=int, default=120)
    ap.add_argument("--curriculum", type=float, default=0.5)
    ap.add_argument("--focus", type=float, default=0.6)
    ap.add_argument("--focus-lo", type=int, default=40)
    ap.add_argument("--focus-hi", type=int, default=80)
    ap.add_argument("--vocab", type=int, default=320)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--mlp", type=int, default=768)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--time-limit", type=float, default=1e9, help="training seconds, hard stop")
    ap.add_argument("--bench", action="store_true", help="time steps at fixed N first")
    ap.add_argument("--eval-sets", default="test,dev",
                    help="comma list: test, dev (the jsonl files) or gen:NAME:SPLIT:MINN:MAXN:COUNT")
    ap.add_argument("--eval-limit", type=int, default=0, help="first K problems of each set")
    ap.add_argument("--eval-batch", type=int, default=320)
    ap.add_argument("--eval-time", type=float, default=240, help="skip sets after this")
    a = ap.parse_args(argv)

    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    log("torch %s, transformers %s, GPU %s, python %s" % (
        torch.__version__, transformers.__version__, torch.cuda.get_device_name(0),
        sys.version.split()[0]))
    log("args", json.dumps(vars(a)))
    tok_path = os.path.join(a.model_dir, "tokenizer.json")
    tok = AutoTokenizer.from_pretrained(a.model_dir)
    check_tokenizer(tok, gen_task.Tokenizer(tok_path), tok_path)
    report = {"args": vars(a), "torch": torch.__version__,
              "transformers": transformers.__version__,
              "device": torch.cuda.get_device_name(0)}
    os.makedirs(a.out, exist_ok=True)
    if a.bench:
        report["bench"] = bench(a, tok, dev)
    model, report["train"] = train(a, tok, dev)
    mdir = os.path.join(a.out, "model")
    report["files"] = save(model, a.model_dir, mdir, tok)
    del model
    torch.cuda.empty_cache()
    with open(os.path.join(a.out, "eval.json"), "w") as f:
        json.dump(report, f, indent=1)
    sets = []
    for s in a.eval_sets.split(","):
        if s.startswith("gen:"):
            _, name, split, lo, hi, cnt = s.split(":")
            ptok = gen_task.Tokenizer(tok_path)
            probs = [gen_task.public(p) for p in gen_task.generate(
                split, 1, int(cnt), int(lo), int(hi), ptok, 0)]
        else:
            name, probs = s, load_jsonl(os.path.join(a.model_dir, s + ".jsonl"))
        if a.eval_limit:
            probs = probs[:a.eval_limit]
        sets.append((name, probs))
    report["eval"] = evaluate(mdir, sets, dev, a.eval_batch, torch.float32, a.eval_time)
    with open(os.path.join(a.out, "eval.json"), "w") as f:
        json.dump(report, f, indent=1)
    tr = report["train"]
    print("\n==== summary ====")
    print("params %.3f M | steps %d/%d | train %.0f s | final loss %.2e | safetensors %.1f MB" % (
        tr["parameters"] / 1e6, tr["steps_done"], tr["steps_planned"], tr["train_seconds"],
        tr["final_loss"] or float("nan"), report["files"].get("model.safetensors", 0) / 1e6))
    print("%-10s %9s %10s %12s %12s %8s" % ("set", "problems", "accuracy", "gen tokens",
                                            "ref tokens", "secs"))
    for name, r in report["eval"].items():
        print("%-10s %9d %10.3f %12.0f %12.0f %8.1f" % (name, r["problems"], r["accuracy"],
                                                         r["mean_gen_tokens"],
                                                         r["mean_ref_tokens"], r["seconds"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
