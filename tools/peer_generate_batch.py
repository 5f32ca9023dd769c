#!/usr/bin/env python3
"""The transformers peer of the performance issue (64 requests x 128 prompt x 1,024 new tokens on
the Qwen3-1.7B shape): `model.generate_batch` (continuous batching, paged KV cache) with CUDA
graphs, on a random-weight model built from a config.json in bf16. Greedy, EOS disabled, so every
request generates exactly --gen tokens. A warm-up run of the same shape (other prompts) through a
persistent manager captures the CUDA graphs; the timed run is the next one. Reports output tok/s
(requests x gen / seconds of the timed generate_batch call), prints a table and, with --json FILE,
appends one JSON object per configuration. --sweep times a few configurations, reports the best.

Without flash-attn (and with no network for the hub's kernels) transformers 5.17 has two paged
attention implementations, `paged|sdpa` and `paged|eager`; both read the whole batch's KV through
one packed SDPA call under a block-diagonal mask, and transformers turns CUDA graphs off for them
unless asked (generation/continuous_batching/initialization.py, decide_use_cuda_graphs). Here they
are asked for. Exits 77 when CUDA is not available, unless --cpu-smoke: a tiny model on the CPU,
no CUDA graphs, checked against model.generate."""
import argparse
import gc
import importlib.util
import json
import os
import random
import sys
import time

import torch

DEFAULT_CONFIG = "tools/shapes/qwen3-1.7b/config.json"
QWEN3_1_7B = dict(  # used when the default config file is absent
    architectures=["Qwen3ForCausalLM"], model_type="qwen3", hidden_size=2048, intermediate_size=6144,
    num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
    vocab_size=151936, max_position_embeddings=40960, rope_theta=1000000, rms_norm_eps=1e-6,
    tie_word_embeddings=True, attention_bias=False, hidden_act="silu", bos_token_id=151643,
    eos_token_id=151645)
TINY = dict(model_type="qwen3", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=1000,
            max_position_embeddings=512, tie_word_embeddings=True, eos_token_id=2)

# --sweep: overrides of the command line's configuration, timed one after the other
SWEEP = [
    ("defaults", {}),
    ("kv-pad 16384", {"kv_padding": 16384}),  # transformers' preset
    ("kv-pad 1024", {"kv_padding": 1024}),
    ("async, max-batch-tokens 1024", {"async_batching": "on", "max_batch_tokens": 1024}),
    ("compile level 1", {"compile_level": 1}),
    ("SDPA: cuDNN only", {"sdpa": "cudnn"}),
    ("no CUDA graphs (transformers' own choice for paged|sdpa)", {"cuda_graph": "off"}),
]
SDPA = {"auto": None, "efficient": "mem_efficient", "cudnn": "cudnn", "math": "math"}


def sdpa_backends(choice):
    """Leaves only one of torch's SDPA backends on (global flags, so the manager's thread sees them too)."""
    for b in ("flash", "mem_efficient", "math", "cudnn"):
        getattr(torch.backends.cuda, f"enable_{b}_sdp")(SDPA[choice] in (None, b))


def load_config(a):
    from transformers import AutoConfig
    if a.cpu_smoke:
        return AutoConfig.for_model(**TINY), "tiny (2 layers, hidden 64)"
    if os.path.exists(a.config):
        return AutoConfig.from_pretrained(os.path.dirname(os.path.abspath(a.config))), a.config
    if a.config != DEFAULT_CONFIG:
        sys.exit(f"peer_generate_batch: no such config: {a.config}")
    print(f"note: {a.config} not found; using the built-in Qwen3-1.7B shape")
    return AutoConfig.for_model(**QWEN3_1_7B), "qwen3-1.7b (built in)"


def build_model(cfg, attn, dtype, device):
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    with torch.device(device):  # random init in place, no weights: what is timed is the arithmetic
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation=attn)
    return model.eval()


