/* server: the engine side of the shared-memory IPC (protocol: ipc/proto.h, docs/IPC.md).
 *
 * Life cycle (one thread, the engine's scheduler thread, does everything):
 *   ipc_server_create()  creates /dev/shm/NAME (O_EXCL; a stale object of a dead engine of
 *                        this uid is replaced, another uid's object never), sized, reserved
 *                        and permissioned from the [ipc] keys; state STARTING.
 *   ipc_server_start()   takes the engine's ops table, carves the request table and scratch
 *                        from the arena, publishes the model facts and state READY.
 *   (caller freezes the arena: nothing below allocates)
 *   ipc_server_run()     polls the submission rings, calls ops->step while requests run,
 *                        sleeps on a futex when idle, checks client liveness every 10 ms,
 *                        until stopped (ipc_server_signal) and drained.
 *   ipc_server_destroy() unmaps and unlinks the object.
 *
 * The engine decouples through ipc_engine_ops, and its events come back through
 * ipc_server_on_event() (an engine_output_fn with user = the server).
 *
 * Shared memory is hostile input: every record and payload is copied into server memory
 * before it is validated; the server keeps its own copy of every index and size and never
 * reads a value twice. A bad request fails with an error record; a client that corrupts
 * its indices is quarantined (its requests cancelled, its slot held until its process dies).
 * The header's layout, model facts and state are re-published from the server's copy on
 * every housekeeping pass; a slot claim is honoured only for a living process that has the
 * object mapped (docs/IPC.md); the object's pages are reserved at create, so
 * a full /dev/shm fails start-up instead of killing the engine later.
 */
#ifndef ZP_IPC_SERVER_H
#define ZP_IPC_SERVER_H

#include "arena/arena.h"
#include "engine/conf.h"
#include "engine/engine.h"
#include "ipc/proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ipc_engine_ops {
    void *ctx;
    /* engine_submit / engine_cancel / engine_step / engine_get_stats semantics (engine.h) */
    int (*submit)(void *ctx, const engine_request *r, uint64_t *req_id);
    int (*cancel)(void *ctx, uint64_t req_id);
    int (*step)(void *ctx);
    void (*stats)(void *ctx, engine_stats *s);
    /* Text hooks. encode: text -> ids (ZP_ELIMIT when more than cap). render_chat: a JSON
     * array of messages -> the prompt text of the model's chat template. detok: the next
     * token's text piece given a per-request state of detok_state_size bytes that the
     * server zeroes at submit (streaming: a piece may be empty until bytes complete).
     * detok_flush: the text still held in that state when the request ends (an incomplete
     * UTF-8 sequence becomes U+FFFD, as offline decoding does); NULL when detok holds
     * nothing back. */
    int (*encode)(void *ctx, const char *text, size_t len, int32_t *ids, size_t cap, size_t *n);
    int (*render_chat)(void *ctx, const char *messages_json, size_t len, bool enable_thinking,
                       char *out, size_t cap, size_t *n);
    int (*detok)(void *ctx, void *state, int32_t token, char *out, size_t cap, size_t *n);
    int (*detok_flush)(void *ctx, void *state, char *out, size_t cap, size_t *n);
    size_t detok_state_size;
} ipc_engine_ops;

/* Facts published in the header for clients (zipage-cli stats, ready checks). vocab is the
 * bound the server enforces on prompt and stop ids: ids in [0, vocab) are accepted. */
typedef struct ipc_model_info {
    const char *model, *backend;
    int32_t vocab, max_model_len, max_concurrency, blocks_total, block_size;
} ipc_model_info;

typedef struct ipc_server_config {
    char name[256]; /* object name without the leading '/' */
    uint32_t mode;  /* permission bits */
    char group[64]; /* "" = the engine's group */
    uint32_t max_clients, max_inflight;
    uint64_t payload_bytes; /* per client */
    uint32_t spin_us;
    bool admin_cancel; /* honour CANCEL_CLIENT records (ipc_admin_cancel) */
} ipc_server_config;

typedef struct ipc_server ipc_server;

/* Fills cfg from the [ipc] keys. */
int ipc_server_config_from_conf(ipc_server_config *cfg, const conf *cf);

int ipc_server_create(ipc_server **out, arena *a, const ipc_server_config *cfg);
int ipc_server_start(ipc_server *s, arena *a, const ipc_engine_ops *ops,
                     const ipc_model_info *info);
/* Serves until stopped; returns 0 after a clean drain or stop. */
int ipc_server_run(ipc_server *s);
void ipc_server_destroy(ipc_server *s);

/* The engine's output callback (engine_output_fn): user = the ipc_server. */
void ipc_server_on_event(void *srv, const engine_event *ev);

/* Async-signal-safe stop request; a higher level overrides a lower one.
 *   IPC_STOP_FINISH: take no new requests (error ZIPAGE_E_DRAINING), let running ones
 *                    finish, then return from run (SIGTERM with sigterm = finish, first SIGINT);
 *   IPC_STOP_CANCEL: same, but cancel the running ones (SIGTERM with sigterm = cancel);
 *   IPC_STOP_NOW:    cancel everything and return within 100 ms (second SIGINT). */
enum { IPC_STOP_FINISH = 1, IPC_STOP_CANCEL = 2, IPC_STOP_NOW = 3 };
void ipc_server_stop(ipc_server *s, int level);

/* Validation and translation of one submission record (type ZPIPC_SUB_REQUEST) and its
 * payload, as take_request does it: payload is the client's payload area (header
 * payload_bytes long, read once into server memory). On success fills *er (its prompt ids
 * point into server memory valid until the next call) and returns 0; else returns the
 * ZIPAGE_E_* code and a message in msg[0..cap). Needs a started server; no side effects
 * on the slots. Exposed for the fuzz target (tests/fuzz/fuzz_ipc_submit.c). */
int ipc_server_validate_sub(ipc_server *s, const zpipc_sub *q, const uint8_t *payload,
                            engine_request *er, char *msg, size_t cap);

/* Path of the object (/dev/shm/NAME), for messages. */
const char *ipc_server_name(const ipc_server *s);

#endif
