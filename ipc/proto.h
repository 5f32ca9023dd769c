/* proto: the shared-memory ABI between `zipage serve` and its clients (docs/IPC.md).
 *
 * One object /dev/shm/NAME = a header (ZPIPC_HEADER_BYTES, in the first page) followed, from
 * ZPIPC_SLOTS_OFF, by max_clients slots of slot_bytes each. A slot = a control block (512
 * bytes), the submission ring (client -> engine, sub_entries records of 192 bytes), the
 * completion ring (engine -> client, cq_entries records of 128 bytes) and the payload area
 * (prompts).
 *
 * Invariants:
 * - Only fixed-width types; every struct is padded to 64-byte cache lines by hand and
 *   checked below with _Static_assert (sizes and every offset). Little-endian, one host.
 * - Every index is a 64-bit sequence number that only grows; entry = seq & (entries - 1).
 * - Each cache line has one writer: "C" lines are written by the client, "E" lines by the
 *   engine. The engine never trusts a C line or the header: it keeps its own copy of every
 *   index and size, and copies records/payload out before validating them.
 * - Atomic access only through ipc/ring.h helpers.
 * A layout change bumps ZPIPC_VERSION.
 */
#ifndef ZP_IPC_PROTO_H
#define ZP_IPC_PROTO_H

#include "ipc/zipage.h"

#include <stddef.h>
#include <stdint.h>

#define ZPIPC_MAGIC   0x4350494547415049ull /* "IPAGEIPC" little-endian */
#define ZPIPC_VERSION 2u
#define ZPIPC_LINE    64

/* Engine lifecycle (header.state and slot.engine_state). */
enum { ZPIPC_STARTING = 0, ZPIPC_READY = 1, ZPIPC_DRAINING = 2, ZPIPC_STOPPED = 3 };

/* Header flags. */
enum { ZPIPC_HF_ADMIN_CANCEL = 1 /* CANCEL_CLIENT records are honoured */ };

/* Slot state as the engine sees it (slot.slot_state; informational for clients). */
enum {
    ZPIPC_SLOT_FREE = 0,
    ZPIPC_SLOT_ATTACHED = 1,
    ZPIPC_SLOT_RECLAIMING = 2,
    ZPIPC_SLOT_QUARANTINED = 3
};

