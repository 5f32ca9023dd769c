/* echo: the model-less engine behind `zipage serve --echo` (see echo.h).
 * Requests live in a fixed table; running ones are kept in a dense array (order of arrival
 * is not preserved across removals, which engine.h does not promise either). */
#include "ipc/echo.h"

#include "arena/err.h"
#include "ipc/ring.h"

#include <string.h>
#include <time.h>

#define ECHO_BLOCK 16

typedef struct echo_req {
    uint64_t user_tag;
    int32_t n_prompt, n_emit, pos;
    uint32_t gen;
    uint8_t in_use, cancelled;
} echo_req;

struct echo {
    echo_config cfg;
    engine_output_fn fn;
    void *user;
    echo_req *reqs;
    int32_t *ids;    /* max_echo per request */
    int32_t *active; /* indices of running requests */
    int32_t nactive;
    int32_t *free_list;
    int32_t nfree;
    int64_t steps, prompt_tokens, completion_tokens;
    double busy_seconds;
};

int echo_create(echo **out, arena *a, const echo_config *cfg, engine_output_fn fn, void *user) {
    if (cfg->max_requests < 1 || cfg->max_echo < 1 || cfg->step_us < 0)
        return err_set(ZP_EINVAL, "echo: max_requests, max_echo must be >= 1, step_us >= 0");
    echo *e = arena_alloc(a, sizeof *e, 64, "echo engine");
    if (!e) return ZP_ENOMEM;
    e->cfg = *cfg;
    e->fn = fn;
    e->user = user;
    size_t n = (size_t)cfg->max_requests;
    e->reqs = arena_alloc(a, sizeof(echo_req) * n, 64, "echo requests");
    e->ids = arena_alloc(a, sizeof(int32_t) * n * (size_t)cfg->max_echo, 64, "echo ids");
    e->active = arena_alloc(a, sizeof(int32_t) * n, 64, "echo active list");
    e->free_list = arena_alloc(a, sizeof(int32_t) * n, 64, "echo free list");
    if (!e->reqs || !e->ids || !e->active || !e->free_list) return ZP_ENOMEM;
    for (size_t i = 0; i < n; i++)
        e->free_list[i] = (int32_t)(n - 1 - i);
    e->nfree = (int32_t)n;
    *out = e;
    return 0;
}

static int echo_submit(void *ctx, const engine_request *r, uint64_t *req_id) {
    echo *e = ctx;
    if (r->n_prompt < 1) return err_set(ZP_EINVAL, "echo: empty prompt");
    if (r->sp.max_tokens < 1)
        return err_set(ZP_EINVAL, "max_tokens: %d must be >= 1", r->sp.max_tokens);
    int32_t n_emit = r->n_prompt < r->sp.max_tokens ? r->n_prompt : r->sp.max_tokens;
    if (n_emit > e->cfg.max_echo)
        return err_set(ZP_ELIMIT, "echo: %d tokens to echo, at most %d", n_emit, e->cfg.max_echo);
    for (int32_t i = 0; i < r->n_prompt; i++)
        if (r->prompt_ids[i] < 0 || r->prompt_ids[i] > 255)
            return err_set(ZP_EINVAL, "echo: prompt id %d outside the 256-id vocabulary",
                           r->prompt_ids[i]);
    if (!e->nfree) return err_set(ZP_EBUSY, "echo: %d requests running", e->cfg.max_requests);
    int32_t idx = e->free_list[--e->nfree];
    echo_req *q = &e->reqs[idx];
    q->user_tag = r->user_tag;
    q->n_prompt = r->n_prompt;
    q->n_emit = n_emit;
    q->pos = 0;
    q->gen++;
    q->in_use = 1;
    q->cancelled = 0;
    memcpy(e->ids + (size_t)idx * e->cfg.max_echo, r->prompt_ids, sizeof(int32_t) * n_emit);
    e->active[e->nactive++] = idx;
    e->prompt_tokens += r->n_prompt;
    *req_id = ((uint64_t)q->gen << 32) | (uint32_t)idx;
    return 0;
}

static int echo_cancel(void *ctx, uint64_t req_id) {
    echo *e = ctx;
    uint32_t idx = (uint32_t)req_id;
    if (idx >= (uint32_t)e->cfg.max_requests || !e->reqs[idx].in_use ||
        e->reqs[idx].gen != (uint32_t)(req_id >> 32))
        return err_set(ZP_ENOTFOUND, "echo: no request %llu", (unsigned long long)req_id);
    e->reqs[idx].cancelled = 1;
    return 0;
}