def prompts(n, length, vocab, seed):
    rng = random.Random(seed)
    top = min(vocab, 151643)  # below Qwen3's special tokens
    return [[rng.randrange(top) for _ in range(length)] for _ in range(n)]


def cb_config(c, a):
    from transformers.generation import ContinuousBatchingConfig
    onoff = {"on": True, "off": False, "auto": None}
    need = a.requests * -(-(a.prompt + a.gen) // c["block_size"])  # blocks for the whole workload
    num_blocks = c["num_blocks"] if c["num_blocks"] >= 0 else need + max(2, need // 8)
    mbt = c["max_batch_tokens"] if c["max_batch_tokens"] >= 0 else min(8192, max(256, a.requests * a.prompt))
    return ContinuousBatchingConfig(
        block_size=c["block_size"],
        num_blocks=num_blocks or None,  # 0: transformers sizes the cache from free memory
        max_batch_tokens=mbt or None,
        use_cuda_graph=onoff[c["cuda_graph"]],
        use_async_batching=onoff[c["async_batching"]],
        q_padding_interval_size=c["q_padding"],
        kv_padding_interval_size=c["kv_padding"],
        default_compile_level=c["compile_level"],
        allow_block_sharing=c["block_sharing"],
        max_blocks_per_request=0,  # the decode fast path needs flash_attn_with_kvcache
        seed=a.seed,
    )


def check(out, ids, gen):
    """Every request back, without error, with exactly gen new tokens; returns the token count."""
    if len(out) != len(ids):
        raise RuntimeError(f"generate_batch returned {len(out)} of {len(ids)} requests")
    bad = [(k, o.error, len(o.generated_tokens)) for k, o in out.items()
           if o.error is not None or len(o.generated_tokens) != gen]
    if bad:
        raise RuntimeError(f"{len(bad)} requests failed or stopped early, e.g. {bad[0]}")
    return sum(len(o.generated_tokens) for o in out.values())


def run_config(model, name, c, a, shape, dev_name):
    """Warm-up run(s) then the timed run through one persistent manager; returns the JSON record."""
    from transformers.generation import GenerationConfig
    gc_ = GenerationConfig(max_new_tokens=a.gen, do_sample=False, eos_token_id=-1, pad_token_id=0)
    cbc = cb_config(c, a)
    if a.device == "cuda":
        sdpa_backends(c["sdpa"])
    vocab = model.config.vocab_size
    t0 = time.perf_counter()
    for w in range(a.warmup_runs):  # same shape, other prompts (no prefix-cache hits either way)
        wgen = a.warmup_gen or a.gen
        out = model.generate_batch(prompts(a.requests, a.prompt, vocab, a.seed + 1 + w),
                                   generation_config=gc_, continuous_batching_config=cbc,
                                   persistent_manager=True, warmup=True, max_new_tokens=wgen)
        check(out, range(a.requests), wgen)
    warm_s = time.perf_counter() - t0
    ids = prompts(a.requests, a.prompt, vocab, a.seed)
    if a.device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.generate_batch(ids, generation_config=gc_, continuous_batching_config=cbc,
                               persistent_manager=True, warmup=True, max_new_tokens=a.gen)
    secs = time.perf_counter() - t0
    ntok = check(out, ids, a.gen)
    mgr = getattr(model, "_cached_continuous_batching_manager", None)
    r = getattr(mgr, "continuous_batching_config", cbc)  # resolved by the manager
    rec = {"peer": "transformers generate_batch", "config": name, "shape": shape, "device": dev_name,
           "torch": torch.__version__, "transformers": __import__("transformers").__version__,
           "requests": a.requests, "prompt": a.prompt, "gen": a.gen,
           "attn_implementation": model.config._attn_implementation,
           "use_cuda_graph": list(r.cuda_graph_booleans) if r.use_cuda_graph is not None else None,
           "use_async_batching": r.use_async_batching, "block_size": r.block_size,
           "num_blocks": r.num_blocks, "max_batch_tokens": r.max_batch_tokens,
           "q_padding": r.q_padding_interval_size, "kv_padding": r.kv_padding_interval_size,
           "compile_level": r.default_compile_level, "sdpa": c["sdpa"], "block_sharing": r.allow_block_sharing,
           "warmup_runs": a.warmup_runs, "warmup_s": round(warm_s, 2),
           "seconds": round(secs, 3), "output_tokens": ntok, "tok_s": round(ntok / secs, 1)}
    if a.cpu_smoke:
        model.set_attn_implementation("sdpa")  # reference: plain greedy generate, request by request
        same = 0
        for o, p in zip(out.values(), ids):
            ref = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                 max_new_tokens=a.gen, min_new_tokens=a.gen, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)
            same += ref[0, len(p):].tolist() == list(o.generated_tokens)
        rec["matches_generate"] = f"{same}/{len(ids)}"
        model.set_attn_implementation(a.attn)
    return rec


def release(model):
    model.destroy_cached_continuous_batching_manager()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=DEFAULT_CONFIG, help="a config.json (random weights are made)")
    ap.add_argument("--requests", type=int, help="default 64 (--cpu-smoke: 4)")
    ap.add_argument("--prompt", type=int, help="prompt tokens per request, default 128 (--cpu-smoke: 16)")
    ap.add_argument("--gen", type=int, help="new tokens per request, default 1024 (--cpu-smoke: 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attn", default="paged|sdpa", help="paged|sdpa or paged|eager (paged|flash_attention_2 "
                    "needs the flash-attn package)")
    ap.add_argument("--cuda-graph", choices=["on", "off", "auto"], default="on")
    ap.add_argument("--async-batching", choices=["on", "off", "auto"], default="off")
    ap.add_argument("--num-blocks", type=int, default=-1,
                    help="KV cache blocks; -1: the workload's need + 1/8; 0: transformers' own (free memory)")
    ap.add_argument("--max-batch-tokens", type=int, default=-1,
                    help="-1: requests x prompt (whole prefill in one step, at most 8192); 0: transformers' own")
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--q-padding", type=int, default=0,
                    help="q_padding_interval_size; 0: transformers' preset (64)")
    ap.add_argument("--kv-padding", type=int, default=4096,
                    help="kv_padding_interval_size; 0: transformers' preset (16384)")
    ap.add_argument("--compile-level", type=int, default=0, choices=[0, 1, 2, 3])
    ap.add_argument("--sdpa", choices=sorted(SDPA), default="auto",
                    help="torch SDPA backend for the masked packed attention (auto: torch's choice)")
    ap.add_argument("--block-sharing", action="store_true", help="prefix caching (random prompts share nothing)")
    ap.add_argument("--warmup-runs", type=int, default=1)
    ap.add_argument("--warmup-gen", type=int, default=0, help="new tokens of the warm-up runs; 0: --gen")
    ap.add_argument("--sweep", nargs="?", const="all", metavar="N,N",
                    help="time the configurations of SWEEP (all, or these numbers from 1), report the best")
    ap.add_argument("--log-level", default="error", help="transformers' logging level")
    ap.add_argument("--json")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny model on the CPU, no CUDA graphs")
    a = ap.parse_args()

    import transformers
    import logging
    transformers.logging.set_verbosity(getattr(transformers.logging, a.log_level.upper()))
    logging.getLogger("ContinuousBatchingLogger").setLevel(a.log_level.upper())
    small = a.cpu_smoke
    a.requests = a.requests or (4 if small else 64)
    a.prompt = a.prompt or (16 if small else 128)
    a.gen = a.gen or (8 if small else 1024)
    if a.cpu_smoke:
        a.device, dtype, dev_name = "cpu", torch.float32, "cpu"
        a.cuda_graph = a.async_batching = "off"
        if a.sweep:
            sys.exit("peer_generate_batch: --sweep needs CUDA")
        if importlib.util.find_spec("psutil") is None:  # transformers sizes a CPU cache from psutil's figures
            sys.exit("peer_generate_batch: --cpu-smoke needs psutil (pip install psutil)")
    else:
        if not torch.cuda.is_available():
            print("peer_generate_batch: CUDA is not available (--cpu-smoke checks the code path)", file=sys.stderr)
            sys.exit(77)
        a.device, dtype, dev_name = "cuda", torch.bfloat16, torch.cuda.get_device_name()
    cfg, shape = load_config(a)
    if a.cpu_smoke:  # pad Q and KV to the intervals as under CUDA graphs, so the padded inputs are checked too
        from transformers.generation.continuous_batching import model_runner
        init = model_runner.ModelRunner.__init__

        def padded_init(self, *args, **kw):
            init(self, *args, **kw)
            self.pad_inputs = True
        model_runner.ModelRunner.__init__ = padded_init
    model = build_model(cfg, a.attn, dtype, a.device)
    nparam = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {dev_name}, {shape}: "
          f"{cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, {nparam / 1e9:.2f} B parameters, "
          f"{a.attn}; {a.requests} requests x {a.prompt} prompt x {a.gen} new tokens")

    base = {"cuda_graph": a.cuda_graph, "async_batching": a.async_batching, "num_blocks": a.num_blocks,
            "max_batch_tokens": a.max_batch_tokens, "block_size": a.block_size, "q_padding": a.q_padding,
            "kv_padding": a.kv_padding, "compile_level": a.compile_level, "block_sharing": a.block_sharing,
            "sdpa": a.sdpa}
    if not a.sweep:
        todo = [("command line", {})]
    else:
        nums = range(1, len(SWEEP) + 1) if a.sweep == "all" else [int(i) for i in a.sweep.split(",")]
        todo = [(f"{i}. {SWEEP[i - 1][0]}", SWEEP[i - 1][1]) for i in nums]
    out = open(a.json, "a") if a.json else None
    print(f"{'configuration':<58} {'graphs':>13} {'async':>5} {'blocks':>6} {'mbt':>5} {'kv pad':>6} "
          f"{'warm-up (s)':>11} {'run (s)':>8} {'tok/s':>8}", flush=True)
    recs = []
    for name, over in todo:
        c = dict(base, **over)
        try:
            rec = run_config(model, name, c, a, shape, dev_name)
        except Exception as e:  # one failing configuration does not end a sweep
            rec = {"peer": "transformers generate_batch", "config": name, "shape": shape, "device": dev_name,
                   "settings": c, "error": f"{type(e).__name__}: {e}"}
            print(f"{name:<58} failed: {rec['error']}", flush=True)
        else:
            print(f"{name:<58} {str(rec['use_cuda_graph']):>13} {str(rec['use_async_batching']):>5} "
                  f"{rec['num_blocks']:>6} {rec['max_batch_tokens']:>5} {rec['kv_padding']:>6} "
                  f"{rec['warmup_s']:>11.1f} {rec['seconds']:>8.2f} {rec['tok_s']:>8.0f}"
                  + (f"  matches generate: {rec['matches_generate']}" if "matches_generate" in rec else ""),
                  flush=True)
        release(model)
        recs.append(rec)
        if out:  # as it comes, so a run cut short keeps what it measured
            out.write(json.dumps(rec) + "\n")
            out.flush()
    ok = [r for r in recs if "tok_s" in r]
    if ok:
        best = max(ok, key=lambda r: r["tok_s"])
        print(f"best: {best['config']}: {best['tok_s']:.0f} output tok/s "
              f"({best['output_tokens']} tokens in {best['seconds']:.2f} s)")
        if out and len(recs) > 1:
            out.write(json.dumps({"peer": "transformers generate_batch", "sweep_best": best["config"],
                                  "tok_s": best["tok_s"], "of": [r["config"] for r in recs]}) + "\n")
    if out:
        out.close()
    if not ok or (a.cpu_smoke and any(r.get("matches_generate", "").split("/")[0] != str(a.requests) for r in ok)):
        sys.exit(1)


if __name__ == "__main__":
    main()