/* Statistics published by the engine (header.stats, under header.stats_seq seqlock). */
typedef struct zpipc_stats {
    int32_t running;             /* 0 */
    int32_t waiting;             /* 4 */
    int32_t max_concurrency;     /* 8 */
    int32_t blocks_total;        /* 12 */
    int32_t blocks_used;         /* 16 */
    int32_t blocks_free;         /* 20 */
    int64_t steps;               /* 24 */
    int64_t prompt_tokens;       /* 32 */
    int64_t completion_tokens;   /* 40 */
    int64_t preemptions;         /* 48 */
    int64_t prefix_hit_tokens;   /* 56 */
    int64_t prefix_query_tokens; /* 64 */
    int64_t compressions;        /* 72 */
    int64_t evicted_tokens;      /* 80 */
    double busy_seconds;         /* 88 */
    double tokens_per_s;         /* 96 */
    int32_t clients;             /* 104 */
    int32_t inflight;            /* 108 */
    int64_t submitted;           /* 112 */
    int64_t completed;           /* 120 */
    int64_t rejected;            /* 128 */
    int64_t client_deaths;       /* 136 */
    int64_t protocol_errors;     /* 144 */
    uint8_t pad[168];            /* 152 -> 320 */
} zpipc_stats;
_Static_assert(sizeof(zpipc_stats) == 320, "zpipc_stats size");
_Static_assert(offsetof(zpipc_stats, running) == 0, "zpipc_stats.running");
_Static_assert(offsetof(zpipc_stats, waiting) == 4, "zpipc_stats.waiting");
_Static_assert(offsetof(zpipc_stats, max_concurrency) == 8, "zpipc_stats.max_concurrency");
_Static_assert(offsetof(zpipc_stats, blocks_total) == 12, "zpipc_stats.blocks_total");
_Static_assert(offsetof(zpipc_stats, blocks_used) == 16, "zpipc_stats.blocks_used");
_Static_assert(offsetof(zpipc_stats, blocks_free) == 20, "zpipc_stats.blocks_free");
_Static_assert(offsetof(zpipc_stats, steps) == 24, "zpipc_stats.steps");
_Static_assert(offsetof(zpipc_stats, prompt_tokens) == 32, "zpipc_stats.prompt_tokens");
_Static_assert(offsetof(zpipc_stats, completion_tokens) == 40, "zpipc_stats.completion_tokens");
_Static_assert(offsetof(zpipc_stats, preemptions) == 48, "zpipc_stats.preemptions");
_Static_assert(offsetof(zpipc_stats, prefix_hit_tokens) == 56, "zpipc_stats.prefix_hit_tokens");
_Static_assert(offsetof(zpipc_stats, prefix_query_tokens) == 64, "zpipc_stats.prefix_query_tokens");
_Static_assert(offsetof(zpipc_stats, compressions) == 72, "zpipc_stats.compressions");
_Static_assert(offsetof(zpipc_stats, evicted_tokens) == 80, "zpipc_stats.evicted_tokens");
_Static_assert(offsetof(zpipc_stats, busy_seconds) == 88, "zpipc_stats.busy_seconds");
_Static_assert(offsetof(zpipc_stats, tokens_per_s) == 96, "zpipc_stats.tokens_per_s");
_Static_assert(offsetof(zpipc_stats, clients) == 104, "zpipc_stats.clients");
_Static_assert(offsetof(zpipc_stats, inflight) == 108, "zpipc_stats.inflight");
_Static_assert(offsetof(zpipc_stats, submitted) == 112, "zpipc_stats.submitted");
_Static_assert(offsetof(zpipc_stats, completed) == 120, "zpipc_stats.completed");
_Static_assert(offsetof(zpipc_stats, rejected) == 128, "zpipc_stats.rejected");
_Static_assert(offsetof(zpipc_stats, client_deaths) == 136, "zpipc_stats.client_deaths");
_Static_assert(offsetof(zpipc_stats, protocol_errors) == 144, "zpipc_stats.protocol_errors");

