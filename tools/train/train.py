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

Mixture (--task2-frac F > 0): each step is drawn from family 2 (tools/task/gen_task2.py, rule
machine) with probability F, from family 1 otherwise (the choice: random.Random(
"zipage-mix/SEED/STEP")); family 2's steps use gen_task2's "train" stream, with their own
curriculum over the step count N (cap rising to --t2-nmax) and the rule count R (cap rising to
--t2-rmax), then a mix centred on the test range (--t2-focus*). With F = 0 (the default) the
data stream, model and schedule are exactly those of the family-1-only run.

Calls of limited length (the GPU tool allows 10 minutes a call): --call-seconds bounds this
process's wall time (training stops --eval-reserve seconds before it); --checkpoint writes the
full training state (fp32 weights, AdamW moments in bf16, step, loss history) to OUT/ckpt.NN
(parts under 15 MiB) when the planned steps are not done yet, and --resume DIR continues from
DIR/ckpt.NN when it is there (starts fresh otherwise), so the same command runs call after call.
After every call the model is saved (OUT/model) and evaluated on --eval-sets-partial (dev
sets: the stopping rule --stop-dev uses dev only); when all steps are done, on --eval-sets.

Run (see tools/train/README.md for the recorded commands):
  python3 tools/train/train.py --model-dir models/zipage-reasoner --out OUTDIR --steps N
