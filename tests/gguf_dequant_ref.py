"""gguf-py's side of tests/test_gguf_dequant.sh.

    python tests/gguf_dequant_ref.py OUTDIR

Writes OUTDIR/ref.gguf with gguf-py's GGUFWriter (alignment 64, one key of every value type,
string and nested arrays) holding seeded random tensors of every type zipage reads: F32; every
F16 and BF16 bit pattern; BF16, Q8_0, Q4_0 and Q4_1 quantized by gguf.quants.quantize from
normal values over many scales; and random blocks (finite f16 scale fields, some subnormal) of
Q8_0, Q4_0, Q4_1, Q4_K, Q5_K and Q6_K, which gguf-py cannot quantize. Then it reads the file
back with GGUFReader and writes, for each tensor, OUTDIR/NAME.f32: gguf.quants.dequantize of
its bytes as raw little-endian f32; OUTDIR/tensors.txt: "name type ne0,ne1,.. offset bytes"
(offset relative to the data section); OUTDIR/keys.txt: "key type count" as `zipage gguf`
prints them ("[u8]" for an array of u8).
"""

import os
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

VNAMES = {V.UINT8: "u8", V.INT8: "i8", V.UINT16: "u16", V.INT16: "i16", V.UINT32: "u32",
          V.INT32: "i32", V.FLOAT32: "f32", V.BOOL: "bool", V.STRING: "string",
          V.ARRAY: "array", V.UINT64: "u64", V.INT64: "i64", V.FLOAT64: "f64"}
NESTED = [[1, 2], [3], [4, 5, 6]]


def finite_f16(rng, n):
    """n finite f16 scales over 8 decades (the smallest subnormal), either sign."""
    mag = 10.0 ** rng.uniform(-7, 1, n)
    return (rng.choice([-1.0, 1.0], n) * mag).astype(np.float16)


def raw_blocks(rng, qtype, rows, blocks_per_row):
    """Random blocks of qtype with finite f16 scale fields, shaped (rows, bytes per row)."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, (rows * blocks_per_row, size), dtype=np.uint8)
    scale_at = {T.Q8_0: [0], T.Q4_0: [0], T.Q4_1: [0, 2], T.Q4_K: [0, 2], T.Q5_K: [0, 2],
                T.Q6_K: [208]}[qtype]
    for at in scale_at:
        b[:, at:at + 2] = finite_f16(rng, len(b)).view(np.uint8).reshape(-1, 2)
    return b.reshape(rows, blocks_per_row * size)


def normal_rows(rng, rows, cols):
    """Normal values, each row at its own scale (1e-4 .. 1e4), one row all zero."""
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    x *= (10.0 ** rng.uniform(-4, 4, (rows, 1))).astype(np.float32)
    x[0] = 0
    return x


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(20261205)
    path = os.path.join(out, "ref.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_custom_alignment(64)
    for i, (vt, val) in enumerate([(V.UINT8, 200), (V.INT8, -5), (V.UINT16, 60000),
                                   (V.INT16, -30000), (V.UINT32, 4000000000),
                                   (V.INT32, -2000000000), (V.FLOAT32, 0.1), (V.BOOL, True),
                                   (V.UINT64, 2**63 + 5), (V.INT64, -2**40), (V.FLOAT64, 1e-300),
                                   (V.STRING, "tab\there \"quoted\" \u00e9")]):
        w.add_key_value(f"test.scalar_{i}", val, vt)
    w.add_array("test.strings", ["a", "", "ccc"] * 5)
    w.add_array("test.floats", [0.5, -1.25])
    w.add_array("test.nested", NESTED)

    tensors = [
        ("f32", normal_rows(rng, 4, 96), None),
        ("f16.all", np.arange(65536, dtype=np.uint16).view(np.float16).reshape(256, 256), None),
        ("bf16.all", np.arange(65536, dtype=np.uint16), T.BF16),
        ("bf16", gguf.quants.quantize(normal_rows(rng, 3, 64), T.BF16), T.BF16),
    ]
    for qt in (T.Q8_0, T.Q4_0, T.Q4_1):
        q = gguf.quants.quantize(normal_rows(rng, 16, 256), qt)
        tensors.append((qt.name.lower(), q, qt))
        tensors.append((qt.name.lower() + ".raw", raw_blocks(rng, qt, 8, 16), qt))
    q = gguf.quants.quantize(normal_rows(rng, 6, 64), T.Q4_1).reshape(2, 3, -1)
    tensors.append(("q4_1.3d", q, T.Q4_1))
    for qt in (T.Q4_K, T.Q5_K, T.Q6_K):
        tensors.append((qt.name.lower(), raw_blocks(rng, qt, 8, 3), qt))
    for name, data, qt in tensors:
        w.add_tensor(name, data, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    r = gguf.GGUFReader(path)
    with open(os.path.join(out, "keys.txt"), "w") as f:
        for fld in r.fields.values():
            if fld.name.startswith("GGUF."):
                continue
            t = VNAMES[fld.types[0]]
            count = 1
            if fld.types[0] == V.ARRAY:
                t = "[" + VNAMES[fld.types[1]] + "]"
                count = len(NESTED) if fld.types[1] == V.ARRAY else len(fld.data)
            f.write(f"{fld.name} {t} {count}\n")
    with open(os.path.join(out, "tensors.txt"), "w") as f:
        for t in r.tensors:
            ref = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
            ref.astype("<f4").tofile(os.path.join(out, t.name + ".f32"))
            dims = ",".join(str(int(d)) for d in t.shape)
            f.write(f"{t.name} {t.tensor_type.name} {dims} {t.data_offset - r.data_offset} "
                    f"{t.n_bytes}\n")


if __name__ == "__main__":
    main()
