#!/usr/bin/env bash
# Checks the shipped reasoning model directory (models/zipage-reasoner) and its task generator
# without PyTorch: the committed dev/test sets are exactly what tools/task/gen_task.py
# regenerates; every reference trace is the right computation on its prompt and satisfies the
# task's length / long-range rules; gen_task's tokenizer gives the token ids transformers gave
# on the GPU machine (reference_logits.json); tools/train/make_tokenizer.py reproduces the
# tokenizer files; the safetensors file is bf16, matches config.json and is under 40 MB.
set -euo pipefail
command -v python3 >/dev/null || { echo "SKIP python3 not installed"; exit 77; }
M=models/zipage-reasoner
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
python3 tools/task/gen_task.py --split dev --seed 1 --count 100 --out "$T/dev.jsonl"
python3 tools/task/gen_task.py --split test --seed 1 --count 200 --out "$T/test.jsonl"
cmp "$T/dev.jsonl" $M/dev.jsonl
cmp "$T/test.jsonl" $M/test.jsonl
python3 tools/train/make_tokenizer.py --out "$T/tok" >/dev/null
cmp "$T/tok/tokenizer.json" $M/tokenizer.json
cmp "$T/tok/tokenizer_config.json" $M/tokenizer_config.json
python3 - "$M" <<'PY'
import json, math, os, re, struct, sys
sys.path.insert(0, "tools/task")
import gen_task as g
m = sys.argv[1]
tok = g.Tokenizer(os.path.join(m, "tokenizer.json"))
ids = set()
for split, count in (("dev", 100), ("test", 200)):
    rows = [json.loads(l) for l in open(os.path.join(m, split + ".jsonl"))]
    assert len(rows) == count, split
    for r in rows:
        ids.add(r["id"])
        vals = [int(v) for v in re.findall(r"a\d+=(\d+)", r["prompt"])]
        assert len(vals) == r["n"] and all(0 <= v <= 99 for v in vals), r["id"]
        assert r["prompt"].endswith("\nAdd a%d down to a1." % r["n"]), r["id"]
        s, lines = 0, []
        for i in range(r["n"], 0, -1):
            lines.append("a%d=%d s=%d+%d=%d" % (i, vals[i - 1], s, vals[i - 1], s + vals[i - 1]))
            s += vals[i - 1]
        assert r["trace"] == "<think>\n" + "\n".join(lines) + "\n</think>\n\nanswer %d" % s, r["id"]
        assert r["answer"] == str(s) == g.extract_answer(r["trace"]), r["id"]
        assert 1000 <= r["trace_tokens"] <= 4000, r["id"]
        assert r["long_lookups"] >= 1 and r["max_lookup_distance"] > 1000, r["id"]
        full = g.chat_prefix(r["prompt"]) + r["trace"] + "<|im_end|>"
        assert len(tok.encode(full)) == r["prompt_tokens"] + r["trace_tokens"], r["id"]
assert len(ids) == 300
assert g.extract_answer("x\nanswer 12\nanswer 345 \nmore") == "345"
assert g.extract_answer("no result") is None
ref = json.load(open(os.path.join(m, "reference_logits.json")))
for name, sq in ref["sequences"].items():
    assert tok.encode(sq["text"]) == sq["ids"], name
    assert len(sq["argmax"]) == sq["length"] == len(sq["ids"])
    assert all(len(l) == json.load(open(os.path.join(m, "config.json")))["vocab_size"]
               for l in sq["logits"])
# The reference trace is what the model predicts (greedy) at every trace position it was fed.
sq = ref["sequences"]["dev0_full"]
start = len(tok.encode(g.chat_prefix(json.loads(open(os.path.join(m, "dev.jsonl")).readline())["prompt"])))
assert sq["argmax"][start - 1:-1] == sq["ids"][start:], "dev0 greedy trace differs"
cfg = json.load(open(os.path.join(m, "config.json")))
assert cfg["architectures"] == ["Qwen3ForCausalLM"] and cfg["head_dim"] == 64
assert cfg["max_position_embeddings"] >= 4096 and cfg["tie_word_embeddings"]
path = os.path.join(m, "model.safetensors")
assert os.path.getsize(path) < 40 * 1024 * 1024
with open(path, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    hdr = json.loads(f.read(n))
hdr.pop("__metadata__", None)
H, V, I, L = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
q, kv = cfg["num_attention_heads"] * 64, cfg["num_key_value_heads"] * 64
want = {"model.embed_tokens.weight": [V, H], "model.norm.weight": [H]}
for i in range(L):
    p = "model.layers.%d." % i
    want.update({p + "input_layernorm.weight": [H], p + "post_attention_layernorm.weight": [H],
                 p + "self_attn.q_proj.weight": [q, H], p + "self_attn.k_proj.weight": [kv, H],
                 p + "self_attn.v_proj.weight": [kv, H], p + "self_attn.o_proj.weight": [H, q],
                 p + "self_attn.q_norm.weight": [64], p + "self_attn.k_norm.weight": [64],
                 p + "mlp.gate_proj.weight": [I, H], p + "mlp.up_proj.weight": [I, H],
                 p + "mlp.down_proj.weight": [H, I]})
assert {k: v["shape"] for k, v in hdr.items()} == want
assert {v["dtype"] for v in hdr.values()} == {"BF16"}
nparam = sum(math.prod(s) for s in want.values())
print("ok: 300 problems, tokenizer ids, %d tensors, %.2f M parameters" % (len(hdr), nparam / 1e6))
PY
