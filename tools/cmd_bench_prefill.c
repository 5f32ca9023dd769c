/* zipage bench prefill: prompt throughput of the model's forward pass, one prompt of each length
 * prefilled in one step, in tokens/s and TFLOP/s, beside a peak figure.
 *
 *   zipage bench prefill --model DIR [--prompts 512,1024,2048,4096,8192] [--peak-tflops X]
 *                        [--weights] [--json FILE] [--backend cuda|cpu] [--set key=value ...]
 *
 * The harness of bench decode (tools/bench_model.h): random weights of DIR/config.json's shape
 * (no checkpoint read; --weights reads DIR's checkpoint, as in bench decode), the model placed for
 * one sequence whose prompt is the longest of
 * --prompts. Rows per step = max_num_batched_tokens: the longest prompt unless set, and a value
 * set must hold it (one step prefills a whole prompt). A prompt of n tokens (ids i * 7919 mod
 * vocab at positions 0..n-1, blocks 0, 1, ...) runs as one step: metadata upload, the forward
 * pass over all n rows (prompt rows: the GPU's prefill attention kernel), the final norm and the
 * LM head on the last row only (n_logits = 1: a prompt needs the logits of its last token), the
 * greedy id back; one warm-up, then the median of 5 steps.
 *
 * FLOPs of a prompt of n tokens (a multiply-add counts 2), L layers, hidden H, Hq query and Hkv
 * kv heads of D, intermediate I, vocab V:
 *   2 n L H ((Hq + 2 Hkv) D + Hq D + 3 I)   the linear layers: fused QKV, O, gate/up, down
 * + 2 V H                                   the LM head, on the last row only
 * + 2 * 2 L Hq D n (n + 1) / 2              attention: QK^T and PV over the causal triangle
 * Norms, RoPE, SwiGLU, the embedding, biases and the argmax are not counted. TFLOP/s = FLOPs /
 * the median step. Output: a table (prompt, step ms, tok/s, TFLOP/s and, with --peak-tflops X,
 * the fraction of X) and, when X is given and a prompt has 4,096 tokens, the target:
 * at least 70% of X, X being cuBLAS's FLOP-weighted TFLOP/s on the same model's GEMMs at M =
 * 4,096 (tools/peer_gemm.py). A benchmark target: missing it is not an error. --json FILE
 * appends one object per prompt.
 */
#include "arena/err.h"
#include "tools/bench_model.h"
#include "tools/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PRE_MAX_PROMPTS     16
#define PRE_TARGET_PROMPT   4096
#define PRE_TARGET_FRACTION 0.70

