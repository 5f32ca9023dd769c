/* zipage bench decode: decode throughput of the model's forward pass at B requests x context L,
 * beside the memory roofline (../shared/spec/cuda-backend.md section 4: every step reads all
 * weights once and every request's KV once, at the measured copy bandwidth).
 *
 *   zipage bench decode --model DIR [--points 1x2048,64x2048,64x8192,256x2048] [--steps N]
 *                       [--bw GBPS] [--weights] [--prefill N] [--json FILE] [--backend cuda|cpu]
 *                       [--set block_size=N]
 *
 * Only DIR/config.json is read: the weights are random (loader_dummy_weights: one buffer of small
 * bf16 values that every tensor shares), so any Hugging Face config benchmarks without its
 * checkpoint. --weights reads DIR's checkpoint instead, each tensor in its own memory: on the CPU
 * the shared buffer keeps every layer's weights in cache, so only --weights times their traffic.
 * The roofline's bandwidth: --bw GBPS, else measured at the start of the run and printed
 * (bench_roofline_bw): on the CPU backend the host's read bandwidth with the backend's thread
 * count, on a GPU its device-to-device copy bandwidth (bytes read plus written per second, the
 * measure of the PyTorch peers). One model is planned for the largest point (tools/bench_model.h, the harness
 * bench prefill shares); each point places B requests at context L (their KV cache holds whatever
 * the arena held: the cost of attention does not depend on the values) and times `steps` decode
 * steps after 3 of warm-up, each a full engine step of the model: metadata upload, forward, greedy
 * argmax on the backend, ids back. Reported: the median step, output tokens per second (B /
 * step), the roofline's and the fraction of it reached (on the CPU with the measured bandwidth:
 * the fraction of the machine's memory bandwidth the step reaches). --prefill N also times one
 * step prefilling an N-token prompt (median of 5).
 */
#include "arena/err.h"
#include "tools/bench_model.h"
#include "tools/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEC_MAX_POINTS 16

static int parse_points(const char *s, int32_t *b, int32_t *l, int *n) {
    *n = 0;
    while (*s) {
        char *end;
        long bv = strtol(s, &end, 10);
        if (end == s || *end != 'x' || bv < 1 || bv > 65536) break;
        long lv = strtol(end + 1, &end, 10);
        if (lv < 1 || lv > (1 << 24) || *n == DEC_MAX_POINTS) break;
        b[*n] = (int32_t)bv, l[*n] = (int32_t)lv, (*n)++;
        if (!*end) return 0;
        if (*end != ',') break;
        s = end + 1;
    }
    return err_set(ZP_EINVAL, "--points '%s': want BxL[,BxL...] (at most %d points)", s,
                   DEC_MAX_POINTS);
}