typedef struct zpipc_header {
    /* line 0 (E, written once before state = READY): layout */
    uint64_t magic;         /* 0 */
    uint32_t version;       /* 8 */
    uint32_t header_bytes;  /* 12 */
    uint32_t slot_bytes;    /* 16: stride between slots */
    uint32_t max_clients;   /* 20 */
    uint32_t sub_entries;   /* 24: power of two */
    uint32_t cq_entries;    /* 28: power of two */
    uint64_t payload_bytes; /* 32: per slot */
    uint64_t total_bytes;   /* 40: size of the object */
    uint32_t max_inflight;  /* 48: per client */
    int32_t engine_pid;     /* 52 */
    uint32_t spin_us;       /* 56: the engine's spin before sleeping (client default) */
    uint32_t flags;         /* 60: ZPIPC_HF_* */
    /* line 1 (E, written once): model facts */
    char model[32];          /* 64 */
    char backend[8];         /* 96 */
    int32_t vocab;           /* 104 */
    int32_t max_model_len;   /* 108 */
    int32_t max_concurrency; /* 112 */
    int32_t blocks_total;    /* 116 */
    int32_t block_size;      /* 120 */
    uint32_t pad1;           /* 124 */
    /* line 2 (E): liveness */
    uint32_t state;        /* 128: ZPIPC_STARTING.. */
    uint32_t pad2;         /* 132 */
    uint64_t heartbeat_ns; /* 136: CLOCK_MONOTONIC */
    uint8_t pad3[48];      /* 144 */
    /* line 3 (shared): engine wake-up. engine_futex is the word the engine sleeps on;
     * engine_sleeping is its "needs wakeup" flag; attach_seq is bumped by a client after it
     * claimed a slot or set detach (a hint: the engine also scans on its own). */
    uint32_t engine_futex;    /* 192 */
    uint32_t engine_sleeping; /* 196 */
    uint32_t attach_seq;      /* 200 */
    uint8_t pad4[52];         /* 204 */
    /* line 4 (E): statistics seqlock (odd = being written) */
    uint32_t stats_seq; /* 256 */
    uint8_t pad5[60];   /* 260 */
    zpipc_stats stats;  /* 320 */
} zpipc_header;
#define ZPIPC_HEADER_BYTES 640u
_Static_assert(sizeof(zpipc_header) == ZPIPC_HEADER_BYTES, "zpipc_header size");
_Static_assert(offsetof(zpipc_header, magic) == 0, "zpipc_header.magic");
_Static_assert(offsetof(zpipc_header, version) == 8, "zpipc_header.version");
_Static_assert(offsetof(zpipc_header, header_bytes) == 12, "zpipc_header.header_bytes");
_Static_assert(offsetof(zpipc_header, slot_bytes) == 16, "zpipc_header.slot_bytes");
_Static_assert(offsetof(zpipc_header, max_clients) == 20, "zpipc_header.max_clients");
_Static_assert(offsetof(zpipc_header, sub_entries) == 24, "zpipc_header.sub_entries");
_Static_assert(offsetof(zpipc_header, cq_entries) == 28, "zpipc_header.cq_entries");
_Static_assert(offsetof(zpipc_header, payload_bytes) == 32, "zpipc_header.payload_bytes");
_Static_assert(offsetof(zpipc_header, total_bytes) == 40, "zpipc_header.total_bytes");
_Static_assert(offsetof(zpipc_header, max_inflight) == 48, "zpipc_header.max_inflight");
_Static_assert(offsetof(zpipc_header, engine_pid) == 52, "zpipc_header.engine_pid");
_Static_assert(offsetof(zpipc_header, spin_us) == 56, "zpipc_header.spin_us");
_Static_assert(offsetof(zpipc_header, flags) == 60, "zpipc_header.flags");
_Static_assert(offsetof(zpipc_header, model) == 64, "zpipc_header.model");
_Static_assert(offsetof(zpipc_header, backend) == 96, "zpipc_header.backend");
_Static_assert(offsetof(zpipc_header, vocab) == 104, "zpipc_header.vocab");
_Static_assert(offsetof(zpipc_header, max_model_len) == 108, "zpipc_header.max_model_len");
_Static_assert(offsetof(zpipc_header, max_concurrency) == 112, "zpipc_header.max_concurrency");
_Static_assert(offsetof(zpipc_header, blocks_total) == 116, "zpipc_header.blocks_total");
_Static_assert(offsetof(zpipc_header, block_size) == 120, "zpipc_header.block_size");
_Static_assert(offsetof(zpipc_header, state) == 128, "zpipc_header.state");
_Static_assert(offsetof(zpipc_header, heartbeat_ns) == 136, "zpipc_header.heartbeat_ns");
_Static_assert(offsetof(zpipc_header, engine_futex) == 192, "zpipc_header.engine_futex");
_Static_assert(offsetof(zpipc_header, engine_sleeping) == 196, "zpipc_header.engine_sleeping");
_Static_assert(offsetof(zpipc_header, attach_seq) == 200, "zpipc_header.attach_seq");
_Static_assert(offsetof(zpipc_header, stats_seq) == 256, "zpipc_header.stats_seq");
_Static_assert(offsetof(zpipc_header, stats) == 320, "zpipc_header.stats");

