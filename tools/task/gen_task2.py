#!/usr/bin/env python3
"""gen_task2.py: the second task family of zipage's reasoning model, "rule machine".

Family 1 (gen_task.py, reverse running sum) is the labelled worst case for KV eviction: every
prompt value is needed exactly once, at a time no attention pattern predicts. This family is
built to look like ordinary reasoning instead: the state the answer depends on lives in the
trace and moves forward line by line, a small rule table in the prompt is re-read again and
again at irregular intervals, and most of the trace is scratch arithmetic that is dead as soon
as its step's result is written.

Prompt (user message): a table of R rules (labels A, B, C, ...), a start state and a step
count N. For example (--split example --seed 1 --count 1 --min-steps 6 --max-steps 6
--min-rules 4 --max-rules 4):

    Rules:
    A: +859 lo B hi A
    B: +683 lo D hi B
    C: *9 lo C hi D
    D: *3 lo C hi A
    Start A 800. Run 6 steps.

A state is a letter (the current rule) and a 3-digit number v (000-999). One step applies the
current rule's operation to v modulo 1000 ("+859": add 859; "*9": multiply by 9; multipliers
are 3, 7 or 9), then picks the next letter by the new number's tens digit: "lo" (0-4) or "hi"
(5-9). The reference solution (the model's chain of thought) counts the steps down from N to 1:

    <think>
    A: +859 lo B hi A
    6 A 800 +859
    u 0+9=09+0=09
    t 0+5=05+0=05
    h 8+8=16+0=16
    = 659 hi A
    5 A 659 +859
    u 9+9=18+0=18
    t 5+5=10+1=11
    h 6+8=14+1=15
    = 518 lo B
    B: +683 lo D hi B
    4 B 518 +683
    ...
    1 C 427 *9
    u 7*9=63+0=63
    t 2*9=18+6=24
    h 4*9=36+2=38
    = 843 lo C
    </think>

    answer C843

- A rule line is a copy of the table line of the new letter: it is written at the start and
  whenever the letter changes (not after the last step), so the table is consulted at
  irregular, state-dependent intervals (a rule whose branch points back to itself keeps the
  letter for a while) and the same few table lines are read many times, ever further back.
- A step header "k L vvv op" copies the step count (k = N, N-1, ..., 1), the letter and number
  just written and the rule's operation: all from the lines just above.
- The three digit lines (u = units, t = tens, h = hundreds) are the scratch work: digit of v,
  the operation's digit (for "*d", d itself), their sum or product as two digits, plus the
  carry from the line above (0 for u), as two digits; the second digit is the result digit, the
  first the next carry; the carry out of h is dropped (mod 1000). No line needs more than one
  digit fact and one carry, and none is read again once the "=" line is written.
- The "=" line writes the new number (the result digits h, t, u), lo/hi by its tens digit and
  the next letter from the current rule's branches. After the step numbered 1 the trace closes.

Answer: the final state, letter then number, e.g. "C843" (a letter A-L and exactly 3 digits).
Answer extraction rule (the same as gen_task.py's, so every evaluator works unchanged): take
the model's generated assistant text, find the LAST occurrence of "answer " in it, take the
text after it up to the end of that line (or the end of the text), strip whitespace; the
problem is solved iff that string equals the JSONL "answer" field exactly.

Model input format: ChatML, as gen_task.py: <|im_start|>user\\n{prompt}<|im_end|>\\n
<|im_start|>assistant\\n, then {trace}<|im_end|>.

Difficulty knobs: the step count N (--min-steps/--max-steps) and the number of rules R
(--min-rules/--max-rules, 2-12). A step costs about 66 tokens, a rule line about 17 (about 0.7
rule lines per step). Default N 16-40, R 6-12: traces of about 1,200-3,400 tokens, sequences
(prompt included) under 3,600; the model's 4,096-token context holds up to about N = 48. The
default sets keep traces within 1,000-4,000 tokens and redraw (from the same stream) a problem
whose table is never consulted more than 1,000 tokens back; every set redraws a walk that
uses fewer than 3 rules or, from N = 8 up, re-reads rules fewer than 3 times (walk_ok).

Per-problem metadata (token counts with the model's tokenizer, on the full ChatML sequence):
prompt_tokens (ChatML prefix), trace_tokens (trace + <|im_end|>), consults (rule lines),
rules_used (distinct rules consulted), reconsults (consults of a rule consulted before),
consult_steps (step count k of the header after each rule line: the irregular intervals),
consult_distances (tokens from each rule line's operation back to the same table line's
operation), max_consult_distance, long_consults (distances > 1,000), consult_copy_distances
(tokens back to the nearest earlier copy of the same rule: the table or an earlier rule line),
scratch_tokens (tokens of the u/t/h lines) and scratch_fraction (scratch_tokens /
trace_tokens).

Splits: every problem is drawn from random.Random("zipage-task2/{split}/{seed}/{index}") (a
namespace of its own: no stream is shared with family 1 or between splits). The committed
sets (tools/task/data/) are:
    python3 tools/task/gen_task2.py --split dev --seed 1 --count 100 --out tools/task/data/task2-dev.jsonl
    python3 tools/task/gen_task2.py --split test --seed 1 --count 200 --out tools/task/data/task2-test.jsonl
tests/test_task2_data.sh regenerates them and checks every trace.

Python 3 standard library only. The tokenizer (and the answer rule and ChatML prefix) are
gen_task.py's, imported from there: the text here is ASCII, which its encoder handles.
"""
import argparse
import bisect
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from gen_task import DEFAULT_TOKENIZER, Tokenizer, chat_prefix, extract_answer  # noqa: E402,F401

