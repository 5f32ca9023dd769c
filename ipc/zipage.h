/* zipage.h: the public client API of the zipage engine (libzipage.a / libzipage.so).
 *
 * A client process attaches to a running `zipage serve` through one shared-memory object
 * (/dev/shm/NAME), submits requests and reads completions; no sockets, no syscalls on the
 * fast path (futex only when one side sleeps). The protocol underneath is documented in
 * docs/IPC.md.
 *
 * Rules:
 * - A zipage_client is used from one thread at a time (it owns one SPSC ring pair).
 *   Use one client per thread for parallel submitters.
 * - zipage_connect() allocates the handle and maps the object; nothing in the library
 *   allocates after that. Event text points into the handle and stays valid until the next
 *   zipage_poll()/zipage_wait() on the same client.
 * - Every successful zipage_submit() gets exactly one terminal event (ZIPAGE_EV_FINAL),
 *   including requests the engine refuses (error code in the event), unless the engine goes
 *   away first (ZIPAGE_E_ENGINE_GONE from poll/wait).
 * - Errors are negative ZIPAGE_E_* codes; zipage_strerror() names them and
 *   zipage_last_error() gives the detailed message of the last failing call on this thread.
 */
#ifndef ZIPAGE_H
#define ZIPAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Exported from libzipage.so (built with -fvisibility=hidden). */
#define ZIPAGE_API __attribute__((visibility("default")))

enum {
    ZIPAGE_OK = 0,
    ZIPAGE_E_INVALID = -1,     /* bad argument or request parameter */
    ZIPAGE_E_BUSY = -2,        /* backpressure: a quota or ring is full; retry later */
    ZIPAGE_E_TOO_LARGE = -3,   /* the prompt can never fit the client's payload area */
    ZIPAGE_E_ENGINE_GONE = -4, /* the engine died or stopped */
    ZIPAGE_E_NOENT = -5,       /* no engine serves this name */
    ZIPAGE_E_PERM = -6,        /* not allowed to attach (object mode / owner) */
    ZIPAGE_E_VERSION = -7,     /* the engine speaks another ABI version */
    ZIPAGE_E_FULL = -8,        /* every client slot is taken */
    ZIPAGE_E_PROTOCOL = -9,    /* the engine detached this client for a protocol violation */
    ZIPAGE_E_ENGINE = -10,     /* the engine failed the request (message in the event) */
    ZIPAGE_E_OVERRUN = -11,    /* the client did not drain its completions in time */
    ZIPAGE_E_DRAINING = -12,   /* the engine is shutting down and takes no new requests */
    ZIPAGE_E_TIMEOUT = -13,    /* nothing arrived within the timeout */
    ZIPAGE_E_SYS = -14,        /* a system call failed (message has errno text) */
    ZIPAGE_E_STATE = -15,      /* call not valid now (e.g. generate with requests in flight) */
};

/* Terminal reasons (zipage_event.finish). */
enum {
    ZIPAGE_FINISH_NONE = 0, /* not terminal: a token */
    ZIPAGE_FINISH_STOP = 1,
    ZIPAGE_FINISH_LENGTH = 2,
    ZIPAGE_FINISH_CANCELLED = 3,
    ZIPAGE_FINISH_ERROR = 4,
};

enum { ZIPAGE_PROMPT_TEXT = 0, ZIPAGE_PROMPT_IDS = 1, ZIPAGE_PROMPT_CHAT = 2 };

enum { ZIPAGE_EV_TOKEN = 1, ZIPAGE_EV_FINAL = 2 };

/* zipage_event.flags */
enum {
    ZIPAGE_EVF_CONT = 1, /* more text of the previous token (token = -1; not a new token) */
    ZIPAGE_EVF_TEXT_TRUNCATED = 2, /* non-streamed: out_text was too small */
    ZIPAGE_EVF_IDS_TRUNCATED = 4,  /* non-streamed: out_ids was too small */
};

