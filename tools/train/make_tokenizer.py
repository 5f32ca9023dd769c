#!/usr/bin/env python3
"""make_tokenizer.py: learns the small byte-level BPE of zipage's reasoning model and writes
tokenizer.json + tokenizer_config.json (HF format, Qwen2 pipeline) into the model directory.

Vocabulary: ids 0-255 are the 256 byte-level symbols in GPT-2 order, then one id per learned
merge, then the added tokens <|endoftext|> <|im_start|> <|im_end|> (special) and <think>
</think> (not special). Merges are learned on ChatML-wrapped task text (split "tokenizer",
so no dev/test problem is seen) by plain BPE: repeatedly merge the most frequent adjacent pair
inside pre-tokens (ties: smallest pair), until no pair occurs --min-count times or --merges
merges exist. Deterministic; Python 3 standard library only.

Usage: python3 tools/train/make_tokenizer.py [--out models/zipage-reasoner]
"""
import argparse
import collections
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "task"))
import gen_task  # noqa: E402

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def corpus_words(nprob):
    """Pre-token frequencies of nprob ChatML-wrapped problems (N spread over 4-120)."""
    words = collections.Counter()
    for k in range(nprob):
        rng = gen_task.problem_rng("tokenizer", 1, k)
        p = gen_task.make_problem(rng, rng.randint(4, 120))
        text = gen_task.chat_prefix(p["prompt"]) + p["trace"] + "<|im_end|>\n"
        for piece in gen_task._SPECIAL_RE.split(text):
            if piece and piece not in gen_task.SPECIALS:
                for m in gen_task.PRETOK_ASCII.finditer(piece):
                    words[m.group(0)] += 1
    return words


def learn_merges(words, max_merges, min_count):
    b2c = gen_task.BYTE_TO_CHAR
    seqs = {w: [b2c[b] for b in w.encode("utf-8")] for w in words}
    merges = []
    while len(merges) < max_merges:
        pairs = collections.Counter()
        for w, c in words.items():
            s = seqs[w]
            for i in range(len(s) - 1):
                pairs[(s[i], s[i + 1])] += c
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if best[1] < min_count:
            break
        a, b = best[0]
        merges.append([a, b])
        for w in seqs:
            s = seqs[w]
            i, out = 0, []
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return merges


def tokenizer_json(merges):
    vocab = {}
    for i, (_, ch) in enumerate(gen_task.BYTE_ALPHABET):
        vocab[ch] = i
    for a, b in merges:
        vocab[a + b] = len(vocab)
    added = []
    for j, t in enumerate(gen_task.SPECIALS):
        added.append({"id": len(vocab) + j, "content": t, "single_word": False,
                      "lstrip": False, "rstrip": False, "normalized": False,
                      "special": t.startswith("<|")})
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
          "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated",
             "invert": False},
            dict(bl)]},
        "post_processor": dict(bl),
        "decoder": dict(bl),
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def tokenizer_config(tj):
    dec = {}
    for t in tj["added_tokens"]:
        dec[str(t["id"])] = {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                               "single_word", "special")}
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": dec,
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 4096,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(gen_task.DEFAULT_TOKENIZER)))
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--merges", type=int, default=48)
    ap.add_argument("--min-count", type=int, default=100)
    a = ap.parse_args(argv)
    merges = learn_merges(corpus_words(a.problems), a.merges, a.min_count)
    tj = tokenizer_json(merges)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, indent=2)
        f.write("\n")
    with open(os.path.join(a.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config(tj), f, ensure_ascii=False, indent=2)
        f.write("\n")
    print("%d merges: %s" % (len(merges), " ".join(a + b for a, b in merges)))
    print("vocab %d + %d added tokens" % (256 + len(merges), len(tj["added_tokens"])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