/* A slot's control block; its rings and payload follow it in the object. */
typedef struct zpipc_slot {
    /* line 0 (C): ownership. claim_pid: 0 = free; a client CASes 0 -> its pid; the engine
     * stores 0 when it frees the slot. detach: the client sets 1 on disconnect. */
    uint32_t claim_pid; /* 0 */
    uint32_t detach;    /* 4 */
    uint8_t pad0[56];   /* 8 */
    /* line 1 (C): submission producer sequence */
    uint64_t sub_tail; /* 64 */
    uint8_t pad1[56];  /* 72 */
    /* line 2 (C): completion consumer sequence + the client's "needs wakeup" flag */
    uint64_t cq_head;         /* 128 */
    uint32_t client_sleeping; /* 136 */
    uint8_t pad2[52];         /* 140 */
    /* line 3 (E): engine control for this slot */
    uint32_t generation;          /* 192: bumped on every free; a client compares with its own */
    uint32_t slot_state;          /* 196: ZPIPC_SLOT_* */
    uint32_t engine_state;        /* 200: ZPIPC_READY / DRAINING / STOPPED (copy of header) */
    int32_t error_code;           /* 204: why the slot was quarantined (ZIPAGE_E_*) */
    uint64_t engine_heartbeat_ns; /* 208 */
    uint8_t pad3[40];             /* 216 */
    /* line 4 (E): submission consumer sequence */
    uint64_t sub_head; /* 256 */
    uint8_t pad4[56];  /* 264 */
    /* line 5 (E): completion producer sequence + the futex word the client sleeps on */
    uint64_t cq_tail;      /* 320 */
    uint32_t client_futex; /* 328 */
    uint8_t pad5[52];      /* 332 */
    /* lines 6-7 (E): message for error_code */
    char error_msg[128]; /* 384 */
} zpipc_slot;
#define ZPIPC_SLOT_CTRL_BYTES 512u
_Static_assert(sizeof(zpipc_slot) == ZPIPC_SLOT_CTRL_BYTES, "zpipc_slot size");
_Static_assert(offsetof(zpipc_slot, claim_pid) == 0, "zpipc_slot.claim_pid");
_Static_assert(offsetof(zpipc_slot, detach) == 4, "zpipc_slot.detach");
_Static_assert(offsetof(zpipc_slot, sub_tail) == 64, "zpipc_slot.sub_tail");
_Static_assert(offsetof(zpipc_slot, cq_head) == 128, "zpipc_slot.cq_head");
_Static_assert(offsetof(zpipc_slot, client_sleeping) == 136, "zpipc_slot.client_sleeping");
_Static_assert(offsetof(zpipc_slot, generation) == 192, "zpipc_slot.generation");
_Static_assert(offsetof(zpipc_slot, slot_state) == 196, "zpipc_slot.slot_state");
_Static_assert(offsetof(zpipc_slot, engine_state) == 200, "zpipc_slot.engine_state");
_Static_assert(offsetof(zpipc_slot, error_code) == 204, "zpipc_slot.error_code");
_Static_assert(offsetof(zpipc_slot, engine_heartbeat_ns) == 208, "zpipc_slot.engine_heartbeat_ns");
_Static_assert(offsetof(zpipc_slot, sub_head) == 256, "zpipc_slot.sub_head");
_Static_assert(offsetof(zpipc_slot, cq_tail) == 320, "zpipc_slot.cq_tail");
_Static_assert(offsetof(zpipc_slot, client_futex) == 328, "zpipc_slot.client_futex");
_Static_assert(offsetof(zpipc_slot, error_msg) == 384, "zpipc_slot.error_msg");

/* Submission record types. */
enum { ZPIPC_SUB_REQUEST = 1, ZPIPC_SUB_CANCEL = 2, ZPIPC_SUB_CANCEL_CLIENT = 3 };
/* Submission flags. */
enum { ZPIPC_SF_IGNORE_EOS = 1, ZPIPC_SF_LOGPROBS = 2, ZPIPC_SF_THINKING = 4 };