int bench_decode(int argc, char **argv) {
    conf cf;
    int rc = cli_conf(&cf, &argc, argv);
    if (rc) return rc;
    const char *points = "1x2048,64x2048,64x8192,256x2048", *json = NULL;
    int64_t steps = 20, prefill = 0;
    double bw = 0;
    bool weights = false;
    cli c;
    cli_init(&c, "bench decode", argc, argv);
    for (const char *o; (o = cli_next(&c)) && !rc;) {
        if (!strcmp(o, "--points"))
            rc = cli_str(&c, &points);
        else if (!strcmp(o, "--steps"))
            rc = cli_int(&c, &steps, 1, 100000);
        else if (!strcmp(o, "--bw"))
            rc = cli_float(&c, &bw, 1, 1e6);
        else if (!strcmp(o, "--json"))
            rc = cli_str(&c, &json);
        else if (!strcmp(o, "--weights"))
            weights = true;
        else if (!strcmp(o, "--prefill"))
            rc = cli_int(&c, &prefill, 0, 1 << 20);
        else
            rc = cli_unknown(&c, o);
    }
    int32_t pb[DEC_MAX_POINTS], pl[DEC_MAX_POINTS];
    int np = 0;
    if (rc || (rc = parse_points(points, pb, pl, &np))) return rc;
    if (!cf.model[0]) return err_set(ZP_EINVAL, "--model DIR (with a config.json) is required");
    int32_t bs = (int32_t)cf.block_size, max_b = 0, max_blocks = 0, max_tok_blocks = 0;
    for (int i = 0; i < np; i++) {
        int32_t per = (pl[i] + (int32_t)steps + 3 + bs - 1) / bs;
        if (pb[i] > max_b) max_b = pb[i];
        if (per > max_blocks) max_blocks = per;
        if (pb[i] * per > max_tok_blocks) max_tok_blocks = pb[i] * per;
    }
    int32_t pre_blocks = (int32_t)((prefill + bs - 1) / bs), max_rows = max_b;
    if (pre_blocks > max_blocks) max_blocks = pre_blocks;
    if (pre_blocks > max_tok_blocks) max_tok_blocks = pre_blocks;
    if (prefill > max_rows) max_rows = (int32_t)prefill;
    bench_model bm;
    bench_bounds bounds = {.max_tokens = max_rows,
                           .max_seqs = max_b,
                           .max_blocks = max_blocks,
                           .num_blocks = max_tok_blocks,
                           .copy_bw = bw == 0};
    if ((rc = bench_model_open(&bm, &cf, "bench decode", &bounds, weights))) return rc;
    const model_config *mc = &bm.mc;
    model *m = bm.m;
    size_t weight_bytes = bench_step_weight_bytes(&bm);
    if (bw == 0 && (rc = bench_roofline_bw(&bm, &cf, &bw))) {
        bench_model_close(&bm);
        return rc;
    }
    size_t kv_token = model_block_bytes(mc, 1, bm.be->act_dtype, false);
    FILE *jf = json ? fopen(json, "w") : NULL;
    if (json && !jf) {
        bench_model_close(&bm);
        return err_set(ZP_EIO, "%s: cannot create", json);
    }
    printf("%6s %7s %10s %10s %14s %8s\n", "batch", "context", "step (ms)", "tok/s",
           "roofline tok/s", "of roof");
    double *times = arena_alloc(&bm.a, sizeof(double) * (size_t)steps, 8, "times");
    if (!times) rc = ZP_ENOMEM;
    model_batch *b = &m->batch;
    for (int p = 0; p < np && !rc; p++) {
        int32_t B = pb[p], L = pl[p], per = (L + (int32_t)steps + 3 + bs - 1) / bs;
        for (int32_t s = 0; s < B; s++)
            for (int32_t j = 0; j < per; j++)
                b->block_tables[(size_t)s * (size_t)max_blocks + (size_t)j] = s * per + j;
        for (int64_t it = -3; it < steps && !rc; it++) {
            int32_t ci = L - 1 + (int32_t)(it + 3);
            for (int32_t s = 0; s < B; s++) {
                b->token_ids[s] = (s * 7919 + ci) % mc->vocab;
                b->positions[s] = b->tok_kv_idx[s] = ci;
                b->tok_seq[s] = s;
                b->tok_qslot[s] = -1;
                b->tok_prompt[s] = 0;
                b->slots[s] = (s * per + ci / bs) * bs + ci % bs;
                b->logit_rows[s] = s;
            }
            b->n_tokens = b->n_seqs = b->n_logits = B;
            b->want_ids = true;
            bench_stage_greedy(b, B);
            double s0 = bench_now_s();
            rc = model_forward(m);
            if (it >= 0) times[it] = bench_now_s() - s0;
            if (!rc) rc = bench_check_ids(m, B);
        }
        if (rc) break;
        double med = bench_median(times, (int)steps), tps = B / med;
        double roof_s = (double)(weight_bytes + (size_t)B * (size_t)L * kv_token) / (bw * 1e9);
        double roof = B / roof_s;
        printf("%6d %7d %10.3f %10.0f %14.0f %7.1f%%\n", B, L, med * 1e3, tps, roof,
               100 * tps / roof);
        if (jf)
            fprintf(jf,
                    "{\"batch\": %d, \"context\": %d, \"step_ms\": %.4f, \"tok_s\": %.1f, "
                    "\"roofline_tok_s\": %.1f, \"bw_gbps\": %.1f, \"backend\": \"%s\", "
                    "\"steps\": %lld}\n",
                    B, L, med * 1e3, tps, roof, bw, bm.be->name, (long long)steps);
    }
    double pre_s;
    if (!rc && prefill > 0 && /* one sequence's prompt in one step: the GEMMs at M = prefill */
        !(rc = bench_prefill_step(&bm, (int32_t)prefill, &pre_s))) {
        printf("prefill of %d tokens: %.3f ms, %.0f tok/s\n", (int32_t)prefill, pre_s * 1e3,
               prefill / pre_s);
        if (jf)
            fprintf(jf,
                    "{\"prefill\": %d, \"step_ms\": %.4f, \"tok_s\": %.1f, \"backend\": \"%s\"}\n",
                    (int32_t)prefill, pre_s * 1e3, prefill / pre_s, bm.be->name);
    }
    if (jf) fclose(jf);
    bench_model_close(&bm);
    return rc;
}
