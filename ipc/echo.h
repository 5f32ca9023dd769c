/* echo: a model-less engine for measuring and testing the IPC path alone (zipage serve
 * --echo). Each request is answered with its own prompt ids, one per step, capped by
 * max_tokens (finish "length" when capped, else "stop"); the text hooks map bytes to ids
 * 0..255 one to one, and the chat "template" is the messages JSON itself. Cancel works as
 * in engine.h: the CANCELLED terminal event comes at the next step.
 *
 * Same contract as engine.h (single thread, events through the output callback, exactly
 * one terminal event per accepted request). Memory: a request table carved from the arena
 * at create; nothing allocates afterwards.
 */
#ifndef ZP_IPC_ECHO_H
#define ZP_IPC_ECHO_H

#include "arena/arena.h"
#include "engine/engine.h"
#include "ipc/server.h"

#include <stdint.h>

typedef struct echo_config {
    int32_t max_requests; /* requests at once */
    int32_t max_echo;     /* most tokens one request may echo */
    int32_t step_us;      /* sleep per step while requests run (simulates a model) */
} echo_config;

typedef struct echo echo;

int echo_create(echo **out, arena *a, const echo_config *cfg, engine_output_fn fn, void *user);
/* Fills ops with the echo engine's functions (ctx = e). */
void echo_ops(echo *e, ipc_engine_ops *ops);

#endif