typedef struct zpipc_sub {
    uint32_t type;                     /* 0: ZPIPC_SUB_* */
    uint32_t kind;                     /* 4: ZIPAGE_PROMPT_* */
    uint64_t req_id;                   /* 8: client-chosen; CANCEL: the request to cancel */
    uint64_t payload_off;              /* 16: into this slot's payload area */
    uint32_t payload_len;              /* 24 */
    uint32_t flags;                    /* 28: ZPIPC_SF_* */
    float temperature;                 /* 32 */
    int32_t top_k;                     /* 36 */
    float top_p;                       /* 40 */
    float min_p;                       /* 44 */
    float repetition_penalty;          /* 48 */
    float presence_penalty;            /* 52 */
    float frequency_penalty;           /* 56 */
    int32_t max_tokens;                /* 60 */
    uint64_t seed;                     /* 64 */
    int32_t n_stop;                    /* 72 */
    int32_t kv_budget_blocks;          /* 76 */
    int32_t compress;                  /* 80: -1 / 0 / 1 */
    uint32_t target_slot;              /* 84: CANCEL_CLIENT */
    int32_t protect_prompt;            /* 88: -1 = engine default, else tokens */
    uint32_t pad0;                     /* 92 */
    int32_t stop_ids[ZIPAGE_MAX_STOP]; /* 96 */
    uint8_t pad1[32];                  /* 160 */
} zpipc_sub;
#define ZPIPC_SUB_BYTES 192u
_Static_assert(sizeof(zpipc_sub) == ZPIPC_SUB_BYTES, "zpipc_sub size");
_Static_assert(offsetof(zpipc_sub, type) == 0, "zpipc_sub.type");
_Static_assert(offsetof(zpipc_sub, kind) == 4, "zpipc_sub.kind");
_Static_assert(offsetof(zpipc_sub, req_id) == 8, "zpipc_sub.req_id");
_Static_assert(offsetof(zpipc_sub, payload_off) == 16, "zpipc_sub.payload_off");
_Static_assert(offsetof(zpipc_sub, payload_len) == 24, "zpipc_sub.payload_len");
_Static_assert(offsetof(zpipc_sub, flags) == 28, "zpipc_sub.flags");
_Static_assert(offsetof(zpipc_sub, temperature) == 32, "zpipc_sub.temperature");
_Static_assert(offsetof(zpipc_sub, top_k) == 36, "zpipc_sub.top_k");
_Static_assert(offsetof(zpipc_sub, top_p) == 40, "zpipc_sub.top_p");
_Static_assert(offsetof(zpipc_sub, min_p) == 44, "zpipc_sub.min_p");
_Static_assert(offsetof(zpipc_sub, repetition_penalty) == 48, "zpipc_sub.repetition_penalty");
_Static_assert(offsetof(zpipc_sub, presence_penalty) == 52, "zpipc_sub.presence_penalty");
_Static_assert(offsetof(zpipc_sub, frequency_penalty) == 56, "zpipc_sub.frequency_penalty");
_Static_assert(offsetof(zpipc_sub, max_tokens) == 60, "zpipc_sub.max_tokens");
_Static_assert(offsetof(zpipc_sub, seed) == 64, "zpipc_sub.seed");
_Static_assert(offsetof(zpipc_sub, n_stop) == 72, "zpipc_sub.n_stop");
_Static_assert(offsetof(zpipc_sub, kv_budget_blocks) == 76, "zpipc_sub.kv_budget_blocks");
_Static_assert(offsetof(zpipc_sub, compress) == 80, "zpipc_sub.compress");
_Static_assert(offsetof(zpipc_sub, target_slot) == 84, "zpipc_sub.target_slot");
_Static_assert(offsetof(zpipc_sub, protect_prompt) == 88, "zpipc_sub.protect_prompt");
_Static_assert(offsetof(zpipc_sub, stop_ids) == 96, "zpipc_sub.stop_ids");

/* Completion record types: ZIPAGE_EV_TOKEN, ZIPAGE_EV_FINAL; flags: ZIPAGE_EVF_CONT. */
#define ZPIPC_CQE_TEXT 64u
typedef struct zpipc_cqe {
    uint64_t req_id;              /* 0 */
    uint32_t type;                /* 8 */
    uint32_t flags;               /* 12 */
    int32_t token;                /* 16 */
    float logprob;                /* 20 */
    int32_t finish;               /* 24: ZIPAGE_FINISH_* */
    int32_t error;                /* 28: ZIPAGE_E_* */
    uint32_t text_len;            /* 32: bytes used in text */
    int32_t prompt_tokens;        /* 36 */
    int32_t completion_tokens;    /* 40 */
    int32_t kv_blocks_peak;       /* 44 */
    int32_t compressions;         /* 48 */
    int32_t cached_prompt_tokens; /* 52 */
    int64_t evicted_tokens;       /* 56 */
    char text[ZPIPC_CQE_TEXT];    /* 64: token piece, or the error message of a FINAL */
} zpipc_cqe;
#define ZPIPC_CQE_BYTES 128u
_Static_assert(sizeof(zpipc_cqe) == ZPIPC_CQE_BYTES, "zpipc_cqe size");
_Static_assert(offsetof(zpipc_cqe, req_id) == 0, "zpipc_cqe.req_id");
_Static_assert(offsetof(zpipc_cqe, type) == 8, "zpipc_cqe.type");
_Static_assert(offsetof(zpipc_cqe, flags) == 12, "zpipc_cqe.flags");
_Static_assert(offsetof(zpipc_cqe, token) == 16, "zpipc_cqe.token");
_Static_assert(offsetof(zpipc_cqe, logprob) == 20, "zpipc_cqe.logprob");
_Static_assert(offsetof(zpipc_cqe, finish) == 24, "zpipc_cqe.finish");
_Static_assert(offsetof(zpipc_cqe, error) == 28, "zpipc_cqe.error");
_Static_assert(offsetof(zpipc_cqe, text_len) == 32, "zpipc_cqe.text_len");
_Static_assert(offsetof(zpipc_cqe, prompt_tokens) == 36, "zpipc_cqe.prompt_tokens");
_Static_assert(offsetof(zpipc_cqe, completion_tokens) == 40, "zpipc_cqe.completion_tokens");
_Static_assert(offsetof(zpipc_cqe, kv_blocks_peak) == 44, "zpipc_cqe.kv_blocks_peak");
_Static_assert(offsetof(zpipc_cqe, compressions) == 48, "zpipc_cqe.compressions");
_Static_assert(offsetof(zpipc_cqe, cached_prompt_tokens) == 52, "zpipc_cqe.cached_prompt_tokens");
_Static_assert(offsetof(zpipc_cqe, evicted_tokens) == 56, "zpipc_cqe.evicted_tokens");
_Static_assert(offsetof(zpipc_cqe, text) == 64, "zpipc_cqe.text");

