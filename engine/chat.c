/* chat: built-in renderers for the chat templates zipage knows (see chat.h).
 *
 * Each renderer mirrors its Jinja template line by line for messages without tools. Output
 * goes to the front of the caller's buffer; message strings are unescaped into its tail
 * (w.tail moves down, and back up after each message), so copies never overlap.
 */
#include "engine/chat.h"

#include "arena/err.h"

#include <string.h>
#include <time.h>

typedef struct {
    char *out;
    size_t cap, len, tail;
} wr;

typedef struct {
    const char *s;
    size_t n;
} str;

static int put(wr *w, const char *s, size_t n) {
    if (n > w->tail - w->len) return err_set(ZP_ELIMIT, "chat prompt does not fit in %zu bytes", w->cap);
    memmove(w->out + w->len, s, n);
    w->len += n;
    return 0;
}

static int put_str(wr *w, const char *s) { return put(w, s, strlen(s)); }

static int put_parts(wr *w, const char *const *parts, const str *vals) {
    /* parts and vals alternate: parts[0] vals[0] parts[1] ...; NULL ends parts */
    for (int i = 0; parts[i]; i++) {
        int rc = put_str(w, parts[i]);
        if (!rc && vals && vals[i].s) rc = put(w, vals[i].s, vals[i].n);
        if (rc) return rc;
    }
    return 0;
}

/* Unescapes JSON string token v into the tail of the buffer. */
static int text(wr *w, const json_doc *d, int v, str *s) {
    size_t raw = (size_t)(d->tok[v].end - d->tok[v].start) + 1;
    if (raw > w->tail - w->len) return err_set(ZP_ELIMIT, "chat prompt does not fit in %zu bytes", w->cap);
    w->tail -= raw;
    size_t n;
    int rc = json_str(d, v, w->out + w->tail, raw, &n);
    if (rc) return rc;
    *s = (str){w->out + w->tail, n};
    return 0;
}

static const char *find(str s, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= s.n; i++)
        if (!memcmp(s.s + i, needle, k)) return s.s + i;
    return NULL;
}

static const char *rfind(str s, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = s.n + 1; i-- > 0;)
        if (i + k <= s.n && !memcmp(s.s + i, needle, k)) return s.s + i;
    return NULL;
}

static str lstrip_nl(str s) {
    while (s.n && s.s[0] == '\n') s.s++, s.n--;
    return s;
}

static str rstrip_nl(str s) {
    while (s.n && s.s[s.n - 1] == '\n') s.n--;
    return s;
}

/* Length of the Python-whitespace character (str.strip, Jinja's trim) at s, or 0. */
static size_t py_space(const char *p, size_t n) {
    const unsigned char *s = (const unsigned char *)p;
    if ((s[0] >= 9 && s[0] <= 13) || s[0] == ' ' || (s[0] >= 0x1C && s[0] <= 0x1F)) return 1;
    if (n >= 2 && s[0] == 0xC2 && (s[1] == 0x85 || s[1] == 0xA0)) return 2;
    if (n >= 3 && s[0] == 0xE1 && s[1] == 0x9A && s[2] == 0x80) return 3;            /* U+1680 */
    if (n >= 3 && s[0] == 0xE2 && s[1] == 0x80 && (s[2] <= 0x8A || s[2] == 0xA8 || s[2] == 0xA9 || s[2] == 0xAF))
        return 3;                                                                      /* U+2000.. */
    if (n >= 3 && s[0] == 0xE2 && s[1] == 0x81 && s[2] == 0x9F) return 3;            /* U+205F */
    if (n >= 3 && s[0] == 0xE3 && s[1] == 0x80 && s[2] == 0x80) return 3;            /* U+3000 */
    return 0;
}

static str trim(str s) {
    size_t k;
    while (s.n && (k = py_space(s.s, s.n))) s.s += k, s.n -= k;
    for (;;) { /* step back over one character at a time */
        size_t b = s.n;
        while (b && ((unsigned char)s.s[b - 1] & 0xC0) == 0x80) b--;
        if (!b || !(k = py_space(s.s + b - 1, s.n - b + 1)) || b - 1 + k != s.n) break;
        s.n = b - 1;
    }
    return s;
}

static bool role_is(const json_doc *d, int m, const char *r) {
    int v = json_get(d, m, "role");
    return json_is_str(d, v) && json_str_eq(d, v, r);
}