#define ZIPAGE_MAX_STOP 16

typedef struct zipage_params {
    float temperature;        /* 0 = greedy */
    int32_t top_k;            /* 0 = off */
    float top_p;              /* 1 = off */
    float min_p;              /* 0 = off */
    float repetition_penalty; /* 1 = off */
    float presence_penalty;   /* 0 = off */
    float frequency_penalty;  /* 0 = off */
    uint64_t seed;
    int32_t max_tokens;
    bool ignore_eos;
    bool logprobs;
    int32_t n_stop;
    int32_t stop_ids[ZIPAGE_MAX_STOP];
    int8_t compress;          /* -1 = engine default, 0 = never, 1 = compress */
    int32_t kv_budget_blocks; /* 0 = engine default */
    int32_t protect_prompt;   /* leading prompt tokens never evicted; -1 = engine default */
} zipage_params;

typedef struct zipage_request {
    int kind;         /* ZIPAGE_PROMPT_* */
    const char *text; /* TEXT: the prompt; CHAT: a JSON array of {"role","content"} */
    size_t text_len;
    const int32_t *ids; /* IDS: the prompt token ids */
    size_t n_ids;
    bool enable_thinking; /* CHAT: passed to the chat template */
    zipage_params params;
    /* stream = true: one ZIPAGE_EV_TOKEN event per token, then the FINAL event.
     * stream = false: the library collects ids and text into the buffers below while
     * polling and reports only the FINAL event (n_ids / text_len say how much). The buffers
     * must stay valid until that event. */
    bool stream;
    int32_t *out_ids;
    size_t out_ids_cap;
    char *out_text;
    size_t out_text_cap;
    uint64_t user_tag; /* echoed in events */
} zipage_request;

typedef struct zipage_event {
    uint64_t req_id, user_tag;
    int type;  /* ZIPAGE_EV_* */
    int flags; /* ZIPAGE_EVF_* */
    int32_t token;
    float logprob;    /* when params.logprobs */
    const char *text; /* token piece (TOKEN) or error message (FINAL with ERROR) */
    size_t text_len;
    int finish; /* ZIPAGE_FINISH_* (FINAL) */
    int error;  /* ZIPAGE_E_* when finish == ZIPAGE_FINISH_ERROR */
    int32_t prompt_tokens, completion_tokens, kv_blocks_peak, compressions;
    int32_t cached_prompt_tokens;
    int64_t evicted_tokens;
    size_t n_ids; /* non-streamed FINAL: ids written to out_ids (text_len: bytes to out_text) */
} zipage_event;

/* zipage_options.spin_us special values */
enum {
    ZIPAGE_SPIN_DEFAULT = 0,  /* the engine's spin_us */
    ZIPAGE_SPIN_FOREVER = -1, /* busy-poll: never sleep (the engine never needs to wake us) */
    ZIPAGE_SPIN_NONE = -2,    /* sleep on the futex at once */
};

typedef struct zipage_options {
    /* Busy-wait this many microseconds in zipage_wait() before sleeping on a futex, or one
     * of ZIPAGE_SPIN_*. */
    int32_t spin_us;
    /* Engine heartbeat age after which the engine counts as gone although its process
     * lives (hung or stopped); 0 = 10000 ms. */
    int32_t hang_timeout_ms;
    /* Trust an engine object owned by engine_uid (when engine_uid_set is nonzero) as well as
     * one owned by this process's effective uid: an engine run by another user, e.g. a
     * service account. Without it zipage_connect() refuses an object of any other owner with
     * ZIPAGE_E_PERM, naming the owner, so another user cannot squat the engine's name. A root
     * process cannot use a non-root engine at all (ZIPAGE_E_PERM): that engine cannot verify
     * a root claimer and refuses its claims. */
    int32_t engine_uid_set;
    uint32_t engine_uid;
} zipage_options;