/* ABI limits: the largest layout an engine publishes (the [ipc] ranges of zipage.conf:
 * max_clients <= 1024, max_inflight_per_client <= 65536, payload_bytes_per_client <= 1 GiB,
 * spin_us <= 1 s; the rings are the powers of two the engine derives from max_inflight).
 * A client refuses a header beyond them, so no layout arithmetic below can overflow. */
#define ZPIPC_MAX_CLIENTS     1024u
#define ZPIPC_MAX_INFLIGHT    65536u
#define ZPIPC_MAX_SUB_ENTRIES (1u << 17) /* pow2 >= 2 x max_inflight */
#define ZPIPC_MAX_CQ_ENTRIES  (1u << 18) /* pow2 >= 4 x max_inflight */
#define ZPIPC_MAX_PAYLOAD     (1ull << 30)
#define ZPIPC_MAX_SPIN_US     1000000u

/* Layout arithmetic shared by both sides (each side uses its own copy of the sizes).
 * Slot stride, page-rounded; 0 when an input is beyond the ABI limits (within them the sum
 * is below 2^31, so it neither wraps nor overflows the header's 32-bit slot_bytes). */
static inline uint64_t zpipc_slot_bytes(uint32_t sub_entries, uint32_t cq_entries,
                                        uint64_t payload_bytes) {
    if (sub_entries > ZPIPC_MAX_SUB_ENTRIES || cq_entries > ZPIPC_MAX_CQ_ENTRIES ||
        payload_bytes > ZPIPC_MAX_PAYLOAD)
        return 0;
    uint64_t b = ZPIPC_SLOT_CTRL_BYTES + (uint64_t)sub_entries * ZPIPC_SUB_BYTES +
                 (uint64_t)cq_entries * ZPIPC_CQE_BYTES + payload_bytes;
    return (b + 4095) & ~(uint64_t)4095;
}
_Static_assert(ZPIPC_SLOT_CTRL_BYTES + (uint64_t)ZPIPC_MAX_SUB_ENTRIES * ZPIPC_SUB_BYTES +
                       (uint64_t)ZPIPC_MAX_CQ_ENTRIES * ZPIPC_CQE_BYTES + ZPIPC_MAX_PAYLOAD + 4095 <
                   (1ull << 31),
               "the largest slot fits the header's slot_bytes");
static inline uint64_t zpipc_sub_off(void) {
    return ZPIPC_SLOT_CTRL_BYTES;
}
static inline uint64_t zpipc_cq_off(uint32_t sub_entries) {
    return ZPIPC_SLOT_CTRL_BYTES + (uint64_t)sub_entries * ZPIPC_SUB_BYTES;
}
static inline uint64_t zpipc_payload_off(uint32_t sub_entries, uint32_t cq_entries) {
    return zpipc_cq_off(sub_entries) + (uint64_t)cq_entries * ZPIPC_CQE_BYTES;
}
/* Slots start at 4096 so each slot's rings are page aligned. */
#define ZPIPC_SLOTS_OFF 4096u

#endif
