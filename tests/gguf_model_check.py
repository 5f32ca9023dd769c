#!/usr/bin/env python3
"""test_gguf_model's checks: zipage loading a model from a GGUF file (engine/ggufmodel.c)
against the same model loaded from its Hugging Face directory, and refusing broken files.

usage: gguf_model_check.py ZIPAGE WORKDIR

1. Seeded random Llama-3 (llama3 rope scaling), Qwen2 and Qwen3 directories from
   `zipage mkmodel` (fp32), converted by tools/hf_to_gguf.py to F32 GGUF files: zipage's logits
   of a 200-id prompt from the file and from the directory must agree within 1e-6 (the same
   fp32 weights, so only a wrong mapping, permutation or RoPE could differ). The Llama file
   carries rope_freqs.weight, which transformers ignores, so this is where it is checked.
2. The Llama file without rope_freqs.weight must differ from the directory by more than 1e-3:
   the factors are applied, not only parsed.
3. Copies of the F32 Llama file with one key or tensor changed must be refused with an error
   naming what is wrong (each expected message fragment below).
Prints one PASS/FAIL line per check; exit 1 when any failed.
"""
import os
import subprocess
import sys

import gguf
import numpy as np

ZP, WORK = sys.argv[1], sys.argv[2]
HERE = os.path.dirname(os.path.abspath(__file__))
CONVERT = os.path.join(HERE, "..", "tools", "hf_to_gguf.py")
DIMS = {
    "llama": "--hidden 64 --layers 2 --heads 4 --kv-heads 2 --head-dim 16 --intermediate 128",
    "qwen2": "--hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128",
    "qwen3": "--hidden 64 --layers 2 --heads 4 --kv-heads 2 --head-dim 32 --intermediate 128",
}
PROMPT = [int(x) for x in np.random.default_rng(7).integers(0, 256, 200)]
failed = 0


def check(name, ok, detail=""):
    global failed
    failed += not ok
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")


def logits(model):
    out = os.path.join(WORK, "logits.f32")
    r = subprocess.run([ZP, "logits", "--backend", "cpu", "--model", model, "--prompt-ids",
                        " ".join(map(str, PROMPT)), "--out", out], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"zipage logits {model}: {r.stderr.strip()}")
    return np.fromfile(out, dtype=np.float32)


def refusal(model):
    """zipage's error for a file it must refuse, or None when it loaded."""
    r = subprocess.run([ZP, "logits", "--backend", "cpu", "--model", model, "--prompt-ids", "1 2",
                        "--out", os.path.join(WORK, "x.f32")], capture_output=True, text=True)
    return r.stderr.strip() if r.returncode else None


def convert(src, out, *extra):
    subprocess.run([sys.executable, CONVERT, src, out, "--type", "F32", *extra], check=True)


def copy_gguf(src, dst, set_kv=None, drop_kv=(), drop_tensor=(), tensor=None):
    """src rewritten as dst with keys set ({key: (value, GGUFValueType)}) or dropped and
    tensors dropped or replaced ({name: (array, GGMLQuantizationType)})."""
    set_kv, tensor = dict(set_kv or {}), tensor or {}
    r = gguf.GGUFReader(src)
    arch = set_kv.pop("general.architecture", (r.fields["general.architecture"].contents(),))[0]
    w = gguf.GGUFWriter(dst, arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in drop_kv:
            continue
        if key in set_kv:
            w.add_key_value(key, *set_kv[key])
        elif f.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, f.contents(), f.types[0], f.types[-1])
        else:
            w.add_key_value(key, f.contents(), f.types[0])
    for key in set_kv.keys() - r.fields.keys():
        w.add_key_value(key, *set_kv[key])
    for t in r.tensors:
        if t.name in drop_tensor:
            continue
        data, qtype = tensor.get(t.name, (np.array(t.data), t.tensor_type))
        if qtype == gguf.GGMLQuantizationType.F16:
            data = data.astype(np.float16)
        w.add_tensor(t.name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    files = {}
    for i, (arch, dims) in enumerate(DIMS.items()):
        d = os.path.join(WORK, arch)
        subprocess.run([ZP, "mkmodel", "--arch", arch, *dims.split(), "--vocab", "320", "--seed",
                        str(11 + i), "--dtype", "f32", "--out", d], check=True,
                       stdout=subprocess.DEVNULL)
        files[arch] = os.path.join(WORK, f"{arch}.gguf")
        convert(d, files[arch])
        ref, got = logits(d), logits(files[arch])
        diff = float(np.max(np.abs(ref - got))) if ref.shape == got.shape else float("inf")
        check(f"{arch} F32 GGUF = directory", diff <= 1e-6, f"max |dlogit| {diff:.3g}")
        if arch == "llama":
            nors = os.path.join(WORK, "llama-norope.gguf")
            convert(d, nors, "--no-rope-scaling")
            off = float(np.max(np.abs(ref - logits(nors))))
            check("llama rope_freqs.weight applied", off > 1e-3,
                  f"max |dlogit| without it {off:.3g}")

    src, V = files["llama"], gguf.GGUFValueType
    bad = os.path.join(WORK, "bad.gguf")
    cases = [
        ("unsupported architecture", dict(set_kv={"general.architecture": ("gpt2", V.STRING)}),
         "general.architecture 'gpt2' is not supported"),
        ("missing block_count", dict(drop_kv={"llama.block_count"}),
         "missing 'llama.block_count'"),
        ("head_count not a multiple of head_count_kv",
         dict(set_kv={"llama.attention.head_count_kv": (3, V.UINT32)}),
         "is not a multiple of head_count_kv 3"),
        ("partial rotary", dict(set_kv={"llama.rope.dimension_count": (8, V.UINT32)}),
         "partial rotary is not supported"),
        ("yarn rope scaling", dict(set_kv={"llama.rope.scaling.type": ("yarn", V.STRING)}),
         "'llama.rope.scaling.type' = 'yarn' is not supported"),
        ("zero rms epsilon", dict(set_kv={"llama.attention.layer_norm_rms_epsilon":
                                          (0.0, V.FLOAT32)}), "out of range"),
        ("missing tensor", dict(drop_tensor={"blk.1.attn_k.weight"}),
         "tensor 'blk.1.attn_k.weight' missing"),
        ("wrong tensor shape",
         dict(tensor={"blk.0.ffn_up.weight": (np.zeros((64, 128), np.float32),
                                              gguf.GGMLQuantizationType.F32)}),
         "tensor 'blk.0.ffn_up.weight': dims [128,64,1,1], expected [64,128]"),
        ("rope_freqs.weight not F32",
         dict(tensor={"rope_freqs.weight": (np.ones(8, np.float32),
                                            gguf.GGMLQuantizationType.F16)}),
         "rope_freqs.weight is F16, not F32"),
        ("rope_freqs.weight zero", dict(tensor={"rope_freqs.weight": (
            np.zeros(8, np.float32), gguf.GGMLQuantizationType.F32)}),
         "rope_freqs.weight[0] = 0 out of range"),
        ("eos id outside the vocabulary",
         dict(set_kv={"tokenizer.ggml.eos_token_id": (320, V.UINT32)}),
         "'tokenizer.ggml.eos_token_id' = 320 is not a token id"),
    ]
    for name, change, want in cases:
        copy_gguf(src, bad, **change)
        msg = refusal(bad)
        check(f"refused: {name}", msg is not None and want in msg, msg or "loaded")
    # the copy itself must load, or the refusals above prove nothing
    copy_gguf(src, bad)
    msg = refusal(bad)
    check("unchanged copy loads", msg is None, msg or "")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