typedef struct zipage_stats {
    /* engine */
    int32_t running, waiting, max_concurrency;
    int32_t blocks_total, blocks_used, blocks_free;
    int64_t steps, prompt_tokens, completion_tokens, preemptions;
    int64_t prefix_hit_tokens, prefix_query_tokens, compressions, evicted_tokens;
    double busy_seconds, tokens_per_s;
    /* ipc */
    int32_t clients, inflight, max_clients, max_inflight_per_client;
    int64_t submitted, completed, rejected, client_deaths, protocol_errors;
    int32_t engine_pid, state; /* state: 1 ready, 2 draining, 3 stopped */
    char model[32], backend[8];
} zipage_stats;

typedef struct zipage_client zipage_client;

/* Attaches to the engine serving NAME (NULL = "zipage"). opts may be NULL. Before using
 * anything in /dev/shm/NAME it checks that the object is owned by this process's uid (or
 * opts->engine_uid), that every header field is within the ABI's limits and consistent with
 * the object's real size, and that the header's engine pid is a live process of the owner
 * that maps this object (else ZIPAGE_E_PERM, ZIPAGE_E_VERSION, ZIPAGE_E_ENGINE_GONE with a
 * message naming the field, uid or pid). It claims only a slot the engine shows free. */
ZIPAGE_API int zipage_connect(zipage_client **out, const char *name, const zipage_options *opts);
/* Detaches; the engine cancels anything still in flight. NULL is fine. */
ZIPAGE_API void zipage_disconnect(zipage_client *c);

ZIPAGE_API void zipage_params_default(zipage_params *p);   /* greedy, max_tokens 256, no filters */
ZIPAGE_API void zipage_request_default(zipage_request *r); /* TEXT, stream on, default params */

/* Queues a request; *req_id identifies it in events and zipage_cancel(). Returns
 * ZIPAGE_E_BUSY at once when the submission ring or payload area is full. */
ZIPAGE_API int zipage_submit(zipage_client *c, const zipage_request *r, uint64_t *req_id);
/* Asks the engine to cancel; its FINAL event (CANCELLED, or how it ended) still follows. */
ZIPAGE_API int zipage_cancel(zipage_client *c, uint64_t req_id);
/* Administrative cancel of another client's requests (by slot index); req_id 0 = all of
 * that client's requests. ZIPAGE_E_PERM unless the engine runs with ipc_admin_cancel. */
ZIPAGE_API int zipage_cancel_client(zipage_client *c, uint32_t slot, uint64_t req_id);
/* Copies up to max ready events without blocking; returns how many, or an error. */
ZIPAGE_API int zipage_poll(zipage_client *c, zipage_event *evs, int max);
/* Like poll, but waits up to timeout_ms (-1 = forever) for at least one event;
 * ZIPAGE_E_TIMEOUT when none came. */
ZIPAGE_API int zipage_wait(zipage_client *c, zipage_event *evs, int max, int timeout_ms);
/* The engine's published statistics (refreshed every few milliseconds). */
ZIPAGE_API int zipage_get_stats(zipage_client *c, zipage_stats *s);
/* Requests submitted and not yet terminated. */
ZIPAGE_API int zipage_inflight(const zipage_client *c);
/* This client's slot index. */
ZIPAGE_API int zipage_slot(const zipage_client *c);

/* Blocking convenience: submits r as non-streamed into out_ids/out_text (r->stream is
 * ignored), waits for the end and copies the FINAL event to *final. Fails with
 * ZIPAGE_E_STATE when other requests are in flight on this client. Returns 0 when the
 * request terminated (see final->finish / final->error), else an error. */
ZIPAGE_API int zipage_generate(zipage_client *c, const zipage_request *r, zipage_event *final,
                               int timeout_ms);

ZIPAGE_API const char *zipage_strerror(int code);
ZIPAGE_API const char *zipage_finish_name(int finish);
/* Detailed message of the last failing call on this thread. */
ZIPAGE_API const char *zipage_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