static void emit(echo *e, echo_req *q, int32_t token, engine_finish fin) {
    engine_event ev = {0};
    ev.req_id = ((uint64_t)q->gen << 32) | (uint32_t)(q - e->reqs);
    ev.user_tag = q->user_tag;
    ev.token = token;
    ev.logprob = fin == ENGINE_RUNNING ? -0.125f * (float)(q->pos % 8) : 0.0f;
    ev.finish = fin;
    ev.usage.prompt_tokens = q->n_prompt;
    ev.usage.completion_tokens = q->pos;
    ev.usage.kv_blocks_peak = (q->n_prompt + q->pos + ECHO_BLOCK - 1) / ECHO_BLOCK;
    e->fn(e->user, &ev);
}

static int echo_step(void *ctx) {
    echo *e = ctx;
    if (!e->nactive) return 0;
    uint64_t t0 = ring_now_ns();
    if (e->cfg.step_us) {
        struct timespec ts = {e->cfg.step_us / 1000000, (long)(e->cfg.step_us % 1000000) * 1000};
        nanosleep(&ts, NULL);
    }
    e->steps++;
    for (int32_t i = 0; i < e->nactive;) {
        int32_t idx = e->active[i];
        echo_req *q = &e->reqs[idx];
        engine_finish fin = ENGINE_RUNNING;
        int32_t last = -1;
        if (q->cancelled) {
            fin = ENGINE_FINISH_CANCELLED;
        } else {
            last = e->ids[(size_t)idx * e->cfg.max_echo + q->pos];
            q->pos++;
            e->completion_tokens++;
            emit(e, q, last, ENGINE_RUNNING); /* may cancel q (ring overrun) */
            if (q->pos == q->n_emit)
                fin = q->n_emit < q->n_prompt ? ENGINE_FINISH_LENGTH : ENGINE_FINISH_STOP;
        }
        if (fin == ENGINE_RUNNING) {
            i++;
            continue;
        }
        emit(e, q, last, fin);
        q->in_use = 0;
        e->free_list[e->nfree++] = idx;
        e->active[i] = e->active[--e->nactive];
    }
    e->busy_seconds += (double)(ring_now_ns() - t0) * 1e-9;
    return e->nactive;
}

static void echo_stats(void *ctx, engine_stats *s) {
    echo *e = ctx;
    memset(s, 0, sizeof *s);
    s->running = e->nactive;
    s->max_concurrency = e->cfg.max_requests;
    int64_t per = (e->cfg.max_echo * 2 + ECHO_BLOCK - 1) / ECHO_BLOCK;
    s->blocks_total = (int32_t)(per * e->cfg.max_requests);
    for (int32_t i = 0; i < e->nactive; i++) {
        const echo_req *q = &e->reqs[e->active[i]];
        s->blocks_used += (q->n_prompt + q->pos + ECHO_BLOCK - 1) / ECHO_BLOCK;
    }
    s->blocks_free = s->blocks_total - s->blocks_used;
    s->steps = e->steps;
    s->prompt_tokens = e->prompt_tokens;
    s->completion_tokens = e->completion_tokens;
    s->busy_seconds = e->busy_seconds;
    s->tokens_per_s = e->busy_seconds > 0 ? (double)e->completion_tokens / e->busy_seconds : 0;
}

static int echo_encode(void *ctx, const char *text, size_t len, int32_t *ids, size_t cap,
                       size_t *n) {
    if (len > cap) return err_set(ZP_ELIMIT, "echo: %zu prompt bytes, at most %zu", len, cap);
    for (size_t i = 0; i < len; i++)
        ids[i] = (uint8_t)text[i];
    *n = len;
    return 0;
}

static int echo_render_chat(void *ctx, const char *messages_json, size_t len, bool enable_thinking,
                            char *out, size_t cap, size_t *n) {
    if (len > cap) return err_set(ZP_ELIMIT, "echo: %zu bytes of messages, at most %zu", len, cap);
    memcpy(out, messages_json, len);
    *n = len;
    return 0;
}

static int echo_detok(void *ctx, void *state, int32_t token, char *out, size_t cap, size_t *n) {
    if (cap < 1) return err_set(ZP_ELIMIT, "echo: no room for a piece");
    out[0] = (char)(uint8_t)token;
    *n = 1;
    return 0;
}

void echo_ops(echo *e, ipc_engine_ops *ops) {
    memset(ops, 0, sizeof *ops);
    ops->ctx = e;
    ops->submit = echo_submit;
    ops->cancel = echo_cancel;
    ops->step = echo_step;
    ops->stats = echo_stats;
    ops->encode = echo_encode;
    ops->render_chat = echo_render_chat;
    ops->detok = echo_detok;
    ops->detok_state_size = 0;
}
