#!/usr/bin/env python3
"""Converts a small Hugging Face model directory (Qwen3, Qwen2 or Llama; safetensors, one
file) into a GGUF file the way llama.cpp's converter lays it out, for zipage's tests: the
same metadata keys and tensor names, llama's q/k rows permuted to interleaved rotary pairs,
Llama-3 rope scaling stored as rope_freqs.weight, and every 2-D weight in the tensor type
asked for (norms and biases stay F32, as llama.cpp keeps them).

usage: hf_to_gguf.py MODEL_DIR OUT.gguf [--type F32|F16|BF16|Q8_0|Q4_0|Q4_1]
                     [--embed-type T] [--no-rope-scaling] [--tokenizer DIR --pre NAME]

--no-rope-scaling leaves Llama-3 rope scaling out (transformers ignores rope_freqs.weight when
it loads a GGUF, so a file compared with transformers must not carry it). --tokenizer writes
the tokenizer of DIR (tokenizer.json + tokenizer_config.json) with tools/gguf_tokenizer.py.
Runs in the environment of tools/pyenv.sh (gguf, numpy, safetensors).
"""
import argparse
import json
import math
import os
import sys

import gguf
import numpy as np
from safetensors.numpy import load_file

ARCHS = {"Qwen3ForCausalLM": "qwen3", "Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama"}
TYPES = {
    "F32": gguf.GGMLQuantizationType.F32,
    "F16": gguf.GGMLQuantizationType.F16,
    "BF16": gguf.GGMLQuantizationType.BF16,
    "Q8_0": gguf.GGMLQuantizationType.Q8_0,
    "Q4_0": gguf.GGMLQuantizationType.Q4_0,
    "Q4_1": gguf.GGMLQuantizationType.Q4_1,
}
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def interleave_heads(w, n_heads):
    """Hugging Face's half-split rotary rows -> llama.cpp's interleaved pairs, per head."""
    rows = w.shape[0]
    d = rows // n_heads
    return w.reshape(n_heads, 2, d // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(cfg, head_dim):
    """The divisor of each rotary frequency that Llama-3 rope scaling applies."""
    rs = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    if rs.get("rope_type", rs.get("type")) != "llama3":
        return None
    base = cfg.get("rope_theta", rs.get("rope_theta", 10000.0))
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    out = []
    for j in range(head_dim // 2):
        freq = 1.0 / base ** (2 * j / head_dim)
        wavelen = 2 * math.pi / freq
        if wavelen < old / hi:
            out.append(1.0)
        elif wavelen > old / lo:
            out.append(factor)
        else:
            smooth = (old / wavelen - lo) / (hi - lo)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def add(writer, name, data, qtype):
    data = np.ascontiguousarray(data.astype(np.float32))
    if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
        writer.add_tensor(name, data)
    elif qtype == gguf.GGMLQuantizationType.F16:
        writer.add_tensor(name, data.astype(np.float16))
    else:
        writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model_dir")
    p.add_argument("out")
    p.add_argument("--type", default="F32", choices=sorted(TYPES))
    p.add_argument("--embed-type", choices=sorted(TYPES))
    p.add_argument("--no-rope-scaling", action="store_true")
    p.add_argument("--tokenizer")
    p.add_argument("--pre", default="qwen2")
    a = p.parse_args()
    cfg = json.load(open(os.path.join(a.model_dir, "config.json")))
    arch = ARCHS[cfg["architectures"][0]]
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hidden = cfg["hidden_size"]
    head_dim = cfg.get("head_dim") or hidden // heads
    w = load_file(os.path.join(a.model_dir, "model.safetensors"))
    qtype, etype = TYPES[a.type], TYPES[a.embed_type or a.type]

    writer = gguf.GGUFWriter(a.out, arch)
    writer.add_name(os.path.basename(os.path.normpath(a.model_dir)))
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    rs = cfg.get("rope_parameters") or {}
    writer.add_rope_freq_base(float(cfg.get("rope_theta", rs.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(cfg["vocab_size"])
    if a.tokenizer:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from gguf_tokenizer import add_tokenizer

        add_tokenizer(writer, a.tokenizer, a.pre)
    else:  # the ids the model's generation stops on
        gen = os.path.join(a.model_dir, "generation_config.json")
        eos = json.load(open(gen)).get("eos_token_id") if os.path.exists(gen) else None
        eos = cfg.get("eos_token_id") if eos is None else eos
        if isinstance(eos, list):
            eos = eos[0]
        if eos is not None:
            writer.add_eos_token_id(eos)
        if cfg.get("bos_token_id") is not None:
            writer.add_bos_token_id(cfg["bos_token_id"])

    factors = None if a.no_rope_scaling else llama3_rope_factors(cfg, head_dim)
    if factors is not None:
        writer.add_tensor("rope_freqs.weight", factors)
    add(writer, "token_embd.weight", w["model.embed_tokens.weight"], etype)
    add(writer, "output_norm.weight", w["model.norm.weight"], qtype)
    if "lm_head.weight" in w and not cfg.get("tie_word_embeddings", False):
        add(writer, "output.weight", w["lm_head.weight"], etype)
    for i in range(cfg["num_hidden_layers"]):
        for hf, gg in LAYER_NAMES.items():
            t = w.get(f"model.layers.{i}.{hf}")
            if t is None:
                continue
            if arch == "llama" and hf.startswith("self_attn.q_proj"):
                t = interleave_heads(t, heads)
            elif arch == "llama" and hf.startswith("self_attn.k_proj"):
                t = interleave_heads(t, kv)
            add(writer, f"blk.{i}.{gg}", t, qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()