/* Checks every message: an object with a known role and a string content, no tool calls. */
static int check_messages(const json_doc *d, int msgs, int *count) {
    if (!json_is_arr(d, msgs) || json_len(d, msgs) == 0)
        return err_set(ZP_EINVAL, "chat messages must be a non-empty JSON array");
    int n = json_len(d, msgs);
    for (int i = 0, m = msgs + 1; i < n; i++, m = json_skip(d, m)) {
        if (!json_is_obj(d, m)) return err_set(ZP_EINVAL, "chat message %d is not an object", i);
        if (!role_is(d, m, "system") && !role_is(d, m, "user") && !role_is(d, m, "assistant") &&
            !role_is(d, m, "tool"))
            return err_set(ZP_EINVAL, "chat message %d: role must be system, user, assistant or tool", i);
        if (!json_is_str(d, json_get(d, m, "content")))
            return err_set(ZP_EINVAL, "chat message %d: content must be a string", i);
        int tc = json_get(d, m, "tool_calls");
        if (tc >= 0 && !json_is_null(d, tc) && !(json_is_arr(d, tc) && json_len(d, tc) == 0))
            return err_set(ZP_EUNSUP, "chat message %d: tool calls are not supported by the built-in chat "
                           "templates; pass a raw prompt instead", i);
    }
    *count = n;
    return 0;
}

/* Matches pat at s, where a newline in pat stands for a newline in the template text or for
 * the two characters \n (templates spell it either way inside their string literals).
 * Returns the end of the match or NULL. */
static const char *tmpl_match(const char *s, const char *pat) {
    for (; *pat; pat++) {
        if (*pat == '\n' && s[0] == '\\' && s[1] == 'n') s += 2;
        else if (*s == *pat) s++;
        else return NULL;
    }
    return s;
}

static const char *tmpl_find(const char *tmpl, const char *pat, const char **end) {
    for (const char *p = tmpl; *p; p++)
        if ((*end = tmpl_match(p, pat))) return p;
    return NULL;
}

/* The default system prompt a ChatML template writes when the first message is not a
 * system one ('<|im_start|>system\nTEXT<|im_end|>' as one literal), or an empty string. */
static str default_system(const char *tmpl) {
    const char *s;
    for (const char *p = tmpl_find(tmpl, "<|im_start|>system\n", &s); p; p = tmpl_find(p + 1, "<|im_start|>system\n", &s)) {
        const char *e = strstr(s, "<|im_end|>");
        if (!e || *s == '\'' || *s == '"' || memchr(s, '\'', (size_t)(e - s)) || memchr(s, '"', (size_t)(e - s)))
            continue;
        return (str){s, (size_t)(e - s)};
    }
    return (str){"", 0};
}

static int chatml(wr *w, const char *tmpl, const json_doc *d, int msgs, int n, bool qwen3, bool gen, bool think) {
    int rc = 0;
    str c, r, role;
    int first = msgs + 1;
    bool tool_wrap = strstr(tmpl, "<tool_response>") != NULL;
    if (role_is(d, first, "system")) {
        if ((rc = text(w, d, json_get(d, first, "content"), &c))) return rc;
        rc = put_parts(w, (const char *const[]){"<|im_start|>system\n", "<|im_end|>\n", NULL}, (str[]){c, {0}});
    } else if (!qwen3) {
        str def = default_system(tmpl);
        if (def.n) { /* the template literal may spell newlines as \n */
            rc = put_str(w, "<|im_start|>system\n");
            for (size_t i = 0; !rc && i < def.n; i++) {
                bool esc = def.s[i] == '\\' && i + 1 < def.n && def.s[i + 1] == 'n';
                rc = put(w, esc ? "\n" : def.s + i, 1);
                i += esc;
            }
            if (!rc) rc = put_str(w, "<|im_end|>\n");
        }
    }
    w->tail = w->cap;
    if (rc) return rc;
    /* Qwen3: reasoning is kept only after the last real user query */
    int last_query = n - 1;
    for (int i = 0, m = first; qwen3 && i < n; i++, m = json_skip(d, m)) {
        if (!role_is(d, m, "user")) continue;
        if ((rc = text(w, d, json_get(d, m, "content"), &c))) return rc;
        w->tail = w->cap;
        bool wrapped = c.n >= 15 && !memcmp(c.s, "<tool_response>", 15) && c.n >= 16 &&
                       !memcmp(c.s + c.n - 16, "</tool_response>", 16);
        if (!wrapped) last_query = i;
    }
    bool prev_tool = false;
    for (int i = 0, m = first; i < n; i++, m = json_skip(d, m)) {
        int next = json_skip(d, m);
        bool is_last = i == n - 1, next_tool = !is_last && role_is(d, next, "tool");
        if ((rc = text(w, d, json_get(d, m, "content"), &c)) || (rc = text(w, d, json_get(d, m, "role"), &role)))
            return rc;
        if (role_is(d, m, "system") && i == 0) {
            /* written above */
        } else if (role_is(d, m, "tool") && tool_wrap) {
            if (!prev_tool) rc = put_str(w, "<|im_start|>user");
            if (!rc) rc = put_parts(w, (const char *const[]){"\n<tool_response>\n", "\n</tool_response>", NULL}, (str[]){c, {0}});
            if (!rc && (is_last || !next_tool)) rc = put_str(w, "<|im_end|>\n");
        } else if (role_is(d, m, "assistant") && qwen3) {
            r = (str){NULL, 0};
            int rv = json_get(d, m, "reasoning_content");
            if (json_is_str(d, rv)) {
                rc = text(w, d, rv, &r);
            } else if (find(c, "</think>")) {
                const char *close = find(c, "</think>"), *last_close = rfind(c, "</think>");
                r = rstrip_nl((str){c.s, (size_t)(close - c.s)});
                const char *open = rfind(r, "<think>");
                if (open) r = (str){open + 7, r.n - (size_t)(open + 7 - r.s)};
                r = lstrip_nl(r);
                c = lstrip_nl((str){last_close + 8, c.n - (size_t)(last_close + 8 - c.s)});
            }
            if (rc) return rc;
            if (i > last_query && (is_last || (r.s && r.n))) {
                if (!r.s) r = (str){"", 0};
                rc = put_parts(w, (const char *const[]){"<|im_start|>assistant\n<think>\n", "\n</think>\n\n", "", NULL},
                              (str[]){rstrip_nl(lstrip_nl(r)), lstrip_nl(c), {0}});
            } else {
                rc = put_parts(w, (const char *const[]){"<|im_start|>assistant\n", "", NULL}, (str[]){c, {0}});
            }
            if (!rc) rc = put_str(w, "<|im_end|>\n");
        } else {
            rc = put_parts(w, (const char *const[]){"<|im_start|>", "\n", "<|im_end|>\n", NULL}, (str[]){role, c, {0}});
        }
        w->tail = w->cap;
        if (rc) return rc;
        prev_tool = role_is(d, m, "tool");
    }
    if (!gen) return 0;
    if ((rc = put_str(w, "<|im_start|>assistant\n"))) return rc;
    const char *end;
    if (tmpl_find(tmpl, "'<|im_start|>assistant\n<think>\n'", &end)) return put_str(w, "<think>\n");
    if (qwen3 && !think && strstr(tmpl, "enable_thinking")) return put_str(w, "<think>\n\n</think>\n\n");
    return 0;
}

