/* fuzz_config: config.json and generation_config.json loading (engine/loader.c,
 * loader_config). The input is config.json, optionally followed by a NUL byte and
 * generation_config.json (absent when the input holds no NUL).
 *
 * Oracle beyond "no crash, no leak, no hang": loading fails with a negative code and a
 * message, or the config satisfies what the engine relies on (positive sizes, even head_dim,
 * heads a multiple of kv_heads, token ids inside the vocabulary, llama3 rope factors ordered).
 */
#include "arena/err.h"
#include "engine/loader.h"
#include "tests/fuzz/fuzz_util.h"

static void check_config(const model_config *c) {
    bool ok = c->hidden > 0 && c->layers > 0 && c->heads > 0 && c->kv_heads > 0 &&
              c->heads % c->kv_heads == 0 && c->head_dim > 0 && c->head_dim % 2 == 0 &&
              c->intermediate > 0 && c->vocab > 0 && c->max_pos > 0 && c->rope_theta > 0 &&
              c->rms_eps > 0 && c->n_eos >= 0 && c->n_eos <= LOADER_MAX_EOS && c->bos_id >= -1 &&
              c->bos_id < c->vocab &&
              (c->rope != ROPE_LLAMA3 || c->rope_high_freq_factor > c->rope_low_freq_factor);
    for (int i = 0; i < c->n_eos; i++)
        ok = ok && c->eos_ids[i] >= 0 && c->eos_ids[i] < c->vocab;
    if (!ok) {
        fprintf(stderr, "loader_config accepted an inconsistent config\n");
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static arena A;
    if (!A.base && arena_init(&A, "fuzz", 64u << 20)) abort();
    const uint8_t *p;
    size_t n;
    fuzz_split(data, size, 0, &p, &n);
    fuzz_write("config.json", p, n);
    if (fuzz_split(data, size, 1, &p, &n))
        fuzz_write("generation_config.json", p, n);
    else
        fuzz_remove("generation_config.json");
    err_set(0, "%s", "");
    model_config c;
    int rc = loader_config(&c, &A, fuzz_dir());
    if (rc) {
        if (rc > 0 || !err_msg()[0]) abort(); /* an error always has a code and a message */
    } else {
        check_config(&c);
    }
    /* loader_config uses only temporary memory and gives it all back. */
    if (arena_used(&A) != 0) abort();
    return 0;
}
