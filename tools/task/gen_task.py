#!/usr/bin/env python3
"""gen_task.py: the synthetic long-range reasoning task of zipage's own model (issue 7).

Task ("reverse running sum"): the prompt lists N values a1..aN (each 0-99) in label order
and asks for their sum taken from aN down to a1. The reference solution (the model's chain of
thought) writes one line per step, looking the value up by its label in the prompt and
writing out the addition:

    <think>
    a57=12 s=0+12=12
    a56=40 s=12+40=52
    ...
    a1=30 s=2811+30=2841
    </think>

    answer 2841

Because the trace walks the list backwards, line k looks up a value that lies about
(prompt items after it + trace so far) tokens back: the last lines reach back to the start of
the prompt, more than 1,000 tokens away for N >= ~50. Every problem's exact token distances are
computed with the model's tokenizer and stored (max_lookup_distance, long_lookups).
Difficulty knob: N (--min-n/--max-n). The default (N 50-64) gives traces of 1,000-1,400
tokens; N up to ~125 still fits a 4,096-token context.

Answer extraction rule (used by every evaluator): take the model's generated assistant text,
find the LAST occurrence of "answer " in it, take the text after it up to the end of that
line (or the end of the text), strip whitespace; the problem is solved iff that string equals
the JSONL "answer" field exactly (a decimal integer, no sign, no leading zeros).

Model input format (ChatML, as the shipped chat template renders it):
    <|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n
and the reference completion is {trace}<|im_end|>.

Splits: every problem is drawn from random.Random("zipage-reasoner/{split}/{seed}/{index}"),
so train, dev and test (different split names) never share a random stream. The committed
sets are:  --split dev --seed 1 --count 100  and  --split test --seed 1 --count 200.

Python 3 standard library only (runs on the CI machine with plain python3). The tokenizer
code here handles the ASCII text this task produces and nothing else; it reads the model's
tokenizer.json (byte-level BPE, Qwen2 pre-tokenizer) and is checked against HF tokenizers by
tools/train/train.py on the GPU machine.
"""
import argparse
import json
import os
import random
import re
import sys

DEFAULT_MIN_N = 50
DEFAULT_MAX_N = 64
MIN_TRACE_TOKENS = 1000   # default sets: every reference trace is at least this long
LONG_RANGE = 1000         # a "long" look-up reaches back more than this many tokens

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TOKENIZER = os.path.join(HERE, "..", "..", "models", "zipage-reasoner", "tokenizer.json")

# ---------------------------------------------------------------- problems


def make_problem(rng, n):
    """One problem with n values: dict with prompt, trace, answer and the character offsets
    (in prompt and trace) of every value, for the look-up distance statistics."""
    vals = [rng.randint(0, 99) for _ in range(n)]
    parts, vpos = [], []
    off = 0
    for i, v in enumerate(vals, 1):
        head = ("a%d=" if i == 1 else " a%d=") % i
        parts.append(head)
        off += len(head)
        vpos.append(off)
        s = str(v)
        parts.append(s)
        off += len(s)
    parts.append("\nAdd a%d down to a1." % n)
    prompt = "".join(parts)

    lines, tpos = [], []
    toff = len("<think>\n")
    s = 0
    for i in range(n, 0, -1):
        v = vals[i - 1]
        head = "a%d=" % i
        tpos.append((i, toff + len(head)))
        line = "%s%d s=%d+%d=%d" % (head, v, s, v, s + v)
        s += v
        lines.append(line)
        toff += len(line) + 1
    trace = "<think>\n" + "\n".join(lines) + "\n</think>\n\nanswer %d" % s
    return {"n": n, "values": vals, "prompt": prompt, "trace": trace, "answer": str(s),
            "_vpos": vpos, "_tpos": tpos}


def problem_rng(split, seed, index):
    return random.Random("zipage-reasoner/%s/%d/%d" % (split, seed, index))


# ---------------------------------------------------------------- tokenizer (ASCII subset)