static int parse_prompts(const char *s, int32_t *n, int *count) {
    *count = 0;
    for (const char *p = s; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > (1 << 20) || *count == PRE_MAX_PROMPTS ||
            (*end && *end != ','))
            return err_set(ZP_EINVAL,
                           "--prompts '%s': want lengths N[,N...] in 1..1048576 (at most %d)", s,
                           PRE_MAX_PROMPTS);
        n[(*count)++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (!*count) return err_set(ZP_EINVAL, "--prompts '%s': no length", s);
    return 0;
}

/* FLOPs of one prompt of n tokens (the formula of the file comment). */
static double prompt_flops(const model_config *mc, int32_t n) {
    double L = mc->layers, dn = n;
    double linear = 2 * dn * L * (double)bench_layer_linear_params(mc);
    double head = 2.0 * mc->vocab * mc->hidden;
    double attention = 2.0 * L * mc->heads * mc->head_dim * dn * (dn + 1);
    return linear + head + attention;
}

/* The configuration: max_num_batched_tokens left 0 (unset) until the prompts are known. */
static int bench_conf(conf *cf, int *argc, char **argv) {
    conf_defaults(cf);
    cf->max_num_batched_tokens = 0;
    return conf_from_args(cf, argc, argv);
}

int bench_prefill(int argc, char **argv) {
    conf cf;
    int rc = bench_conf(&cf, &argc, argv);
    if (rc) return rc;
    const char *prompts = "512,1024,2048,4096,8192", *json = NULL;
    double peak = 0;
    bool weights = false;
    cli c;
    cli_init(&c, "bench prefill", argc, argv);
    for (const char *o; (o = cli_next(&c)) && !rc;) {
        if (!strcmp(o, "--prompts"))
            rc = cli_str(&c, &prompts);
        else if (!strcmp(o, "--peak-tflops"))
            rc = cli_float(&c, &peak, 1e-9, 1e6);
        else if (!strcmp(o, "--json"))
            rc = cli_str(&c, &json);
        else if (!strcmp(o, "--weights"))
            weights = true;
        else
            rc = cli_unknown(&c, o);
    }
    int32_t n[PRE_MAX_PROMPTS];
    int np = 0;
    if (rc || (rc = parse_prompts(prompts, n, &np))) return rc;
    if (!cf.model[0]) return err_set(ZP_EINVAL, "--model DIR (with a config.json) is required");
    int32_t longest = 0;
    for (int i = 0; i < np; i++)
        if (n[i] > longest) longest = n[i];
    if (!cf.max_num_batched_tokens) cf.max_num_batched_tokens = longest;
    if (cf.max_num_batched_tokens < longest)
        return err_set(ZP_EINVAL,
                       "key 'max_num_batched_tokens': %lld rows cannot hold the %d-token prompt "
                       "of --prompts (one step prefills a whole prompt)",
                       (long long)cf.max_num_batched_tokens, longest);
    int32_t bs = (int32_t)cf.block_size, blocks = (longest + bs - 1) / bs;
    bench_bounds bounds = {.max_tokens = (int32_t)cf.max_num_batched_tokens,
                           .max_seqs = 1,
                           .max_blocks = blocks,
                           .num_blocks = blocks};
    FILE *jf = json ? fopen(json, "a") : NULL;
    if (json && !jf) return err_set(ZP_EIO, "--json %s: cannot open for appending", json);
    bench_model bm;
    if ((rc = bench_model_open(&bm, &cf, "bench prefill", &bounds, weights))) {
        if (jf) fclose(jf);
        return rc;
    }
    const model_config *mc = &bm.mc;
    fprintf(stderr,
            "bench prefill: %zu linear-layer parameters per token (LM head %zu, last row only), "
            "max_num_batched_tokens %lld, block_size %d\n",
            (size_t)mc->layers * bench_layer_linear_params(mc),
            (size_t)mc->vocab * (size_t)mc->hidden, (long long)cf.max_num_batched_tokens, bs);
    printf("%7s %10s %10s %10s%s\n", "prompt", "step (ms)", "tok/s", "TFLOP/s",
           peak > 0 ? "  of peak" : "");
    double target = -1;
    for (int i = 0; i < np && !rc; i++) {
        double s;
        if ((rc = bench_prefill_step(&bm, n[i], &s))) break;
        double flops = prompt_flops(mc, n[i]), tflops = flops / s / 1e12;
        double of_peak = peak > 0 ? tflops / peak : 0;
        if (n[i] == PRE_TARGET_PROMPT) target = of_peak;
        printf("%7d %10.3f %10.0f %10.4g", n[i], s * 1e3, n[i] / s, tflops);
        if (peak > 0) printf(" %8.1f%%", 100 * of_peak);
        printf("\n");
        if (!jf) continue;
        fprintf(jf,
                "{\"prompt\": %d, \"step_ms\": %.4f, \"tok_s\": %.1f, \"gflop\": %.6g, "
                "\"tflops\": %.6g, ",
                n[i], s * 1e3, n[i] / s, flops / 1e9, tflops);
        if (peak > 0) fprintf(jf, "\"peak_tflops\": %.6g, \"of_peak\": %.4f, ", peak, of_peak);
        fprintf(jf, "\"backend\": \"%s\", \"block_size\": %d, \"max_num_batched_tokens\": %lld}\n",
                bm.be->name, bs, (long long)cf.max_num_batched_tokens);
    }
    if (!rc && peak > 0 && target >= 0)
        printf("%d-token prompt: %.1f%% of --peak-tflops %.6g (target >= %.0f%%)\n",
               PRE_TARGET_PROMPT, 100 * target, peak, 100 * PRE_TARGET_FRACTION);
    if (jf) fclose(jf);
    bench_model_close(&bm);
    return rc;
}