FAMILY = "task2"
LABELS = "ABCDEFGHIJKL"
MULTIPLIERS = (3, 7, 9)     # coprime to 10: a step never loses information mod 1000
P_SELF = 0.75               # chance that one branch of a rule points back to the rule itself
DEFAULT_MIN_STEPS = 16
DEFAULT_MAX_STEPS = 40
DEFAULT_MIN_RULES = 6
DEFAULT_MAX_RULES = 12
MIN_TRACE_TOKENS = 1000     # default sets: every reference trace has 1,000-4,000 tokens
MAX_TRACE_TOKENS = 4000
MIN_RULES_USED = 3          # redraw a problem whose walk is stuck in one or two rules ...
MIN_RECONSULTS = 3          # ... or that re-reads the table fewer than 3 times
LONG_RANGE = 1000           # a "long" consultation reaches back more than this many tokens
DIGIT_NAMES = "uth"         # units, tens, hundreds

# ---------------------------------------------------------------- problems


def make_table(rng, nrules):
    """nrules rules: list of (op, lo, hi); op is "+ddd" (add 1-999) or "*d" (d in 3, 7, 9).
    One branch of a rule points back to itself with probability P_SELF; every other branch
    points to another rule, so every rule has a way out."""
    table = []
    for i in range(nrules):
        if rng.random() < 0.5:
            op = "+%03d" % rng.randint(1, 999)
        else:
            op = "*%d" % rng.choice(MULTIPLIERS)
        others = [j for j in range(nrules) if j != i]
        br = [rng.choice(others), rng.choice(others)]
        if rng.random() < P_SELF:
            br[rng.randint(0, 1)] = i
        table.append((op, br[0], br[1]))
    return table


def rule_text(table, i):
    op, lo, hi = table[i]
    return "%s: %s lo %s hi %s" % (LABELS[i], op, LABELS[lo], LABELS[hi])


