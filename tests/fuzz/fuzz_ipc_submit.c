/* fuzz_ipc_submit: libFuzzer target for the engine's handling of one submission record and
 * its payload, through ipc_server_validate_sub() (the validation and translation that
 * take_request runs on every REQUEST record), on a started server whose text hooks are the
 * echo engine's.
 *
 * Input: the first ZPIPC_SUB_BYTES bytes are the record (zero-padded when shorter); the rest
 * is written at the start of the payload area (FUZZ_PAYLOAD bytes, zero elsewhere).
 * Checked on every input: an error is a ZIPAGE_E_* code with a non-empty message that fits
 * a FINAL record; an accepted request has 1..ids_cap prompt ids, every prompt and stop id
 * inside the published vocabulary, finite sampling floats, n_stop in range and
 * max_tokens >= 1. A violation aborts (a finding).
 *
 * Memory: one server (object /dev/shm/zpfuzz-PID, removed at exit) and its arena, made by
 * the first call. Single-threaded, as the server is.
 */
#include "arena/arena.h"
#include "ipc/echo.h"
#include "ipc/proto.h"
#include "ipc/server.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FUZZ_PAYLOAD 4096 /* payload_bytes of the one client slot */
#define FUZZ_VOCAB   256  /* the echo engine's byte vocabulary */

static ipc_server *srv;
static arena ar;
static uint8_t payload[FUZZ_PAYLOAD];
static size_t payload_used; /* bytes the previous input wrote (zeroed before the next) */

static void teardown(void) {
    ipc_server_destroy(srv);
    arena_release(&ar);
}

static void setup(void) {
    ipc_server_config cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.name, sizeof cfg.name, "zpfuzz-%d", (int)getpid());
    cfg.mode = 0600;
    cfg.max_clients = 1;
    cfg.max_inflight = 4;
    cfg.payload_bytes = FUZZ_PAYLOAD;
    echo_config ec = {.max_requests = 4, .max_echo = 4096, .step_us = 0};
    echo *e;
    ipc_engine_ops ops;
    if (arena_init(&ar, "fuzz", 64u << 20) || ipc_server_create(&srv, &ar, &cfg) ||
        echo_create(&e, &ar, &ec, ipc_server_on_event, srv)) {
        fprintf(stderr, "fuzz_ipc_submit: set-up failed\n");
        abort();
    }
    echo_ops(e, &ops);
    ipc_model_info info = {"echo", "echo", FUZZ_VOCAB, ec.max_echo, ec.max_requests, 1024, 16};
    if (ipc_server_start(srv, &ar, &ops, &info)) abort();
    atexit(teardown);
}

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fuzz_ipc_submit: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!srv) setup();
    zpipc_sub q;
    memset(&q, 0, sizeof q);
    memcpy(&q, data, size < sizeof q ? size : sizeof q);
    size_t plen = size > sizeof q ? size - sizeof q : 0;
    if (plen > FUZZ_PAYLOAD) plen = FUZZ_PAYLOAD;
    memset(payload, 0, payload_used);
    memcpy(payload, data + sizeof q, plen);
    payload_used = plen;

    engine_request er;
    char msg[ZPIPC_CQE_TEXT + 1];
    memset(msg, 0, sizeof msg);
    int code = ipc_server_validate_sub(srv, &q, payload, &er, msg, sizeof msg);
    if (code) {
        check(code <= ZIPAGE_E_INVALID && code >= ZIPAGE_E_STATE, "error code out of range");
        check(msg[0] != 0 && memchr(msg, 0, sizeof msg) != NULL, "error without a message");
        return 0;
    }
    check(er.n_prompt >= 1 && er.prompt_ids != NULL, "accepted an empty prompt");
    check(q.kind != ZIPAGE_PROMPT_IDS || (uint64_t)er.n_prompt * 4 == q.payload_len,
          "ids prompt length differs from the payload");
    for (int32_t i = 0; i < er.n_prompt; i++)
        check(er.prompt_ids[i] >= 0 && er.prompt_ids[i] < FUZZ_VOCAB, "prompt id outside vocab");
    check(er.sp.n_stop >= 0 && er.sp.n_stop <= ZIPAGE_MAX_STOP, "n_stop out of range");
    for (int32_t i = 0; i < er.sp.n_stop; i++)
        check(er.sp.stop_ids[i] >= 0 && er.sp.stop_ids[i] < FUZZ_VOCAB, "stop id outside vocab");
    check(isfinite(er.sp.temperature) && isfinite(er.sp.top_p) && isfinite(er.sp.min_p) &&
              isfinite(er.sp.repetition_penalty) && isfinite(er.sp.presence_penalty) &&
              isfinite(er.sp.frequency_penalty),
          "accepted a non-finite sampling parameter");
    check(er.sp.max_tokens >= 1, "accepted max_tokens < 1");
    check(er.compress >= -1 && er.compress <= 1 && er.kv_budget_blocks >= 0,
          "accepted compress or kv_budget_blocks out of range");
    return 0;
}