static int bos_text(const tokenizer *t, str *s) {
    *s = (str){"", 0};
    if (tok_bos_id(t) < 0) return 0;
    return tok_token_bytes(t, tok_bos_id(t), &s->s, &s->n);
}

/* Llama-3 (dated = false) and Llama-3.1+ (dated = true: a system block with the knowledge
 * cut-off and today's date always comes first, "26 Jul 2024" unless the template asks
 * strftime_now like transformers does). */
static int llama3(wr *w, const tokenizer *t, const char *tmpl, const json_doc *d, int msgs, int n, bool gen, bool dated) {
    str bos, c, role;
    int rc = bos_text(t, &bos), i0 = 0;
    if (!rc) rc = put(w, bos.s, bos.n);
    if (!rc && dated) {
        char date[32] = "26 Jul 2024";
        if (strstr(tmpl, "strftime_now")) {
            time_t now = time(NULL);
            struct tm tm;
            strftime(date, sizeof date, "%d %b %Y", localtime_r(&now, &tm));
        }
        str sys = {"", 0};
        if (role_is(d, msgs + 1, "system")) {
            rc = text(w, d, json_get(d, msgs + 1, "content"), &sys);
            i0 = 1;
        }
        if (!rc)
            rc = put_parts(w, (const char *const[]){"<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
                                                    "December 2023\nToday Date: ", "\n\n", "<|eot_id|>", NULL},
                           (str[]){{date, strlen(date)}, trim(sys), {0}});
        w->tail = w->cap;
    }
    for (int i = 0, m = msgs + 1; !rc && i < n; i++, m = json_skip(d, m)) {
        if (i < i0) continue;
        if (dated && role_is(d, m, "tool"))
            return err_set(ZP_EUNSUP, "chat message %d: tool messages are not supported by the built-in "
                           "Llama-3.1 template; pass a raw prompt instead", i);
        if ((rc = text(w, d, json_get(d, m, "content"), &c)) || (rc = text(w, d, json_get(d, m, "role"), &role)))
            return rc;
        rc = put_parts(w, (const char *const[]){"<|start_header_id|>", "<|end_header_id|>\n\n", "<|eot_id|>", NULL},
                       (str[]){role, trim(c), {0}});
        w->tail = w->cap;
    }
    /* the original Llama-3 template adds the assistant header unconditionally */
    if (!rc && (gen || !strstr(tmpl, "add_generation_prompt"))) rc = put_str(w, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return rc;
}

static int deepseek_r1(wr *w, const tokenizer *t, const char *tmpl, const json_doc *d, int msgs, int n, bool gen) {
    str bos, c;
    int rc = bos_text(t, &bos), sys = -1;
    if (!rc) rc = put(w, bos.s, bos.n);
    for (int i = 0, m = msgs + 1; i < n; i++, m = json_skip(d, m)) /* the last system prompt wins */
        if (role_is(d, m, "system")) sys = m;
    if (!rc && sys >= 0) {
        rc = text(w, d, json_get(d, sys, "content"), &c);
        if (!rc) rc = put(w, c.s, c.n);
        w->tail = w->cap;
    }
    for (int i = 0, m = msgs + 1; !rc && i < n; i++, m = json_skip(d, m)) {
        if (role_is(d, m, "tool"))
            return err_set(ZP_EUNSUP, "chat message %d: tool messages are not supported by the built-in "
                           "DeepSeek-R1 template; pass a raw prompt instead", i);
        if (role_is(d, m, "system")) continue;
        if ((rc = text(w, d, json_get(d, m, "content"), &c))) return rc;
        if (role_is(d, m, "user")) {
            rc = put_parts(w, (const char *const[]){"<｜User｜>", "", NULL}, (str[]){c, {0}});
        } else {
            const char *close = rfind(c, "</think>");
            if (close) c = (str){close + 8, c.n - (size_t)(close + 8 - c.s)};
            rc = put_parts(w, (const char *const[]){"<｜Assistant｜>", "<｜end▁of▁sentence｜>", NULL}, (str[]){c, {0}});
        }
        w->tail = w->cap;
    }
    const char *end;
    if (!rc && gen)
        rc = put_str(w, tmpl_find(tmpl, "<｜Assistant｜><think>\n", &end) ? "<｜Assistant｜><think>\n" : "<｜Assistant｜>");
    return rc;
}

int chat_detect(const char *tmpl, chat_kind *kind) {
    if (!tmpl)
        return err_set(ZP_ENOTFOUND,
                       "the tokenizer has no chat_template (tokenizer_config.json, or a GGUF's "
                       "tokenizer.chat_template); pass a raw prompt instead");
    if (strstr(tmpl, "<｜User｜>") && strstr(tmpl, "<｜Assistant｜>")) {
        *kind = CHAT_DEEPSEEK_R1;
    } else if (strstr(tmpl, "<|start_header_id|>") && strstr(tmpl, "<|eot_id|>") && strstr(tmpl, "Cutting Knowledge Date")) {
        *kind = CHAT_LLAMA31;
    } else if (strstr(tmpl, "<|start_header_id|>") && strstr(tmpl, "<|eot_id|>") && !strstr(tmpl, "tools")) {
        *kind = CHAT_LLAMA3;
    } else if (strstr(tmpl, "<|im_start|>") && strstr(tmpl, "<|im_end|>")) {
        *kind = strstr(tmpl, "reasoning_content") || strstr(tmpl, "enable_thinking") ? CHAT_QWEN3 : CHAT_CHATML;
    } else {
        return err_set(ZP_EUNSUP, "unknown chat template (not ChatML/Qwen, Llama-3 or DeepSeek-R1); "
                       "zipage has no Jinja engine, so pass a raw prompt instead of chat messages");
    }
    return 0;
}

const char *chat_kind_name(chat_kind k) {
    switch (k) {
    case CHAT_CHATML: return "chatml";
    case CHAT_QWEN3: return "qwen3";
    case CHAT_LLAMA3: return "llama3";
    case CHAT_LLAMA31: return "llama3.1";
    case CHAT_DEEPSEEK_R1: return "deepseek-r1";
    }
    return "?";
}

int chat_render(const tokenizer *t, const json_doc *d, int messages, bool add_generation_prompt,
                bool enable_thinking, char *out, size_t cap, size_t *len) {
    *len = 0;
    chat_kind kind;
    int n, rc = chat_detect(tok_chat_template(t), &kind);
    if (!rc) rc = check_messages(d, messages, &n);
    if (rc) return rc;
    wr w = {out, cap, 0, cap};
    const char *tmpl = tok_chat_template(t);
    switch (kind) {
    case CHAT_CHATML:
    case CHAT_QWEN3:
        rc = chatml(&w, tmpl, d, messages, n, kind == CHAT_QWEN3, add_generation_prompt, enable_thinking);
        break;
    case CHAT_LLAMA3:
    case CHAT_LLAMA31: rc = llama3(&w, t, tmpl, d, messages, n, add_generation_prompt, kind == CHAT_LLAMA31); break;
    case CHAT_DEEPSEEK_R1: rc = deepseek_r1(&w, t, tmpl, d, messages, n, add_generation_prompt); break;
    }
    if (rc) return rc;
    if (w.len < cap) out[w.len] = 0;
    *len = w.len;
    return 0;
}
