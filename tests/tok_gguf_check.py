#!/usr/bin/env python3
"""The oracle and comparison of tests/test_tok_gguf_hf.sh: zipage's tokenizers against
transformers on the golden corpus (the 2,228 texts, 2.4 MB, of $ZP_BUILD/tok_golden/qwen3.json,
which begin with the 38 of tests/golden/tokenizer_golden_small.json), without
add_special_tokens, and with it on the first 200 texts (it adds BOS/EOS or nothing). Llama-3.1
(the Llama-3 vocabulary with a BOS post-processor) runs on the first 200 texts only.

Tokenizers compared (each one present is checked; the npm ones need tests/golden/node_modules):
  smollm2        --smollm FILE.gguf: zipage's tok_load_gguf against transformers loaded from the
                 same file with the pre-tokenizer of SmolLM2's own tokenizer.json (Digits with
                 individual digits, then ByteLevel); plain transformers-from-GGUF (GPT-2's
                 ByteLevel regex) is measured too and may differ only on texts with a number
  qwen3, llama3, llama3_1 (-gguf)  tokenizer-only GGUFs written by tools/gguf_tokenizer.py
                 from the npm tokenizer.json files: tok_load_gguf against transformers from
                 the GGUF
  qwen3, llama3, llama3_1 (-dir)   the npm directories: tok_load against transformers
                 AutoTokenizer.from_pretrained(dir)

transformers decides the tokenizer class of a GGUF from its config, which it reads with
gguf-py's GGUFReader (~30 s for 150k tokens). Only model_type matters to the tokenizer, so
that read is replaced by general.architecture (--real-config keeps the slow one).

Chat: for every GGUF, `zipage tokenize --chat` (--render) on a few conversations against
transformers' apply_chat_template(add_generation_prompt=True) with the file's
tokenizer.chat_template, text and ids.

The one deviation allowed: transformers adds GPT2Tokenizer's default "<|endoftext|>" as a new
id past the vocabulary when the file has no such token (Llama-3); zipage encodes it as text.
A case whose transformers ids hold such an id is counted, not failed.

usage: tok_gguf_check.py --zipage Z --corpus qwen3.json --work DIR [--smollm F] [--npm DIR]
"""
import argparse
import json
import os
import subprocess
import sys
import time
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def fast_config():
    """transformers reads a GGUF's config only for model_type here: give it that alone."""
    import transformers.modeling_gguf_pytorch_utils as mg
    from transformers.integrations.gguf import read_gguf_metadata

    def load(path, return_tensors=False, **kw):
        arch = read_gguf_metadata(path)[0]["general.architecture"]
        return {"config": {"model_type": arch}}

    mg.load_gguf_checkpoint = load


def from_gguf(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


SPECIAL_CASES = 200


def encode(tok, texts):
    """ids of texts, and of the first SPECIAL_CASES with add_special_tokens"""
    return (tok(texts, add_special_tokens=False)["input_ids"],
            tok(texts[:SPECIAL_CASES], add_special_tokens=True)["input_ids"])


def zipage(z, model, corpus, special):
    cmd = [z, "tokenize", "--model", model, "--batch", "--file", corpus] + (["--special"] if special else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"FAIL {' '.join(cmd)}: exit {r.returncode}\n{r.stderr}")
    return [json.loads(line) for line in r.stdout.splitlines()]


CHATS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello! 12 345"}, {"role": "user", "content": "héllo 👋 <think>x</think>"}],
]


def check_chat(name, z, model, tok):
    """zipage's built-in template renderer against transformers' Jinja; returns mismatches."""
    bad = 0
    for msgs in CHATS:
        want = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        text = json.dumps(msgs)
        r = subprocess.run([z, "tokenize", "--model", model, "--chat", "--render", "--text", text],
                           capture_output=True, text=True)
        ids = subprocess.run([z, "tokenize", "--model", model, "--chat", "--text", text], capture_output=True, text=True)
        want_ids = tok(want, add_special_tokens=False)["input_ids"]
        if r.returncode or r.stdout != want or ids.returncode or json.loads(ids.stdout) != want_ids:
            bad += 1
            print(f"FAIL {name} chat {msgs!r}:\n{r.stdout}{r.stderr}\nwant\n{want}")
    return bad


def has_number(text):
    return any(unicodedata.category(c).startswith("N") for c in text)