"""
import argparse
import copy
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
import gen_task2  # noqa: E402
import eval as zeval  # noqa: E402  (tools/train/eval.py)

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
    for k in range(20):  # family 2 (rule machine): ':' '*' and capitals, all single bytes
        rng = gen_task2.problem_rng("tokcheck", 1, k)
        p = gen_task2.make_problem(rng, rng.randint(1, 46), rng.randint(2, 12))
        full = gen_task.chat_prefix(p["prompt"]) + p["trace"] + "<|im_end|>"
        a = tok(full, add_special_tokens=False)["input_ids"]
        assert a == py_tok.encode(full) == raw.encode(full, add_special_tokens=False).ids, \
            "tokenizer mismatch on family 2 problem %d" % k
        assert tok.decode(a) == full, "decode mismatch (family 2)"
        n_ok += 1
    extra = ["Hello, world! It's 12:30.\n\n  x", "answer 42\n", "<think>\n</think>"]
    for s in extra:
        assert tok(s, add_special_tokens=False)["input_ids"] == py_tok.encode(s), s
    log("tokenizer: HF == tokenizers == gen_task encoder on %d problems (both families) + "
        "%d strings; "
        "chat template OK; eos %s=%d pad %s=%d" % (n_ok, len(extra), tok.eos_token,
                                                  tok.eos_token_id, tok.pad_token,
                                                  tok.pad_token_id))


# ------------------------------------------------------------------ data

class Batches(torch.utils.data.IterableDataset):
    """Batch for step s is a pure function of (seed, s); worker w of W makes steps w, w+W, ...
    A step is one family's: family 2 with probability --task2-frac (rng "zipage-mix/SEED/s";
    not drawn at all when the fraction is 0, so the family-1-only stream is unchanged)."""

    def __init__(self, tok, a, first_step, last_step, exclude=None):
        self.tok, self.a = tok, a
        self.first, self.last = first_step, last_step
        self.pad = tok.pad_token_id
        self.exclude = exclude or set()   # prompts of dev/test sets: never trained on

    def family(self, step):
        if self.a.task2_frac <= 0:
            return 1
        r = random.Random("zipage-mix/%d/%d" % (self.a.seed, step)).random()
        return 2 if r < self.a.task2_frac else 1

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

    def t2_center(self, rng, step):
        """Family 2: (centre of the step count N, rule-count range) for this step. During the
        curriculum the N cap rises from t2_nmin + 2 to t2_nmax and the R cap from 3 to t2_rmax
        (75% of centres from [cap/2, cap], 25% from [t2_nmin, cap]); after it, a fraction
        t2_focus from the test range, the rest from the whole range."""
        a = self.a
        p = step / a.steps
        if p < a.curriculum:
            f = p / a.curriculum
            cap = int(a.t2_nmin + 2 + (a.t2_nmax - a.t2_nmin - 2) * f)
            lo = a.t2_nmin if rng.random() < 0.25 else max(a.t2_nmin, cap // 2)
            rcap = max(a.t2_rmin, min(a.t2_rmax, int(3 + (a.t2_rmax - 3) * f)))
            return rng.randint(lo, cap), (a.t2_rmin, rcap)
        if rng.random() < a.t2_focus:
            return (rng.randint(a.t2_focus_lo, a.t2_focus_hi),
                    (a.t2_focus_rlo, a.t2_focus_rhi))
        return rng.randint(a.t2_nmin, a.t2_nmax), (a.t2_rmin, a.t2_rmax)

    def problem(self, fam, rng, nc, rr):
        """One training problem near centre nc (N within +-2) as (prefix ids, completion ids);
        redrawn from the same stream if it is a dev/test prompt, (family 2) fails the sets'
        walk rule or does not fit the 4,096 context."""
        while True:
            if fam == 1:
                n = max(1, nc + rng.randint(-2, 2))
                p = gen_task.make_problem(rng, n)
            else:
                n = min(self.a.t2_nmax, max(self.a.t2_nmin, nc + rng.randint(-2, 2)))
                p = gen_task2.make_problem(rng, n, rng.randint(*rr))
                if not gen_task2.walk_ok(p):
                    continue
            if p["prompt"] in self.exclude:
                continue
            ids_p = self.tok(gen_task.chat_prefix(p["prompt"]),
                             add_special_tokens=False)["input_ids"]
            ids_c = self.tok(p["trace"] + "<|im_end|>", add_special_tokens=False)["input_ids"]
            if fam == 2 and len(ids_p) + len(ids_c) > 4096:
                continue
            return ids_p, ids_c

    def make(self, step, fixed=None):
        """fixed = (family, centre, rule range) overrides the draw (bench)."""
        fam = fixed[0] if fixed else self.family(step)
        if fam == 1:
            rng = gen_task.problem_rng("train", self.a.seed, step)
            nc, rr = (fixed[1], None) if fixed else (self.n_center(rng, step), None)
        else:
            rng = gen_task2.problem_rng("train", self.a.seed, step)
            nc, rr = fixed[1:] if fixed else self.t2_center(rng, step)
        rows, maxlen = [], 0
        while True:
            ids_p, ids_c = self.problem(fam, rng, nc, rr)
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
        return step, fam, nc, x, y

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, W = (info.id, info.num_workers) if info else (0, 1)
        for s in range(self.first + w, self.last, W):
            yield self.make(s)


def eval_prompts(a):
    """Prompts of the committed dev/test sets of both families (excluded from training)."""
    out = set()
    paths = [os.path.join(a.model_dir, f) for f in ("dev.jsonl", "test.jsonl")] + \
        [os.path.join(zeval.TASK2_DATA, f) for f in ("task2-dev.jsonl", "task2-test.jsonl")]
    for pth in paths:
        if os.path.exists(pth):
            out.update(p["prompt"] for p in zeval.load_jsonl(pth))
    return out


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


# Arguments that define the run: a checkpoint resumes only under the same values.
RUN_KEYS = ["seed", "steps", "init_from", "tokens_per_step", "lr", "lr_floor", "warmup", "wd",
            "nmax", "curriculum", "focus", "focus_lo", "focus_hi", "vocab", "hidden", "mlp",
            "layers", "heads", "kv_heads", "task2_frac", "t2_nmin", "t2_nmax", "t2_rmin",
            "t2_rmax", "t2_focus", "t2_focus_lo", "t2_focus_hi", "t2_focus_rlo",
            "t2_focus_rhi"]
CKPT_PART = 15 << 20   # the GPU tool returns files of at most 16 MiB


def save_checkpoint(out, model, opt, step, hist, a):
    """Training state to out/ckpt.00, ckpt.01, ...: fp32 weights, AdamW moments in bf16 (to fit
    the tool's 64 MiB limits; resuming casts them back to fp32), step, history."""
    import io
    st = opt.state_dict()   # its per-parameter dicts are the live state: copy, never modify
    st = {"param_groups": st["param_groups"],
          "state": {i: {k: (t.detach().to(torch.bfloat16).cpu()
                            if k in ("exp_avg", "exp_avg_sq") else
                            (t.detach().cpu().clone() if torch.is_tensor(t) else t))
                        for k, t in v.items()}
                    for i, v in st["state"].items()}}
    buf = io.BytesIO()
    torch.save({"step": step, "run": {k: getattr(a, k) for k in RUN_KEYS}, "hist": hist,
                "model": {k: v.detach().float().cpu() for k, v in model.state_dict().items()},
                "opt": st}, buf)
    data = buf.getvalue()
    for f in os.listdir(out):
        if f.startswith("ckpt."):
            os.remove(os.path.join(out, f))
    for i in range(0, len(data), CKPT_PART):
        with open(os.path.join(out, "ckpt.%02d" % (i // CKPT_PART)), "wb") as f:
            f.write(data[i:i + CKPT_PART])
    log("checkpoint: step %d, %.1f MB in %d parts" % (step, len(data) / 1e6,
                                                       (len(data) + CKPT_PART - 1) // CKPT_PART))


def load_checkpoint(d):
    import io
    if not d or not os.path.isdir(d):
        return None
    parts = sorted(f for f in os.listdir(d) if f.startswith("ckpt."))
    if not parts:
        return None
    data = b"".join(open(os.path.join(d, f), "rb").read() for f in parts)
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def train(a, tok, dev, ck=None, deadline=None):
    """Trains from a.start_step (or the checkpoint ck) to a.steps or until the deadline
    (time.time() value) / a.time_limit training seconds."""
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
                            lr=a.lr, betas=(0.9, 0.95), fused=dev.type == "cuda")
    hist, first = [], a.start_step
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])   # moments cast back to the fp32 parameters' dtype
        hist, first = ck["hist"], ck["step"]
        log("resumed at step %d of %d" % (first, a.steps))
    ds = Batches(tok, a, first, a.steps, eval_prompts(a) if a.task2_frac > 0 else None)
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=a.workers,
                                     prefetch_factor=8 if a.workers else None,
                                     pin_memory=dev.type == "cuda",
                                     persistent_workers=False)
    t0 = time.time()
    tok_count, last = 0, (t0, first)
    acc = {f: [torch.zeros((), device=dev), 0] for f in (1, 2)}
    step = first - 1
    stopped = None
    for step, fam, nc, x, y in dl:
        for g in opt.param_groups:
            g["lr"] = lr_at(a, step)
        x = x.to(dev, non_blocking=True)
        y = y.to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            out = model(input_ids=x, labels=y, use_cache=False)
        loss = out.loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        acc[fam][0] += loss.detach()
        acc[fam][1] += 1
        tok_count += x.numel()
        if (step + 1) % a.log_every == 0 or step + 1 == a.steps:
            now = time.time()
            fl = {f: (acc[f][0] / acc[f][1]).item() if acc[f][1] else None for f in (1, 2)}
            n_all = acc[1][1] + acc[2][1]
            l = ((fl[1] or 0) * acc[1][1] + (fl[2] or 0) * acc[2][1]) / max(1, n_all)
            sps = (step + 1 - last[1]) / (now - last[0])
            last = (now, step + 1)
            h = {"step": step + 1, "loss": l, "n_center": nc, "rows": x.shape[0],
                 "T": x.shape[1], "lr": lr_at(a, step), "t": round(now - t0, 1)}
            if a.task2_frac > 0:
                h.update({"family": fam, "loss_f1": fl[1], "loss_f2": fl[2],
                          "steps_f1": acc[1][1], "steps_f2": acc[2][1]})
                log("step %5d loss %.6f (f1 %s f2 %s) lr %.2e fam %d nc %3d batch %dx%d "
                    "%.2f steps/s %.0f s" % (
                        step + 1, l, "%.2e" % fl[1] if fl[1] is not None else "-",
                        "%.2e" % fl[2] if fl[2] is not None else "-", lr_at(a, step), fam,
                        nc, x.shape[0], x.shape[1], sps, now - t0))
            else:
                log("step %5d loss %.6f lr %.2e nc %3d batch %dx%d %.2f steps/s %.0f s" % (
                    step + 1, l, lr_at(a, step), nc, x.shape[0], x.shape[1], sps, now - t0))
            hist.append(h)
            for f in (1, 2):
                acc[f][0].zero_()
                acc[f][1] = 0
        if step + 1 < a.steps and (time.time() - t0 > a.time_limit or
                                   (deadline and time.time() > deadline)):
            stopped = step + 1
            log("TIME LIMIT: stopped at step %d of %d" % (stopped, a.steps))
            break
    del dl
    t_train = time.time() - t0
    log("training done: %d steps, %.1f s, %.1f M tokens (padded)" % (
        step + 1 - first, t_train, tok_count / 1e6))
    return model, opt, {"steps_done": step + 1, "steps_planned": a.steps,
                        "stopped_early": stopped, "first_step": first,
                        "train_seconds": round(t_train, 1), "parameters": nparam,
                        "final_loss": hist[-1]["loss"] if hist else None, "history": hist}


def bench(a, tok, dev):
    """Step time at fixed N (family 1 and, in a mixture, family 2), for planning --steps."""
    model = Qwen3ForCausalLM(make_config(tok, a)).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
    ds = Batches(tok, a, 0, 1)
    res = {}
    cases = [(1, n, None) for n in (10, 40, 60, 90, 120)]
    if a.task2_frac > 0:
        cases += [(2, n, (9, 9)) for n in (8, 24, 40, 46)]
    for fam, n, rr in cases:
        batches = [ds.make(s, (fam, n, rr)) for s in range(6)]
        for i, (_, _, _, x, y) in enumerate(batches):
            if i == 1:
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t = time.time()
            x, y = x.to(dev), y.to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                loss = model(input_ids=x, labels=y, use_cache=False).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = (time.time() - t) / (len(batches) - 1)
        t1 = time.time()
        for s in range(20):
            ds.make(s, (fam, n, rr))
        key = ("N=%d" % n) if fam == 1 else ("task2 N=%d" % n)
        res[key] = {"step_s": round(dt, 4), "batch": list(x.shape),
                    "make_batch_s": round((time.time() - t1) / 20, 4)}
        log("bench %s: %.1f ms/step, batch %s, %.1f ms to make a batch on one CPU" % (
            key, dt * 1e3, list(x.shape), res[key]["make_batch_s"] * 1e3))
    return res


# ------------------------------------------------------------------ save / eval

def save(model, tok_dir, out_dir, tok, copy_tokenizer=True):
    """save_pretrained in bf16 (+ the tokenizer files, unless copy_tokenizer is False: the
    GPU tool returns at most 8 files, and intermediate calls also return the checkpoint)."""
    os.makedirs(out_dir, exist_ok=True)
    model = copy.deepcopy(model).to(torch.bfloat16)
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
    for f in TOK_FILES if copy_tokenizer else []:
        shutil.copyfile(os.path.join(tok_dir, f), os.path.join(out_dir, f))
    sizes = {f: os.path.getsize(os.path.join(out_dir, f)) for f in sorted(os.listdir(out_dir))}
    log("saved", out_dir, sizes)
    return sizes


def main(argv):
    t_proc = time.time()
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
    # family 2 (rule machine) in the mixture
    ap.add_argument("--task2-frac", type=float, default=0.0,
                    help="fraction of steps drawn from family 2 (0: family 1 only)")
    ap.add_argument("--t2-nmin", type=int, default=1, help="family 2 step count N range")
    ap.add_argument("--t2-nmax", type=int, default=46)
    ap.add_argument("--t2-rmin", type=int, default=2, help="family 2 rule count R range")
    ap.add_argument("--t2-rmax", type=int, default=12)
    ap.add_argument("--t2-focus", type=float, default=0.6,
                    help="after the curriculum, this fraction of family 2 steps in the focus range")
    ap.add_argument("--t2-focus-lo", type=int, default=16)
    ap.add_argument("--t2-focus-hi", type=int, default=40)
    ap.add_argument("--t2-focus-rlo", type=int, default=6)
    ap.add_argument("--t2-focus-rhi", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=320)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--mlp", type=int, default=768)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--time-limit", type=float, default=1e9, help="training seconds, hard stop")
    ap.add_argument("--call-seconds", type=float, default=0,
                    help="wall-clock budget of this process (0: none); training stops "
                         "--eval-reserve seconds before it")
    ap.add_argument("--eval-reserve", type=float, default=90)
    ap.add_argument("--checkpoint", action="store_true",
                    help="write OUT/ckpt.NN when the planned steps are not done")
    ap.add_argument("--resume", default="", help="directory with ckpt.NN to continue from")
    ap.add_argument("--bench", action="store_true", help="time steps at fixed N first")
    ap.add_argument("--eval-sets", default="test,dev",
                    help="sets once all steps are done (tools/train/eval.py: dev, test, "
                         "task2-dev, task2-test, gen:..., gen2:...)")
    ap.add_argument("--eval-sets-partial", default="dev,task2-dev",
                    help="sets after a call that ends before the planned steps")
    ap.add_argument("--stop-dev", type=float, default=0.99,
                    help="report stop_reached when every partial (dev) set reaches this")
    ap.add_argument("--eval-limit", type=int, default=0, help="first K problems of each set")
    ap.add_argument("--eval-batch", type=int, default=320)
    ap.add_argument("--eval-time", type=float, default=240, help="skip sets after this")
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args(argv)

    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    devname = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    log("torch %s, transformers %s, GPU %s, python %s" % (
        torch.__version__, transformers.__version__, devname, sys.version.split()[0]))
    log("args", json.dumps(vars(a)))
    tok_path = os.path.join(a.model_dir, "tokenizer.json")
    tok = AutoTokenizer.from_pretrained(a.model_dir)
    check_tokenizer(tok, gen_task.Tokenizer(tok_path), tok_path)
    report = {"args": vars(a), "torch": torch.__version__,
              "transformers": transformers.__version__, "device": devname}
    os.makedirs(a.out, exist_ok=True)
    ck = load_checkpoint(a.resume)
    if ck is not None:
        diff = {k: (ck["run"].get(k), getattr(a, k)) for k in RUN_KEYS
                if ck["run"].get(k) != getattr(a, k)}
        if diff:
            sys.exit("checkpoint in %s was made with other run arguments: %s" % (a.resume, diff))
        if ck["step"] >= a.steps:
            sys.exit("checkpoint is already at step %d of %d" % (ck["step"], a.steps))
    elif a.resume:
        log("no checkpoint in %r: starting at step %d" % (a.resume, a.start_step))
    if a.bench and ck is None:
        report["bench"] = bench(a, tok, dev)
    deadline = t_proc + a.call_seconds - a.eval_reserve if a.call_seconds else None
    model, opt, report["train"] = train(a, tok, dev, ck, deadline)
    done = report["train"]["steps_done"] >= a.steps
    report["done"] = done
    mdir = os.path.join(a.out, "model")
    if a.checkpoint and not done:
        save_checkpoint(a.out, model, opt, report["train"]["steps_done"],
                        report["train"]["history"], a)
    # intermediate calls return the checkpoint too: the model without the tokenizer files
    report["files"] = save(model, a.model_dir, mdir, tok, copy_tokenizer=done or not a.checkpoint)
    del model, opt
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    with open(os.path.join(a.out, "eval.json"), "w") as f:
        json.dump(report, f, indent=1)
    sets = zeval.load_sets(a.eval_sets if done else a.eval_sets_partial, a.model_dir, tok_path,
                           a.eval_limit)
    budget = a.eval_time
    if a.call_seconds:
        # no set starts later than 90 s before the end of the call (a family-2 dev set
        # takes 40-60 s on the GPU)
        budget = min(budget, t_proc + a.call_seconds - time.time() - 90)
    report["eval"] = zeval.evaluate(mdir, sets, dev, a.eval_batch, torch.float32, budget,
                                    tok_dir=a.model_dir)
    dev_accs = [r["accuracy"] for n, r in report["eval"].items() if "dev" in n]
    report["stop_reached"] = bool(dev_accs) and len(dev_accs) == len(
        [n for n, _ in sets if "dev" in n]) and min(dev_accs) >= a.stop_dev
    with open(os.path.join(a.out, "eval.json"), "w") as f:
        json.dump(report, f, indent=1)
    tr = report["train"]
    print("\n==== summary ====")
    print("params %.3f M | steps %d/%d | train %.0f s | final loss %.2e | safetensors %.1f MB" % (
        tr["parameters"] / 1e6, tr["steps_done"], tr["steps_planned"], tr["train_seconds"],
        tr["final_loss"] or float("nan"), report["files"].get("model.safetensors", 0) / 1e6))
    print(zeval.summary_table(report["eval"]))
    print("DONE (all %d steps)" % a.steps if done else
          "NOT DONE: %d of %d steps%s" % (tr["steps_done"], a.steps,
                                           "; checkpoint in OUT/ckpt.*" if a.checkpoint else ""))
    if report["stop_reached"]:
        print("STOP RULE: every dev set >= %.3f" % a.stop_dev)
    print("process wall time %.0f s" % (time.time() - t_proc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