def step_lines(v, op):
    """The scratch lines of one step and its result: (lines, new value)."""
    ds = [v % 10, v // 10 % 10, v // 100]
    if op[0] == "+":
        k = int(op[1:])
        bs = [k % 10, k // 10 % 10, k // 100]
    else:
        bs = [int(op[1:])] * 3
    lines, out, c = [], 0, 0
    for i in range(3):
        s = ds[i] + bs[i] if op[0] == "+" else ds[i] * bs[i]
        f = s + c
        lines.append("%s %d%s%d=%02d+%d=%02d" % (DIGIT_NAMES[i], ds[i], op[0], bs[i], s, c, f))
        out += (f % 10) * 10 ** i
        c = f // 10
    return lines, out


def solve(table, state, v, nsteps):
    """The reference trace's lines as (kind, text, rule index of a rule line), kinds rule /
    head / scratch / result, and the final state (rule index, number)."""
    lines = [("rule", rule_text(table, state), state)]
    for k in range(nsteps, 0, -1):
        op = table[state][0]
        lines.append(("head", "%d %s %03d %s" % (k, LABELS[state], v, op), None))
        sl, v = step_lines(v, op)
        lines += [("scratch", s, None) for s in sl]
        t = v // 10 % 10
        nxt = table[state][1] if t < 5 else table[state][2]
        lines.append(("result", "= %03d %s %s" % (v, "lo" if t < 5 else "hi", LABELS[nxt]),
                      None))
        if nxt != state and k > 1:
            lines.append(("rule", rule_text(table, nxt), nxt))
        state = nxt
    return lines, state, v


def make_problem(rng, nsteps, nrules):
    table = make_table(rng, nrules)
    state = rng.randrange(nrules)
    v = rng.randint(0, 999)
    tlines = [rule_text(table, i) for i in range(nrules)]
    prompt = "Rules:\n" + "\n".join(tlines) + \
        "\nStart %s %03d. Run %d steps." % (LABELS[state], v, nsteps)
    # character offset of every table line's operation in the prompt
    rpos, off = [], len("Rules:\n")
    for t in tlines:
        rpos.append(off + 3)
        off += len(t) + 1
    lines, fs, fv = solve(table, state, v, nsteps)
    answer = "%s%03d" % (LABELS[fs], fv)
    # character spans in the trace: rule lines' operations, scratch lines
    off = len("<think>\n")
    cons, scratch, steps_left = [], [], nsteps
    for kind, text, r in lines:
        if kind == "rule":
            cons.append((r, off + 3, steps_left))
        elif kind == "head":
            steps_left -= 1
        elif kind == "scratch":
            scratch.append((off, off + len(text) + 1))
        off += len(text) + 1
    trace = "<think>\n" + "\n".join(t for _, t, _ in lines) + "\n</think>\n\nanswer " + answer
    return {"n": nsteps, "rules": nrules, "prompt": prompt, "trace": trace, "answer": answer,
            "_rpos": rpos, "_cons": cons, "_scratch": scratch}


def problem_rng(split, seed, index):
    return random.Random("zipage-task2/%s/%d/%d" % (split, seed, index))


# ---------------------------------------------------------------- token statistics

def token_stats(tok, p):
    """Token counts, consultation distances and scratch share of problem p, on the full ChatML
    sequence (prefix tokens, then trace tokens)."""
    pre = chat_prefix(p["prompt"])
    pre_ids, pre_offs = tok.encode(pre, offsets=True)
    tr_ids, tr_offs = tok.encode(p["trace"] + "<|im_end|>", offsets=True)
    base = len("<|im_start|>user\n")
    npre = len(pre_ids)

    def ptok(c):
        return bisect.bisect_right(pre_offs, base + c) - 1

    def ttok(c):
        return npre + bisect.bisect_right(tr_offs, c) - 1

    dists, cdists, last = [], [], {}
    for r, c, _ in p["_cons"]:
        at = ttok(c)
        src = ptok(p["_rpos"][r])
        dists.append(at - src)
        cdists.append(at - last.get(r, src))
        last[r] = at
    nscr = 0
    for a, b in p["_scratch"]:
        nscr += bisect.bisect_left(tr_offs, b) - bisect.bisect_left(tr_offs, a)
    used = [r for r, _, _ in p["_cons"]]
    return {"prompt_tokens": npre, "trace_tokens": len(tr_ids),
            "consults": len(dists), "rules_used": len(set(used)),
            "reconsults": len(used) - len(set(used)),
            "consult_steps": [k for _, _, k in p["_cons"]],
            "consult_distances": dists, "max_consult_distance": max(dists),
            "long_consults": sum(1 for d in dists if d > LONG_RANGE),
            "consult_copy_distances": cdists,
            "scratch_tokens": nscr, "scratch_fraction": round(nscr / len(tr_ids), 4)}


# ---------------------------------------------------------------- sets

def walk_ok(p):
    """The walk uses at least MIN_RULES_USED distinct rules (fewer only when the table or the
    step count is smaller) and, from 8 steps up, re-reads rules at least MIN_RECONSULTS times."""
    used = [r for r, _, _ in p["_cons"]]
    if len(set(used)) < min(MIN_RULES_USED, p["rules"], p["n"]):
        return False
    return p["n"] < 8 or len(used) - len(set(used)) >= MIN_RECONSULTS


def generate(split, seed, count, min_steps, max_steps, min_rules, max_rules, tok=None,
             min_trace=0, max_trace=0):
    """count problems. A problem whose walk fails walk_ok is redrawn from the same stream;
    with tok and
    min_trace/max_trace, so is one whose trace is outside [min_trace, max_trace] tokens or whose
    table is never consulted more than LONG_RANGE tokens back."""
    out = []
    for k in range(count):
        rng = problem_rng(split, seed, k)
        while True:
            p = make_problem(rng, rng.randint(min_steps, max_steps),
                             rng.randint(min_rules, max_rules))
            if not walk_ok(p):
                continue
            if tok is None:
                break
            st = token_stats(tok, p)
            if min_trace and (st["trace_tokens"] < min_trace or st["long_consults"] == 0):
                continue
            if max_trace and st["trace_tokens"] > max_trace:
                continue
            p.update(st)
            break
        p["id"] = "%s-%s-%d-%d" % (FAMILY, split, seed, k)
        p["family"] = FAMILY
        out.append(p)
    return out


PUBLIC_KEYS = ["id", "family", "n", "rules", "prompt", "answer", "trace", "prompt_tokens",
               "trace_tokens", "consults", "rules_used", "reconsults", "consult_steps",
               "consult_distances", "max_consult_distance", "long_consults",
               "consult_copy_distances", "scratch_tokens", "scratch_fraction"]


def public(p):
    return {k: p[k] for k in PUBLIC_KEYS if k in p}


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="test", help="stream name: train, dev, test, ...")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--min-steps", type=int, default=DEFAULT_MIN_STEPS)
    ap.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS)
    ap.add_argument("--min-rules", type=int, default=DEFAULT_MIN_RULES)
    ap.add_argument("--max-rules", type=int, default=DEFAULT_MAX_RULES)
    ap.add_argument("--min-trace-tokens", type=int, default=None,
                    help="redraw shorter problems (default: 1000 for the default ranges)")
    ap.add_argument("--max-trace-tokens", type=int, default=None,
                    help="redraw longer problems (default: 4000 for the default ranges)")
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER,
                    help="tokenizer.json for token statistics ('' to skip)")
    ap.add_argument("--out", default="-", help="JSONL output file ('-' = stdout)")
    ap.add_argument("--stats", action="store_true", help="print summary statistics to stderr")
    a = ap.parse_args(argv)
    if not (1 <= a.min_steps <= a.max_steps):
        ap.error("need 1 <= --min-steps <= --max-steps")
    if not (2 <= a.min_rules <= a.max_rules <= len(LABELS)):
        ap.error("need 2 <= --min-rules <= --max-rules <= %d" % len(LABELS))
    tok = None
    if a.tokenizer and os.path.exists(a.tokenizer):
        tok = Tokenizer(a.tokenizer)
    default = (a.min_steps, a.max_steps, a.min_rules, a.max_rules) == \
        (DEFAULT_MIN_STEPS, DEFAULT_MAX_STEPS, DEFAULT_MIN_RULES, DEFAULT_MAX_RULES)
    lo = a.min_trace_tokens if a.min_trace_tokens is not None else \
        (MIN_TRACE_TOKENS if default else 0)
    hi = a.max_trace_tokens if a.max_trace_tokens is not None else \
        (MAX_TRACE_TOKENS if default else 0)
    if (lo or hi) and tok is None:
        ap.error("--min/max-trace-tokens need the tokenizer (--tokenizer)")
    probs = generate(a.split, a.seed, a.count, a.min_steps, a.max_steps, a.min_rules,
                     a.max_rules, tok, lo, hi)
    f = sys.stdout if a.out == "-" else open(a.out, "w", encoding="utf-8")
    for p in probs:
        f.write(json.dumps(public(p), separators=(",", ":")) + "\n")
    if f is not sys.stdout:
        f.close()
    if a.stats:
        print(summary(probs), file=sys.stderr)
    return 0


def summary(probs):
    def rng_(key, fmt="%d"):
        xs = [p[key] for p in probs]
        return ("%s-%s (mean %s)" % (fmt, fmt, fmt)) % (min(xs), max(xs), sum(xs) / len(xs))
    msg = "%d problems, steps %s, rules %s" % (len(probs), rng_("n"), rng_("rules"))
    if "trace_tokens" in probs[0]:
        msg += ("; trace tokens %s; prompt tokens %s; consults %s; rules used %s; "
                "reconsults %s; max consult distance %s; consults > %d tokens back %s; "
                "scratch fraction %s" % (
                    rng_("trace_tokens"), rng_("prompt_tokens"), rng_("consults", "%.1f"),
                    rng_("rules_used", "%.1f"), rng_("reconsults", "%.1f"),
                    rng_("max_consult_distance"), LONG_RANGE, rng_("long_consults", "%.1f"),
                    rng_("scratch_fraction", "%.3f")))
    return msg


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
