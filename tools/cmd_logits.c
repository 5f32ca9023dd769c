/* zipage logits: prints the logits of every prompt position (one prefill on the CPU
 * reference path) as raw little-endian f32 [n][vocab] into a file. For parity checks
 * against other implementations (tools/hf_parity.py); not a serving path. */
#include "arena/err.h"
#include "drv/backend.h"
#include "engine/loader.h"
#include "engine/model.h"
#include "tools/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_logits(int argc, char **argv) {
    conf cf;
    int rc = cli_conf(&cf, &argc, argv);
    if (rc) return cli_fail("logits", rc);
    const char *ids_s = NULL, *out = NULL;
    cli c;
    cli_init(&c, "logits", argc, argv);
    for (const char *o; (o = cli_next(&c)) && !rc;) {
        if (!strcmp(o, "--prompt-ids")) rc = cli_str(&c, &ids_s);
        else if (!strcmp(o, "--out")) rc = cli_str(&c, &out);
        else rc = cli_unknown(&c, o);
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
            if (*s == ' ' || *s == ',') { s++; continue; }
            return cli_fail("logits", err_set(ZP_EINVAL, "--prompt-ids: bad id list"));
        }
        if (v < 0 || v >= mc.vocab || n >= cap)
            return cli_fail("logits", err_set(ZP_EINVAL, "--prompt-ids: id %ld out of range", v));
        ids[n++] = (int32_t)v;
        s = end;
    }
    if (n == 0) return cli_fail("logits", err_set(ZP_EINVAL, "--prompt-ids: no ids"));
    backend *be;
    int max_k = mc.hidden > mc.intermediate ? mc.hidden : mc.intermediate;
    if (mc.heads * mc.head_dim > max_k) max_k = mc.heads * mc.head_dim;
    int32_t bs = 16, nb = (n + bs - 1) / bs;
    model_dims d = {.max_tokens = n, .max_logits = n, .max_seqs = 1, .max_blocks = nb,
                    .block_size = bs, .num_blocks = nb, .kv_dtype = ZP_F32};
    model m;
    if ((rc = cpu_backend_create(&be, (int)cf.threads, max_k)) ||
        (rc = be->reserve(be, model_device_bytes(&mc, &mw, &d, be))) ||
        (rc = model_init(&m, &a, be, &mc, &mw, &d)))
        return cli_fail("logits", rc);
    for (int32_t i = 0; i < n; i++) {
        m.batch.token_ids[i] = ids[i];
        m.batch.positions[i] = m.batch.tok_kv_idx[i] = m.batch.slots[i] = m.batch.logit_rows[i] = i;
        m.batch.tok_seq[i] = 0;
    }
    for (int32_t b = 0; b < nb; b++) m.batch.block_tables[b] = b;
    m.batch.n_tokens = m.batch.n_logits = n;
    m.batch.n_seqs = 1;
    if ((rc = model_forward(&m))) return cli_fail("logits", rc);
    FILE *f = fopen(out, "wb");
    if (!f || fwrite(m.host_logits, sizeof(float) * (size_t)mc.vocab, (size_t)n, f) != (size_t)n ||
        fclose(f))
        return cli_fail("logits", err_set(ZP_EIO, "%s: cannot write", out));
    be->destroy(be);
    loader_close(&mw);
    arena_release(&a);
    return 0;
}
