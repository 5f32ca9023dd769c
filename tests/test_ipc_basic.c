/* IPC basics against the echo engine: text, ids and chat prompts, streaming and collected
 * output, max_tokens capping, logprobs, cancel, parameter errors as FINAL records, client-side
 * errors, stats, and a SIGTERM drain that refuses new work and exits cleanly. Then token
 * pieces longer than one completion record (continuation records) with an engine whose
 * detokenizer repeats each byte LONG_PIECE times. */
#include "tests/test_ipc_util.h"

#define LONG_PIECE 150

static int (*echo_detok)(void *, void *, int32_t, char *, size_t, size_t *);
static int long_detok(void *ctx, void *st, int32_t tok, char *out, size_t cap, size_t *n) {
    int rc = echo_detok(ctx, st, tok, out, cap, n);
    if (rc || cap < LONG_PIECE) return rc ? rc : ZP_ELIMIT;
    memset(out, out[0], LONG_PIECE);
    *n = LONG_PIECE;
    return 0;
}
static void long_pieces(ipc_engine_ops *ops) {
    echo_detok = ops->detok;
    ops->detok = long_detok;
}

static void check_long_pieces(void) {
    char name[64];
    ipct_name(name, sizeof name, "basic-long");
    pid_t eng = ipct_engine_with(name, NULL, 0, long_pieces);
    zipage_client *c = ipct_connect(name);
    REQUIRE(c);
    zipage_request r;
    zipage_request_default(&r);
    r.text = "abc";
    r.text_len = 3;
    uint64_t id;
    REQUIRE(zipage_submit(c, &r, &id) == 0);
    static char text[4 * LONG_PIECE];
    size_t len = 0;
    int ntok = 0, nev = 0;
    for (bool fin = false; !fin;) {
        zipage_event ev[16];
        int n = zipage_wait(c, ev, 16, 5000);
        REQUIRE(n > 0);
        for (int i = 0; i < n; i++, nev++) {
            if (ev[i].type == ZIPAGE_EV_FINAL) {
                fin = true;
                CHECK(ev[i].finish == ZIPAGE_FINISH_STOP && ev[i].completion_tokens == 3);
                continue;
            }
            bool cont = ev[i].flags & ZIPAGE_EVF_CONT;
            CHECK(cont ? ev[i].token == -1 : ev[i].token == "abc"[ntok]);
            ntok += !cont;
            REQUIRE(len + ev[i].text_len <= sizeof text);
            memcpy(text + len, ev[i].text, ev[i].text_len);
            len += ev[i].text_len;
        }
    }
    CHECK(ntok == 3 && len == 3 * LONG_PIECE && nev == 3 * 3 + 1); /* 150 = 64 + 64 + 22 */
    for (size_t i = 0; i < len; i++)
        CHECK(text[i] == "abc"[i / LONG_PIECE]);
    /* collected: ids counted once per token, text capped at the buffer */
    int32_t ids[8];
    char out[200];
    zipage_request_default(&r);
    r.text = "abc";
    r.text_len = 3;
    r.out_ids = ids;
    r.out_ids_cap = 8;
    r.out_text = out;
    r.out_text_cap = sizeof out;
    zipage_event fin;
    CHECK(zipage_generate(c, &r, &fin, 5000) == 0);
    CHECK(fin.n_ids == 3 && ids[0] == 'a' && ids[2] == 'c');
    CHECK(fin.text_len == sizeof out && (fin.flags & ZIPAGE_EVF_TEXT_TRUNCATED));
    CHECK(!memcmp(out + LONG_PIECE, "bbbb", 4));
    zipage_disconnect(c);
    CHECK(ipct_stop(eng, name) == 0);
}

static int wait_final(zipage_client *c, uint64_t id, zipage_event *fin, char *text, size_t cap,
                      size_t *len, int *ntok) {
    *len = 0;
    *ntok = 0;
    for (;;) {
        zipage_event ev[8];
        int n = zipage_wait(c, ev, 8, 5000);
        if (n < 0) return n;
        for (int i = 0; i < n; i++) {
            if (ev[i].req_id != id) continue;
            if (ev[i].type == ZIPAGE_EV_FINAL) {
                *fin = ev[i];
                return 0;
            }
            if (!(ev[i].flags & ZIPAGE_EVF_CONT)) (*ntok)++;
            if (*len + ev[i].text_len <= cap) memcpy(text + *len, ev[i].text, ev[i].text_len);
            *len += ev[i].text_len;
        }
    }
}

