#!/usr/bin/env python3
"""Writes a Hugging Face byte-level BPE tokenizer (tokenizer.json + tokenizer_config.json) into
a GGUF file's metadata the way llama.cpp's converter does for "gpt2" vocabularies:

  tokenizer.ggml.model       "gpt2"
  tokenizer.ggml.pre         the pre-tokenizer name given (llama.cpp picks it from a hash of
                             the vocabulary; here the caller names it: qwen2, llama-bpe, ...)
  tokenizer.ggml.tokens      one string per id, in the byte-level spelling of tokenizer.json
                             (added tokens as their content); ids without a token up to
                             config.json's vocab_size become "[PAD<id>]"
  tokenizer.ggml.token_type  1 normal, 3 control (special added tokens, and added tokens that
                             look like control tokens: <|...|>, <pad>, ...), 4 user-defined
                             (other added tokens), 5 unused ([PAD<id>])
  tokenizer.ggml.merges, the bos/eos/unk/pad ids, add_bos_token/add_eos_token and
  tokenizer.chat_template    through gguf-py's SpecialVocab, as the converter does

Module use (a model converter): add_tokenizer(writer, tokenizer_dir, pre) with a
gguf.GGUFWriter. Command line: a tokenizer-only GGUF (general.architecture set, no tensors):
  python tools/gguf_tokenizer.py TOKENIZER_DIR OUT.gguf --arch qwen3|llama --pre qwen2|llama-bpe
Runs in the environment of tools/pyenv.sh (gguf-py).
"""
import argparse
import json
import os
import sys

import gguf


def looks_control(text):
    """Added tokens that llama.cpp's converter makes control tokens even when tokenizer.json
    does not mark them special: <|...|>, DeepSeek's <｜...｜>, <pad>, <mask>, <unused...>."""
    wrapped = any(text.startswith(a) and text.endswith(b) for a, b in (("<|", "|>"), ("<\uff5c", "\uff5c>"),
                                                                        ("<unused", ">")))
    return wrapped or text in ("<pad>", "<mask>")


def read_tokens(tokenizer_dir):
    """(tokens, token types) indexed by id, from tokenizer.json (and config.json's vocab_size)."""
    with open(os.path.join(tokenizer_dir, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    model = tj.get("model") or {}
    if model.get("type") != "BPE":
        raise ValueError(f"{tokenizer_dir}: model type {model.get('type')!r} is not byte-level BPE")
    by_id = {}
    for text, i in model["vocab"].items():
        by_id[i] = (text, gguf.TokenType.NORMAL)
    for added in tj.get("added_tokens") or []:
        text = added["content"]
        kind = gguf.TokenType.CONTROL if added.get("special") or looks_control(text) else gguf.TokenType.USER_DEFINED
        by_id[added["id"]] = (text, kind)
    n = max(by_id) + 1
    config = os.path.join(tokenizer_dir, "config.json")
    if os.path.isfile(config):
        with open(config, encoding="utf-8") as f:
            n = max(n, json.load(f).get("vocab_size") or 0)
    tokens, types = [], []
    for i in range(n):
        text, kind = by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED))
        tokens.append(text)
        types.append(kind)
    return tokens, types


def add_tokenizer(writer, tokenizer_dir, pre):
    """Adds the tokenizer of tokenizer_dir to a gguf.GGUFWriter (metadata only)."""
    tokens, types = read_tokens(tokenizer_dir)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)


def main():
    ap = argparse.ArgumentParser(description="tokenizer-only GGUF from a tokenizer.json directory")
    ap.add_argument("tokenizer_dir")
    ap.add_argument("out")
    ap.add_argument("--arch", required=True, choices=["qwen3", "qwen2", "llama"])
    ap.add_argument("--pre", required=True, help="tokenizer.ggml.pre (qwen2, llama-bpe, ...)")
    a = ap.parse_args()
    writer = gguf.GGUFWriter(a.out, a.arch)
    writer.add_type("model")
    writer.add_name(os.path.basename(os.path.normpath(a.tokenizer_dir)))
    add_tokenizer(writer, a.tokenizer_dir, a.pre)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(a.out, file=sys.stderr)


if __name__ == "__main__":
    main()