def _bytes_to_unicode():
    """GPT-2 byte-level alphabet: byte -> printable character; also its vocab order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + \
        list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return list(zip(bs, [chr(c) for c in cs]))


BYTE_ALPHABET = _bytes_to_unicode()          # in vocab order: ids 0..255
BYTE_TO_CHAR = dict(BYTE_ALPHABET)

# The Qwen2 pre-tokenizer pattern restricted to ASCII (\p{L} = [A-Za-z], \p{N} = [0-9]);
# alternatives in the same order, Python's re is leftmost-first like Oniguruma.
_L, _N = "A-Za-z", "0-9"
PRETOK_ASCII = re.compile(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    r"|[^\r\n%s%s]?[%s]+" % (_L, _N, _L) +
    r"|[%s]" % _N +
    r"| ?[^\s%s%s]+[\r\n]*" % (_L, _N) +
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
_SPECIAL_RE = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")


class Tokenizer:
    """Encoder for this task's ASCII text with the model's tokenizer.json (HF-identical on
    that text: added tokens split first, then pre-tokenizer, then BPE by merge rank)."""

    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            tj = json.load(f)
        self.vocab = tj["model"]["vocab"]
        merges = tj["model"]["merges"]
        self.ranks = {}
        for r, m in enumerate(merges):
            a, b = m if isinstance(m, list) else m.split(" ")
            self.ranks[(a, b)] = r
        self.added = {t["content"]: t["id"] for t in tj["added_tokens"]}
        self.vocab_inv = {i: s for s, i in self.vocab.items()}
        self.cache = {}

    def _bpe(self, word):
        ids = self.cache.get(word)
        if ids is not None:
            return ids
        syms = [BYTE_TO_CHAR[b] for b in word.encode("utf-8")]
        while len(syms) > 1:
            best, bi = None, -1
            for i in range(len(syms) - 1):
                r = self.ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best):
                    best, bi = r, i
            if best is None:
                break
            syms[bi:bi + 2] = [syms[bi] + syms[bi + 1]]
        ids = [self.vocab[s] for s in syms]
        self.cache[word] = ids
        return ids

    def encode(self, text, offsets=False):
        """Token ids of text (and, if offsets, the character offset where each token starts)."""
        if any(ord(c) > 127 for c in text):
            raise ValueError("gen_task tokenizer handles ASCII text only")
        ids, offs = [], []
        pos = 0
        for piece in _SPECIAL_RE.split(text):
            if not piece:
                continue
            if piece in self.added:
                ids.append(self.added[piece])
                offs.append(pos)
            else:
                for m in PRETOK_ASCII.finditer(piece):
                    o = pos + m.start()
                    for t in self._bpe(m.group(0)):
                        ids.append(t)
                        offs.append(o)
                        o += len(self.vocab_inv[t])  # one symbol per byte, ASCII
            pos += len(piece)
        return (ids, offs) if offsets else ids


def chat_prefix(prompt):
    return "<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n"


def token_stats(tok, p):
    """Exact token counts and look-up distances of problem p (token distance from each trace
    line's value to the same label's value in the prompt, in the full ChatML sequence)."""
    pre = chat_prefix(p["prompt"])
    pre_ids, pre_offs = tok.encode(pre, offsets=True)
    tr_ids, tr_offs = tok.encode(p["trace"] + "<|im_end|>", offsets=True)
    base = len("<|im_start|>user\n")
    tokpos = {o: k for k, o in enumerate(pre_offs)}
    trpos = {o: k for k, o in enumerate(tr_offs)}
    dists = []
    for i, co in p["_tpos"]:
        src = tokpos[base + p["_vpos"][i - 1]]
        dst = len(pre_ids) + trpos[co]
        dists.append(dst - src)
    return {"prompt_tokens": len(pre_ids), "trace_tokens": len(tr_ids),
            "max_lookup_distance": max(dists),
            "long_lookups": sum(1 for d in dists if d > LONG_RANGE)}


# ---------------------------------------------------------------- sets

def generate(split, seed, count, min_n, max_n, tok=None, min_trace=0):
    """count problems; with tok and min_trace, a problem whose trace is shorter than min_trace
    tokens or that has no look-up longer than LONG_RANGE is redrawn from the same stream."""
    out = []
    for k in range(count):
        rng = problem_rng(split, seed, k)
        while True:
            p = make_problem(rng, rng.randint(min_n, max_n))
            if tok is None:
                break
            st = token_stats(tok, p)
            if st["trace_tokens"] >= min_trace and (min_trace == 0 or st["long_lookups"] > 0):
                p.update(st)
                break
        p["id"] = "%s-%d-%d" % (split, seed, k)
        out.append(p)
    return out


def public(p):
    keys = ["id", "n", "prompt", "answer", "trace", "prompt_tokens", "trace_tokens",
            "max_lookup_distance", "long_lookups"]
    return {k: p[k] for k in keys if k in p}


def extract_answer(text):
    """The documented answer-extraction rule."""
    k = text.rfind("answer ")
    if k < 0:
        return None
    return text[k + len("answer "):].split("\n", 1)[0].strip()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="test", help="stream name: train, dev, test, ...")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--min-n", type=int, default=DEFAULT_MIN_N)
    ap.add_argument("--max-n", type=int, default=DEFAULT_MAX_N)
    ap.add_argument("--min-trace-tokens", type=int, default=None,
                    help="redraw shorter problems (default: 1000 for the default N range)")
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER,
                    help="tokenizer.json for token statistics ('' to skip)")
    ap.add_argument("--out", default="-", help="JSONL output file ('-' = stdout)")
    ap.add_argument("--stats", action="store_true", help="print summary statistics to stderr")
    a = ap.parse_args(argv)
    if not (1 <= a.min_n <= a.max_n):
        ap.error("need 1 <= --min-n <= --max-n")
    tok = None
    if a.tokenizer and os.path.exists(a.tokenizer):
        tok = Tokenizer(a.tokenizer)
    mt = a.min_trace_tokens
    if mt is None:
        mt = MIN_TRACE_TOKENS if (a.min_n, a.max_n) == (DEFAULT_MIN_N, DEFAULT_MAX_N) else 0
    if mt and tok is None:
        ap.error("--min-trace-tokens needs the tokenizer (--tokenizer)")
    probs = generate(a.split, a.seed, a.count, a.min_n, a.max_n, tok, mt)
    f = sys.stdout if a.out == "-" else open(a.out, "w", encoding="utf-8")
    for p in probs:
        f.write(json.dumps(public(p), separators=(",", ":")) + "\n")
    if f is not sys.stdout:
        f.close()
    if a.stats:
        ns = [p["n"] for p in probs]
        msg = "%d problems, N %d-%d" % (len(probs), min(ns), max(ns))
        if tok is not None and "trace_tokens" in probs[0]:
            tt = [p["trace_tokens"] for p in probs]
            pt = [p["prompt_tokens"] for p in probs]
            md = [p["max_lookup_distance"] for p in probs]
            ll = [p["long_lookups"] for p in probs]
            msg += ("; trace tokens %d-%d (mean %.0f); prompt tokens %d-%d; max look-up "
                    "distance %d-%d; look-ups > %d tokens back per problem %d-%d (mean %.1f)"
                    % (min(tt), max(tt), sum(tt) / len(tt), min(pt), max(pt), min(md), max(md),
                       LONG_RANGE, min(ll), max(ll), sum(ll) / len(ll)))
        print(msg, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