def compare(name, texts, want, got, n_vocab=None):
    """Counts mismatches (printing the first few); ids >= n_vocab in want are the allowed
    deviation. Returns (mismatches, deviations)."""
    bad = dev = 0
    if len(got) != len(want):
        print(f"FAIL {name}: zipage gave {len(got)} results for {len(want)} texts")
        return 1, 0
    for i, (w, g) in enumerate(zip(want, got)):
        if w == g:
            continue
        if n_vocab is not None and any(x >= n_vocab for x in w):
            dev += 1
            continue
        bad += 1
        if bad <= 5:
            k = next((j for j in range(min(len(w), len(g))) if w[j] != g[j]), min(len(w), len(g)))
            print(f"FAIL {name} case {i} {texts[i][:60]!r}: at id {k} transformers {w[k:k + 8]} zipage {g[k:k + 8]}")
    return bad, dev


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zipage", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--smollm")
    ap.add_argument("--npm")
    ap.add_argument("--real-config", action="store_true")
    a = ap.parse_args()
    t0 = time.time()
    texts = [c["text"] for c in json.load(open(a.corpus, encoding="utf-8"))["cases"]]
    corpus = os.path.join(a.work, "corpus.json")
    with open(corpus, "w", encoding="utf-8") as f:
        json.dump(texts, f, ensure_ascii=False)
    short = os.path.join(a.work, "corpus_short.json")
    with open(short, "w", encoding="utf-8") as f:
        json.dump(texts[:SPECIAL_CASES], f, ensure_ascii=False)
    npm = {}
    if a.npm:  # tokenizer-only GGUFs, written while transformers loads SmolLM2
        for name, arch, pre in (("qwen3", "qwen3", "qwen2"), ("llama3", "llama", "llama-bpe"),
                                ("llama3_1", "llama", "llama-bpe")):
            d = os.path.join(a.npm, "tokenizer-" + name, "models")
            out = os.path.join(a.work, name + ".gguf")
            cmd = [sys.executable, os.path.join(ROOT, "tools/gguf_tokenizer.py"), d, out, "--arch", arch, "--pre", pre]
            npm[name] = (d, out, subprocess.Popen(cmd, stderr=subprocess.DEVNULL))
    if not a.real_config:
        fast_config()
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer
    from transformers.integrations.gguf import read_gguf_metadata

    # (name, zipage model, transformers ids plain, special, vocabulary size for the deviation)
    sets = []
    fails = 0
    if a.smollm:
        tok = from_gguf(a.smollm)
        fails += check_chat("smollm2", a.zipage, a.smollm, tok)
        plain_gguf, _ = encode(tok, texts)
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
        plain, special = encode(tok, texts)
        differ = [i for i in range(len(texts)) if plain[i] != plain_gguf[i]]
        print(f"smollm2: transformers-from-GGUF's GPT-2 regex differs from SmolLM2's own pre-tokenizer on "
              f"{len(differ)} of {len(texts)} texts")
        if any(not has_number(texts[i]) for i in differ):
            print("FAIL smollm2: transformers-from-GGUF differs on a text without numbers")
            return 1
        sets.append(("smollm2-gguf", a.smollm, plain, special, None))
    for name, (d, out, proc) in npm.items():
        if proc.wait():
            print(f"FAIL tools/gguf_tokenizer.py {d} {out}: exit {proc.returncode}")
            return 1
        some = texts[:SPECIAL_CASES] if name == "llama3_1" else texts
        n_tokens = read_gguf_metadata(out)[0]["tokenizer.ggml.tokens"]  # a count: the array is not read
        tok = from_gguf(out)
        fails += check_chat(name, a.zipage, out, tok)
        sets.append((name + "-gguf", out, *encode(tok, some), n_tokens))
        sets.append((name + "-dir", d, *encode(AutoTokenizer.from_pretrained(d), some), None))
    print(f"transformers: {len(sets)} tokenizers, {len(texts)} texts, {len(CHATS)} chats each, "
          f"{time.time() - t0:.1f} s")
    for name, model, plain, special, n_vocab in sets:
        t1 = time.time()
        n_tok = sum(map(len, plain))
        full = corpus if len(plain) == len(texts) else short
        bad, dev = compare(name, texts, plain, zipage(a.zipage, model, full, False), n_vocab)
        bad_s, dev_s = compare(name + " add_special", texts, special, zipage(a.zipage, model, short, True), n_vocab)
        print(f"{name}: {n_tok} tokens, {bad} + {bad_s} mismatches (plain + add_special), {dev} + {dev_s} cases "
              f"with transformers' extra <|endoftext|> id, zipage {time.time() - t1:.1f} s")
        fails += bad + bad_s
    print(f"total {time.time() - t0:.1f} s")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