int main(void) {
    char name[64];
    ipct_name(name, sizeof name, "basic");
    const char *sets[] = {"max_clients=4", "max_inflight_per_client=8", NULL};
    pid_t eng = ipct_engine(name, sets, 100);
    zipage_client *c = ipct_connect(name);
    REQUIRE(c);

    /* collected (non-streamed) text */
    char out[256];
    zipage_event fin;
    CHECK(ipct_generate(c, "hello world", 100, out, sizeof out, &fin) == 0);
    CHECK(fin.finish == ZIPAGE_FINISH_STOP && fin.text_len == 11 &&
          !memcmp(out, "hello world", 11));
    CHECK(fin.prompt_tokens == 11 && fin.completion_tokens == 11 && fin.kv_blocks_peak == 2);
    CHECK(ipct_generate(c, "hello world", 5, out, sizeof out, &fin) == 0);
    CHECK(fin.finish == ZIPAGE_FINISH_LENGTH && fin.text_len == 5 && !memcmp(out, "hello", 5));

    /* streamed ids with logprobs */
    zipage_request r;
    zipage_request_default(&r);
    int32_t ids[5] = {65, 66, 67, 68, 69};
    r.kind = ZIPAGE_PROMPT_IDS;
    r.ids = ids;
    r.n_ids = 5;
    r.params.logprobs = true;
    r.user_tag = 77;
    uint64_t id;
    REQUIRE(zipage_submit(c, &r, &id) == 0);
    char text[64];
    size_t len;
    int ntok;
    CHECK(wait_final(c, id, &fin, text, sizeof text, &len, &ntok) == 0);
    CHECK(ntok == 5 && len == 5 && !memcmp(text, "ABCDE", 5) && fin.user_tag == 77);
    CHECK(fin.finish == ZIPAGE_FINISH_STOP);

    /* chat: the echo "template" is the JSON itself */
    const char *msgs = "[{\"role\":\"user\",\"content\":\"hi\"}]";
    zipage_request_default(&r);
    r.kind = ZIPAGE_PROMPT_CHAT;
    r.text = msgs;
    r.text_len = strlen(msgs);
    REQUIRE(zipage_submit(c, &r, &id) == 0);
    CHECK(wait_final(c, id, &fin, text, sizeof text, &len, &ntok) == 0);
    CHECK(len == strlen(msgs) && !memcmp(text, msgs, len));

    /* engine-side validation: id outside the vocabulary -> FINAL error, engine fine */
    int32_t bad[2] = {1, 300};
    zipage_request_default(&r);
    r.kind = ZIPAGE_PROMPT_IDS;
    r.ids = bad;
    r.n_ids = 2;
    REQUIRE(zipage_submit(c, &r, &id) == 0);
    CHECK(wait_final(c, id, &fin, text, sizeof text, &len, &ntok) == 0);
    CHECK(fin.finish == ZIPAGE_FINISH_ERROR && fin.error == ZIPAGE_E_INVALID);
    zipage_request_default(&r);
    r.text = "x";
    r.text_len = 1;
    r.params.temperature = NAN;
    REQUIRE(zipage_submit(c, &r, &id) == 0);
    CHECK(wait_final(c, id, &fin, text, sizeof text, &len, &ntok) == 0);
    CHECK(fin.finish == ZIPAGE_FINISH_ERROR && fin.error == ZIPAGE_E_INVALID);
    CHECK(fin.text_len > 11 && !memcmp(fin.text, "temperature", 11)); /* names the field */

    /* client-side errors */
    zipage_request_default(&r);
    CHECK(zipage_submit(c, &r, &id) == ZIPAGE_E_INVALID); /* empty */
    static char big[2 << 20];
    memset(big, 'a', sizeof big);
    r.text = big;
    r.text_len = sizeof big;
    CHECK(zipage_submit(c, &r, &id) == ZIPAGE_E_TOO_LARGE);
    CHECK(zipage_cancel(c, 12345) == ZIPAGE_E_INVALID);
    zipage_client *none = NULL;
    CHECK(zipage_connect(&none, "zpt-no-such-engine", NULL) == ZIPAGE_E_NOENT && !none);

    /* cancel a long request mid-stream */
    zipage_request_default(&r);
    r.text = big;
    r.text_len = 4000;
    r.params.max_tokens = 4000;
    REQUIRE(zipage_submit(c, &r, &id) == 0);
    zipage_event ev[4];
    CHECK(zipage_wait(c, ev, 1, 5000) == 1);
    CHECK(zipage_cancel(c, id) == 0);
    CHECK(wait_final(c, id, &fin, text, sizeof text, &len, &ntok) == 0);
    CHECKF(fin.finish == ZIPAGE_FINISH_CANCELLED, "finish %d error %d", fin.finish, fin.error);

    /* stats */
    zipage_stats st;
    CHECK(zipage_get_stats(c, &st) == 0);
    CHECK(!strcmp(st.model, "echo") && st.max_clients == 4 && st.max_inflight_per_client == 8);
    CHECK(ipct_wait_idle(c, 1, 2000) >= 0);
    for (double t0 = ipct_ms(); ipct_ms() - t0 < 2000; usleep(1000)) /* published every 10 ms */
        if (zipage_get_stats(c, &st) || (st.completed >= 5 && st.rejected >= 2)) break;
    CHECKF(st.completed >= 5 && st.rejected >= 2, "completed %lld rejected %lld",
           (long long)st.completed, (long long)st.rejected);

    /* a second client attaches to another slot; disconnect frees it */
    zipage_client *c2 = ipct_connect(name);
    REQUIRE(c2);
    CHECK(zipage_slot(c2) != zipage_slot(c));
    CHECK(ipct_generate(c2, "second", 10, out, sizeof out, &fin) == 0 && fin.text_len == 6);
    zipage_disconnect(c2);
    CHECK(ipct_wait_idle(c, 1, 2000) >= 0);

    /* drain: a running request finishes, the engine then stops; clients see GONE */
    zipage_request_default(&r);
    r.text = big;
    r.text_len = 2000;
    r.params.max_tokens = 2000;
    REQUIRE(zipage_submit(c, &r, &id) == 0);
    CHECK(zipage_wait(c, ev, 1, 5000) == 1 && ev[0].type == ZIPAGE_EV_TOKEN);
    kill(eng, SIGTERM);
    CHECK(wait_final(c, id, &fin, text, sizeof text, &len, &ntok) == 0);
    CHECKF(fin.finish == ZIPAGE_FINISH_STOP && ntok == 1999, "finish %d error %d ntok %d",
           fin.finish, fin.error, ntok);
    int rc = zipage_wait(c, ev, 4, 2000);
    CHECK(rc == ZIPAGE_E_ENGINE_GONE);
    CHECK(zipage_submit(c, &r, &id) == ZIPAGE_E_ENGINE_GONE);
    zipage_disconnect(c);
    CHECK(ipct_stop(eng, name) == 0);

    check_long_pieces();
    return test_done("ipc_basic");
}
