#!/usr/bin/env python3
"""ref_logits.py: reference outputs of the shipped model from transformers, for checking
zipage's own forward pass and tokenizer on machines without PyTorch.

Writes OUT/reference_logits.json: for three ChatML token sequences (a short chat prompt, a
dev problem with its full reference trace, and an N=125 problem of ~3,370 tokens that reaches
deep into the 4,096 context), the token ids, the argmax of the next-token logits at every
position, and the full logits at ten positions; computed in float32 on the CPU (and the
largest difference to float32 on the GPU, when there is one; null without). Also the greedy continuation of the short prompt
(transformers generate, KV cache) and, with --bf16-eval, the test-split accuracy when the
model computes in bfloat16.

Usage: python3 tools/train/ref_logits.py MODEL_DIR OUT [--bf16-eval]
"""
import json
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "task"))
sys.path.insert(0, HERE)
import gen_task  # noqa: E402


def main(argv):
    mdir, out = argv[0], argv[1]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tok = AutoTokenizer.from_pretrained(mdir)
    cpu = AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32).eval()
    gpu = (AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32).cuda().eval()
           if torch.cuda.is_available() else None)
    with open(os.path.join(mdir, "dev.jsonl")) as f:
        dev0 = json.loads(f.readline())
    long = gen_task.generate("golden", 1, 1, 125, 125)[0]
    short_prompt = "a1=5 a2=17 a3=60\nAdd a3 down to a1."
    seqs = {
        "chat_short": tok.apply_chat_template([{"role": "user", "content": short_prompt}],
                                              add_generation_prompt=True, tokenize=False),
        "dev0_full": gen_task.chat_prefix(dev0["prompt"]) + dev0["trace"] + "<|im_end|>",
        "long_n125": gen_task.chat_prefix(long["prompt"]) + long["trace"] + "<|im_end|>",
    }
    res = {"model_dir": os.path.basename(os.path.normpath(mdir)), "dtype": "float32",
           "note": "logits = model(input_ids).logits[0] (no cache), CPU float32; "
                   "positions index the sequence; logits rounded to 6 decimals",
           "sequences": {}}
    with torch.no_grad():
        for name, text in seqs.items():
            ids = tok(text, add_special_tokens=False)["input_ids"]
            x = torch.tensor([ids])
            t0 = time.time()
            lc = cpu(input_ids=x).logits[0].float()
            tc = time.time() - t0
            lg = gpu(input_ids=x.cuda()).logits[0].float().cpu() if gpu else None
            L = len(ids)
            pos = sorted(set([0, 1, 2, 3, L // 4, L // 2, (3 * L) // 4, L - 3, L - 2, L - 1]))
            res["sequences"][name] = {
                "text": text, "ids": ids, "length": L,
                "argmax": lc.argmax(-1).tolist(),
                "positions": pos,
                "logits": [[round(v, 6) for v in lc[p].tolist()] for p in pos],
                "max_abs_diff_cpu_gpu": float((lc - lg).abs().max()) if gpu else None,
            }
            print("%s: %d tokens, cpu %.2f s, max |cpu-gpu| %s" % (
                name, L, tc, res["sequences"][name]["max_abs_diff_cpu_gpu"]), flush=True)
        x = torch.tensor([tok(seqs["chat_short"], add_special_tokens=False)["input_ids"]])
        g = cpu.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=80,
                         do_sample=False, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)[0, x.shape[1]:].tolist()
        res["greedy_chat_short"] = {"ids": g, "text": tok.decode(g, skip_special_tokens=False)}
        print("greedy chat_short:", repr(res["greedy_chat_short"]["text"]), flush=True)
    with open(os.path.join(out, "reference_logits.json"), "w") as f:
        json.dump(res, f, separators=(",", ":"))
    if "--bf16-eval" in argv:
        import eval as ev
        with open(os.path.join(mdir, "test.jsonl")) as f:
            test = [json.loads(l) for l in f]
        r = ev.evaluate(mdir, [("test_bf16", test)], torch.device("cuda"), 320,
                           torch.bfloat16, 1e9)
        for v in r.values():
            del v["rows"]
        with open(os.path.join(out, "bf16_eval.json"), "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
