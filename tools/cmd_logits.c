/* zipage logits: writes the logits of every prompt position (one prefill, on the configured
 * backend: --backend cpu|cuda|auto) as raw little-endian f32 [n][vocab] into a file, and the
 * backend chosen on stderr. --prefill N runs the first N ids as one prefill step and the rest
 * as decode steps of one token each. For parity checks against other implementations
 * (tools/hf_parity.py, tools/gpu_parity.py); not a serving path. */
#include "arena/err.h"
#include "drv/backend.h"
#include "engine/engine.h"
#include "engine/loader.h"
#include "engine/model.h"
#include "tools/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first `prefill` ids in one step, then one id per step (decode steps, as the engine runs
 * them); every position's logits go to the file in order. */
static int write_logits(model *m, const int32_t *ids, int32_t n, int64_t prefill, const char *out) {
    if (!prefill || prefill > n) prefill = n;
    FILE *f = fopen(out, "wb");
    if (!f) return err_set(ZP_EIO, "%s: cannot create", out);
    size_t row = sizeof(float) * (size_t)m->cfg.vocab;
    int rc = 0;
    for (int32_t b = 0; b < m->dims.max_blocks; b++)
        m->batch.block_tables[b] = b;
    for (int32_t done = 0; done < n && !rc;) {
        int32_t take = done ? 1 : (int32_t)prefill;
        for (int32_t j = 0; j < take; j++) {
            int32_t i = done + j;
            m->batch.token_ids[j] = ids[i];
            m->batch.positions[j] = m->batch.tok_kv_idx[j] = m->batch.slots[j] = i;
            m->batch.logit_rows[j] = j;
            m->batch.tok_seq[j] = 0;
            m->batch.tok_prompt[j] = i < prefill; /* the prompt, then teacher-forced decode */
        }
        m->batch.n_tokens = m->batch.n_logits = take;
        m->batch.n_seqs = 1;
        if (!(rc = model_forward(m)) &&
            fwrite(m->host_logits, row, (size_t)take, f) != (size_t)take)
            rc = err_set(ZP_EIO, "%s: cannot write", out);
        done += take;
    }
    if (fclose(f) && !rc) rc = err_set(ZP_EIO, "%s: cannot write", out);
    return rc;
}

int cmd_logits(int argc, char **argv) {
    conf cf;
    int rc = cli_conf(&cf, &argc, argv);
    if (rc) return cli_fail("logits", rc);
    const char *ids_s = NULL, *out = NULL;
    int64_t prefill = 0;
    cli c;
    cli_init(&c, "logits", argc, argv);
    for (const char *o; (o = cli_next(&c)) && !rc;) {
        if (!strcmp(o, "--prompt-ids"))
            rc = cli_str(&c, &ids_s);
        else if (!strcmp(o, "--out"))
            rc = cli_str(&c, &out);
        else if (!strcmp(o, "--prefill"))
            rc = cli_int(&c, &prefill, 1, 1 << 30);
        else
            rc = cli_unknown(&c, o);
    }
    if (!rc && (!ids_s || !out)) rc = err_set(ZP_EINVAL, "--prompt-ids and --out are required");
    if (rc) return cli_fail("logits", rc);
    arena a;
    model_config mc;
    model_weights mw;
    if ((rc = arena_init(&a, "host", (size_t)cf.host_arena_mb << 20)) ||
        (rc = loader_config(&mc, &a, cf.model)) || (rc = loader_weights(&mw, &mc, &a, cf.model)))
        return cli_fail("logits", rc);
    int32_t n = 0, cap = 65536;
    int32_t *ids = arena_alloc(&a, sizeof(int32_t) * (size_t)cap, 4, "ids");
    for (const char *s = ids_s; ids && *s;) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) {
            if (*s == ' ' || *s == ',') {
                s++;
                continue;
            }
            return cli_fail("logits", err_set(ZP_EINVAL, "--prompt-ids: bad id list"));
        }
        if (v < 0 || v >= mc.vocab || n >= cap)
            return cli_fail("logits", err_set(ZP_EINVAL, "--prompt-ids: id %ld out of range", v));
        ids[n++] = (int32_t)v;
        s = end;
    }
    if (n == 0) return cli_fail("logits", err_set(ZP_EINVAL, "--prompt-ids: no ids"));
    backend *be;
    int32_t bs = 16, nb = (n + bs - 1) / bs;
    be_shape shape;
    engine_be_shape(&mc, bs, n, n, n, &shape);
    be_config bc;
    engine_be_config(&cf, &bc);
    char why[320];
    if ((rc = engine_check_tp(&cf, "logits")) ||
        (rc = backend_create(&be, &bc, &shape, why, sizeof why)))
        return cli_fail("logits", rc);
    fprintf(stderr, "zipage logits: backend %s\n", why);
    model_dims d = {.max_tokens = n,
                    .max_logits = n,
                    .max_seqs = 1,
                    .max_blocks = nb,
                    .block_size = bs,
                    .num_blocks = nb,
                    .kv_dtype = be->act_dtype};
    model m;
    if (!(rc = be->reserve(be, model_device_bytes(&mc, &mw, &d, be),
                           model_host_bytes(&mc, &d, be))) &&
        !(rc = model_init(&m, &a, be, &mc, &mw, &d)))
        rc = write_logits(&m, ids, n, prefill, out);
    be->destroy(be);
    loader_close(&mw);
    arena_release(&a);
    return rc ? cli_fail("logits", rc) : 0;
}
