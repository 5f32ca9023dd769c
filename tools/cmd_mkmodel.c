/* zipage mkmodel: writes a small random Hugging Face model directory (config.json,
 * generation_config.json, model.safetensors or shards + index, tokenizer.json,
 * tokenizer_config.json) that transformers loads unchanged, for tests and demos.
 *
 * Determinism: every weight comes from one splitmix64 stream seeded by --seed and consumed
 * in a fixed tensor order, Box-Muller for normals, so the same arguments give the same bytes.
 * The tokenizer is byte-level BPE in Qwen2's format with no merges: ids 0..255 are the 256
 * GPT-2 byte symbols in GPT-2's order (as in Qwen2's vocabulary), then the added tokens.
 *
 * Runs before any engine start-up, so plain stdio and malloc are used here.
 */
#include "arena/err.h"
#include "drv/dtype.h"
#include "engine/json.h"
#include "tools/cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct mk_args {
    const char *arch, *out;
    int64_t hidden, layers, heads, kv_heads, head_dim, inter, vocab, seed, max_pos, shards;
    bool f32, tie;
} mk_args;

typedef struct mk_tensor {
    char name[96];
    int64_t shape[2];
    int ndim;
    enum { INIT_LINEAR, INIT_EMBED, INIT_NORM, INIT_BIAS } init;
    int file;
    uint64_t off, bytes;
} mk_tensor;

/* ---- random numbers ---- */

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_normal(uint64_t *s) {
    double u1 = ((double)(rng_next(s) >> 11) + 1.0) * (1.0 / 9007199254740993.0); /* (0, 1] */
    double u2 = (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* ---- files ---- */

static int mk_open(FILE **f, const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    *f = fopen(path, "wb");
    if (!*f) return err_set(ZP_EIO, "%s: %s", path, strerror(errno));
    return 0;
}

static int mk_close(FILE *f, const char *dir, const char *name) {
    if (ferror(f) | fclose(f)) return err_set(ZP_EIO, "%s/%s: write failed", dir, name);
    return 0;
}

/* Writes s as a JSON string literal. */
static void put_json_str(FILE *f, const char *s) {
    size_t n = strlen(s), cap = n * 6 + 3;
    char *buf = malloc(cap);
    if (!buf) abort();
    long l = json_escape(s, n, buf, cap);
    fwrite(buf, 1, (size_t)l, f);
    free(buf);
}

/* ---- config ---- */

static bool is_llama(const mk_args *a) {
    return !strcmp(a->arch, "llama");
}
static bool is_qwen3(const mk_args *a) {
    return !strcmp(a->arch, "qwen3");
}
static bool is_qwen2(const mk_args *a) {
    return !strcmp(a->arch, "qwen2");
}

/* Token ids shared by config, generation config and tokenizer. */
enum { TOK_BASE = 256 };
static const char *const qwen_added[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>",
                                         "</think>"};
static const bool qwen_special[] = {true, true, true, false, false};
static const char *const llama_added[] = {"<|begin_of_text|>", "<|end_of_text|>",
                                          "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
#define N_ADDED 5

static int write_config(const mk_args *a) {
    FILE *f;
    int rc = mk_open(&f, a->out, "config.json");
    if (rc) return rc;
    const char *arch = is_llama(a)   ? "LlamaForCausalLM"
                       : is_qwen3(a) ? "Qwen3ForCausalLM"
                                     : "Qwen2ForCausalLM";
    fprintf(f, "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n", arch, a->arch);
    if (!is_qwen2(a)) fprintf(f, "  \"attention_bias\": false,\n");
    fprintf(f, "  \"attention_dropout\": 0.0,\n");
    if (is_llama(a))
        fprintf(f, "  \"bos_token_id\": %d,\n  \"eos_token_id\": [%d, %d],\n", TOK_BASE,
                TOK_BASE + 1, TOK_BASE + 4);
    else
        fprintf(f, "  \"bos_token_id\": %d,\n  \"eos_token_id\": %d,\n", TOK_BASE, TOK_BASE + 2);
    if (!is_qwen2(a)) fprintf(f, "  \"head_dim\": %lld,\n", (long long)a->head_dim);
    fprintf(
        f,
        "  \"hidden_act\": \"silu\",\n  \"hidden_size\": %lld,\n  \"initializer_range\": 0.02,\n"
        "  \"intermediate_size\": %lld,\n  \"max_position_embeddings\": %lld,\n",
        (long long)a->hidden, (long long)a->inter, (long long)a->max_pos);
    if (is_llama(a))
        fprintf(f, "  \"mlp_bias\": false,\n  \"pretraining_tp\": 1,\n");
    else
        fprintf(f,
                "  \"max_window_layers\": %lld,\n  \"sliding_window\": null,\n  "
                "\"use_sliding_window\": false,\n",
                (long long)a->layers);
    fprintf(f,
            "  \"num_attention_heads\": %lld,\n  \"num_hidden_layers\": %lld,\n"
            "  \"num_key_value_heads\": %lld,\n  \"rms_norm_eps\": 1e-06,\n",
            (long long)a->heads, (long long)a->layers, (long long)a->kv_heads);
    if (is_llama(a))
        fprintf(f, "  \"rope_scaling\": {\"factor\": 8.0, \"high_freq_factor\": 4.0, "
                   "\"low_freq_factor\": 1.0, "
                   "\"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"},\n"
                   "  \"rope_theta\": 500000.0,\n");
    else
        fprintf(f, "  \"rope_scaling\": null,\n  \"rope_theta\": 10000.0,\n");
    fprintf(f,
            "  \"tie_word_embeddings\": %s,\n  \"torch_dtype\": \"%s\",\n  "
            "\"transformers_version\": \"4.51.0\",\n"
            "  \"use_cache\": true,\n  \"vocab_size\": %lld\n}\n",
            a->tie ? "true" : "false", a->f32 ? "float32" : "bfloat16", (long long)a->vocab);
    if ((rc = mk_close(f, a->out, "config.json"))) return rc;

    if ((rc = mk_open(&f, a->out, "generation_config.json"))) return rc;
    if (is_llama(a))
        fprintf(
            f,
            "{\n  \"bos_token_id\": %d,\n  \"do_sample\": false,\n  \"eos_token_id\": [%d, %d],\n",
            TOK_BASE, TOK_BASE + 1, TOK_BASE + 4);
    else
        fprintf(
            f,
            "{\n  \"bos_token_id\": %d,\n  \"do_sample\": false,\n  \"eos_token_id\": [%d, %d],\n",
            TOK_BASE, TOK_BASE + 2, TOK_BASE);
    fprintf(f, "  \"transformers_version\": \"4.51.0\"\n}\n");
    return mk_close(f, a->out, "generation_config.json");
}

/* ---- tokenizer ---- */

/* GPT-2's byte -> symbol map: printable Latin-1 bytes stand for themselves, the rest are
 * shifted to U+0100 onwards; order[i] is the byte whose symbol has id i. */
static void byte_symbols(uint32_t sym[256], int order[256]) {
    int n = 0, extra = 0;
    bool printable[256] = {false};
    for (int b = 0; b < 256; b++)
        printable[b] = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    for (int b = 0; b < 256; b++)
        if (printable[b]) sym[b] = (uint32_t)b, order[n++] = b;
    for (int b = 0; b < 256; b++)
        if (!printable[b]) sym[b] = 256u + (uint32_t)extra++, order[n++] = b;
}

static void utf8(uint32_t cp, char *out) {
    if (cp < 0x80)
        out[0] = (char)cp, out[1] = 0;
    else
        out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
}

static const char qwen_regex[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
                                 "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                                 "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const char qwen_template[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

static const char llama_template[] =
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | "
    "trim + "
    "'<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

static int write_tokenizer(const mk_args *a) {
    const char *const *added = is_llama(a) ? llama_added : qwen_added;
    FILE *f;
    int rc = mk_open(&f, a->out, "tokenizer.json");
    if (rc) return rc;
    fprintf(f, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  "
               "\"added_tokens\": [\n");
    for (int i = 0; i < N_ADDED; i++) {
        bool special = is_llama(a) || qwen_special[i];
        fprintf(f, "    {\"id\": %d, \"content\": ", TOK_BASE + i);
        put_json_str(f, added[i]);
        fprintf(f,
                ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": "
                "false, "
                "\"special\": %s}%s\n",
                special ? "true" : "false", i + 1 < N_ADDED ? "," : "");
    }
    fprintf(f, "  ],\n  \"normalizer\": {\"type\": \"NFC\"},\n"
               "  \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [\n"
               "    {\"type\": \"Split\", \"pattern\": {\"Regex\": ");
    put_json_str(f, qwen_regex);
    fprintf(
        f,
        "}, \"behavior\": \"Isolated\", \"invert\": false},\n"
        "    {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": false, "
        "\"use_regex\": false}\n"
        "  ]},\n  \"post_processor\": null,\n"
        "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": "
        "false, "
        "\"use_regex\": false},\n"
        "  \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, "
        "\"continuing_subword_prefix\": \"\", \"end_of_word_suffix\": \"\", \"fuse_unk\": false, "
        "\"byte_fallback\": false, \"ignore_merges\": false,\n    \"vocab\": {");
    uint32_t sym[256];
    int order[256];
    byte_symbols(sym, order);
    for (int i = 0; i < 256; i++) {
        char s[4];
        utf8(sym[order[i]], s);
        fprintf(f, "%s", i ? ", " : "");
        put_json_str(f, s);
        fprintf(f, ": %d", i);
    }
    fprintf(f, "},\n    \"merges\": []\n  }\n}\n");
    if ((rc = mk_close(f, a->out, "tokenizer.json"))) return rc;

    if ((rc = mk_open(&f, a->out, "tokenizer_config.json"))) return rc;
    fprintf(f, "{\n  \"add_bos_token\": false,\n  \"add_prefix_space\": false,\n  "
               "\"added_tokens_decoder\": {\n");
    for (int i = 0; i < N_ADDED; i++) {
        bool special = is_llama(a) || qwen_special[i];
        fprintf(f, "    \"%d\": {\"content\": ", TOK_BASE + i);
        put_json_str(f, added[i]);
        fprintf(f,
                ", \"lstrip\": false, \"normalized\": false, \"rstrip\": false, \"single_word\": "
                "false, "
                "\"special\": %s}%s\n",
                special ? "true" : "false", i + 1 < N_ADDED ? "," : "");
    }
    fprintf(f, "  },\n  \"chat_template\": ");
    put_json_str(f, is_llama(a) ? llama_template : qwen_template);
    if (is_llama(a))
        fprintf(f, ",\n  \"bos_token\": \"<|begin_of_text|>\",\n  \"eos_token\": \"<|eot_id|>\",\n"
                   "  \"pad_token\": null,\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n");
    else
        fprintf(
            f,
            ",\n  \"additional_special_tokens\": [\"<|im_start|>\", \"<|im_end|>\"],\n"
            "  \"bos_token\": null,\n  \"eos_token\": \"<|im_end|>\",\n  \"errors\": \"replace\",\n"
            "  \"pad_token\": \"<|endoftext|>\",\n  \"split_special_tokens\": false,\n"
            "  \"tokenizer_class\": \"Qwen2Tokenizer\",\n  \"unk_token\": null,\n");
    fprintf(f, "  \"clean_up_tokenization_spaces\": false,\n  \"model_max_length\": %lld\n}\n",
            (long long)a->max_pos);
    return mk_close(f, a->out, "tokenizer_config.json");
}

/* ---- weights ---- */

static void add(mk_tensor *t, int *n, const char *name, int64_t d0, int64_t d1, int init) {
    mk_tensor *x = &t[(*n)++];
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", name);
    x->shape[0] = d0;
    x->shape[1] = d1;
    x->ndim = d1 ? 2 : 1;
    x->init = init;
}

static int list_tensors(const mk_args *a, mk_tensor *t) {
    int n = 0;
    const int64_t H = a->hidden, D = a->head_dim, Q = a->heads * D, KV = a->kv_heads * D,
                  I = a->inter;
    add(t, &n, "model.embed_tokens.weight", a->vocab, H, INIT_EMBED);
    for (int64_t l = 0; l < a->layers; l++) {
        char p[96];
#define L(suffix, d0, d1, init)                                                                    \
    snprintf(p, sizeof p, "model.layers.%lld.%s", (long long)l, suffix), add(t, &n, p, d0, d1, init)
        L("input_layernorm.weight", H, 0, INIT_NORM);
        L("self_attn.q_proj.weight", Q, H, INIT_LINEAR);
        L("self_attn.k_proj.weight", KV, H, INIT_LINEAR);
        L("self_attn.v_proj.weight", KV, H, INIT_LINEAR);
        if (is_qwen2(a)) {
            L("self_attn.q_proj.bias", Q, 0, INIT_BIAS);
            L("self_attn.k_proj.bias", KV, 0, INIT_BIAS);
            L("self_attn.v_proj.bias", KV, 0, INIT_BIAS);
        }
        if (is_qwen3(a)) {
            L("self_attn.q_norm.weight", D, 0, INIT_NORM);
            L("self_attn.k_norm.weight", D, 0, INIT_NORM);
        }
        L("self_attn.o_proj.weight", H, Q, INIT_LINEAR);
        L("post_attention_layernorm.weight", H, 0, INIT_NORM);
        L("mlp.gate_proj.weight", I, H, INIT_LINEAR);
        L("mlp.up_proj.weight", I, H, INIT_LINEAR);
        L("mlp.down_proj.weight", H, I, INIT_LINEAR);
#undef L
    }
    add(t, &n, "model.norm.weight", H, 0, INIT_NORM);
    if (!a->tie) add(t, &n, "lm_head.weight", a->vocab, H, INIT_LINEAR);
    return n;
}

static void shard_name(char *out, size_t cap, int i, int n) {
    if (n == 1)
        snprintf(out, cap, "model.safetensors");
    else
        snprintf(out, cap, "model-%05d-of-%05d.safetensors", i + 1, n);
}

/* Header JSON for the tensors of one file, padded with spaces to a multiple of 8 bytes so
 * that the data section (and every tensor in it) stays aligned, as safetensors does. */
static char *st_header(const mk_tensor *t, int n, int file, const char *dt, size_t *len) {
    size_t cap = 256 + (size_t)n * 192, o = 0;
    char *h = malloc(cap);
    if (!h) abort();
    o += (size_t)snprintf(h + o, cap - o, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        if (t[i].file != file) continue;
        o += (size_t)snprintf(h + o, cap - o, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld",
                              t[i].name, dt, (long long)t[i].shape[0]);
        if (t[i].ndim == 2)
            o += (size_t)snprintf(h + o, cap - o, ",%lld", (long long)t[i].shape[1]);
        o += (size_t)snprintf(h + o, cap - o, "],\"data_offsets\":[%llu,%llu]}",
                              (unsigned long long)t[i].off,
                              (unsigned long long)(t[i].off + t[i].bytes));
    }
    h[o++] = '}';
    while (o % 8)
        h[o++] = ' ';
    *len = o;
    return h;
}

static int write_weights(const mk_args *a) {
    mk_tensor *t = calloc((size_t)(a->layers * 16 + 4), sizeof *t);
    if (!t) return err_set(ZP_ENOMEM, "out of memory");
    int n = list_tensors(a, t), rc = 0;
    size_t es = a->f32 ? 4 : 2;
    uint64_t total = 0;
    for (int i = 0; i < n; i++)
        t[i].bytes = (uint64_t)(t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1)) * es,
        total += t[i].bytes;
    /* Shards split the tensor list into runs of about equal counts, in order. */
    int nsh = a->shards < n ? (int)a->shards : n;
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        t[i].file = (int)((int64_t)i * nsh / n);
        if (i && t[i].file != t[i - 1].file) off = 0;
        t[i].off = off;
        off += t[i].bytes;
    }
    /* A directory written before in the other layout must not keep a stale entry point. */
    char stale[4096];
    snprintf(stale, sizeof stale, "%s/%s", a->out,
             nsh > 1 ? "model.safetensors" : "model.safetensors.index.json");
    if (unlink(stale) && errno != ENOENT) {
        free(t);
        return err_set(ZP_EIO, "%s: %s", stale, strerror(errno));
    }
    const char *dt = a->f32 ? "F32" : "BF16";
    uint64_t rng = (uint64_t)a->seed;
    for (int fi = 0; fi < nsh && !rc; fi++) {
        char name[64];
        shard_name(name, sizeof name, fi, nsh);
        size_t hlen;
        char *h = st_header(t, n, fi, dt, &hlen);
        FILE *f;
        if ((rc = mk_open(&f, a->out, name))) {
            free(h);
            break;
        }
        uint8_t len8[8];
        for (int b = 0; b < 8; b++)
            len8[b] = (uint8_t)((uint64_t)hlen >> (8 * b));
        fwrite(len8, 1, 8, f);
        fwrite(h, 1, hlen, f);
        free(h);
        for (int i = 0; i < n; i++) {
            if (t[i].file != fi) continue;
            double in = t[i].ndim == 2 ? (double)t[i].shape[1] : 1.0;
            for (uint64_t k = 0; k < t[i].bytes / es; k++) {
                double g = rng_normal(&rng);
                float v = (float)(t[i].init == INIT_LINEAR  ? g / sqrt(in)
                                  : t[i].init == INIT_EMBED ? g
                                  : t[i].init == INIT_NORM  ? 1.0 + 0.1 * g
                                                            : 0.1 * g);
                if (a->f32)
                    fwrite(&v, 4, 1, f);
                else {
                    uint16_t b = zp_f32_to_bf16(v);
                    uint8_t le[2] = {(uint8_t)b, (uint8_t)(b >> 8)};
                    fwrite(le, 1, 2, f);
                }
            }
        }
        rc = mk_close(f, a->out, name);
    }
    if (!rc && nsh > 1) {
        FILE *f;
        if (!(rc = mk_open(&f, a->out, "model.safetensors.index.json"))) {
            fprintf(f, "{\n  \"metadata\": {\"total_size\": %llu},\n  \"weight_map\": {\n",
                    (unsigned long long)total);
            for (int i = 0; i < n; i++) {
                char name[64];
                shard_name(name, sizeof name, t[i].file, nsh);
                fprintf(f, "    \"%s\": \"%s\"%s\n", t[i].name, name, i + 1 < n ? "," : "");
            }
            fprintf(f, "  }\n}\n");
            rc = mk_close(f, a->out, "model.safetensors.index.json");
        }
    }
    free(t);
    return rc;
}

/* ---- arguments ---- */

static int parse_args(mk_args *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->max_pos = 32768;
    a->shards = 1;
    a->seed = -1;
    a->head_dim = 0;
    cli c;
    cli_init(&c, "mkmodel", argc, argv);
    const char *o, *s;
    int rc = 0;
    while (!rc && (o = cli_next(&c))) {
        if (!strcmp(o, "--arch"))
            rc = cli_str(&c, &a->arch);
        else if (!strcmp(o, "--out"))
            rc = cli_str(&c, &a->out);
        else if (!strcmp(o, "--hidden"))
            rc = cli_int(&c, &a->hidden, 2, 65536);
        else if (!strcmp(o, "--layers"))
            rc = cli_int(&c, &a->layers, 1, 256);
        else if (!strcmp(o, "--heads"))
            rc = cli_int(&c, &a->heads, 1, 1024);
        else if (!strcmp(o, "--kv-heads"))
            rc = cli_int(&c, &a->kv_heads, 1, 1024);
        else if (!strcmp(o, "--head-dim"))
            rc = cli_int(&c, &a->head_dim, 2, 1024);
        else if (!strcmp(o, "--intermediate"))
            rc = cli_int(&c, &a->inter, 1, 262144);
        else if (!strcmp(o, "--vocab"))
            rc = cli_int(&c, &a->vocab, 1, 1 << 20);
        else if (!strcmp(o, "--seed"))
            rc = cli_int(&c, &a->seed, 0, INT64_MAX);
        else if (!strcmp(o, "--max-pos"))
            rc = cli_int(&c, &a->max_pos, 1, 1 << 24);
        else if (!strcmp(o, "--shards"))
            rc = cli_int(&c, &a->shards, 1, 64);
        else if (!strcmp(o, "--tie"))
            a->tie = true;
        else if (!strcmp(o, "--dtype")) {
            if (!(rc = cli_str(&c, &s))) {
                if (!strcmp(s, "f32"))
                    a->f32 = true;
                else if (strcmp(s, "bf16"))
                    rc = err_set(ZP_EINVAL, "--dtype: '%s' is not bf16 or f32", s);
            }
        } else
            rc = cli_unknown(&c, o);
    }
    if (rc) return rc;
    if (!a->arch) return err_set(ZP_EINVAL, "--arch is required (qwen3, qwen2 or llama)");
    if (!is_qwen3(a) && !is_qwen2(a) && !is_llama(a))
        return err_set(ZP_EINVAL, "--arch: '%s' is not qwen3, qwen2 or llama", a->arch);
    static const char *const req[] = {"--hidden",       "--layers", "--heads",
                                      "--intermediate", "--vocab",  "--seed"};
    const int64_t *val[] = {&a->hidden, &a->layers, &a->heads, &a->inter, &a->vocab, &a->seed};
    for (int i = 0; i < 6; i++)
        if (*val[i] <= 0 && !(i == 5 && *val[i] == 0))
            return err_set(ZP_EINVAL, "%s is required", req[i]);
    if (!a->out) return err_set(ZP_EINVAL, "--out is required");
    if (!a->kv_heads) a->kv_heads = a->heads;
    if (a->heads % a->kv_heads)
        return err_set(ZP_EINVAL, "--heads %lld is not a multiple of --kv-heads %lld",
                       (long long)a->heads, (long long)a->kv_heads);
    if (!a->head_dim) {
        if (a->hidden % a->heads)
            return err_set(ZP_EINVAL,
                           "--hidden %lld is not a multiple of --heads %lld (or give --head-dim)",
                           (long long)a->hidden, (long long)a->heads);
        a->head_dim = a->hidden / a->heads;
    }
    if (a->head_dim % 2)
        return err_set(ZP_EINVAL, "--head-dim %lld is odd (rotary needs pairs)",
                       (long long)a->head_dim);
    if (is_qwen2(a) && a->head_dim * a->heads != a->hidden)
        return err_set(ZP_EINVAL,
                       "--head-dim: qwen2 derives head_dim = hidden/heads = %lld, got %lld",
                       (long long)(a->hidden / a->heads), (long long)a->head_dim);
    if (a->vocab < TOK_BASE + N_ADDED)
        return err_set(ZP_EINVAL, "--vocab %lld is smaller than the tokenizer's %d ids",
                       (long long)a->vocab, TOK_BASE + N_ADDED);
    if (a->heads * a->head_dim > 65536)
        return err_set(ZP_EINVAL, "--heads * --head-dim is over 65536");
    return 0;
}

int cmd_mkmodel(int argc, char **argv) {
    conf cf;
    int rc = cli_conf(&cf, &argc, argv);
    if (rc) return cli_fail("mkmodel", rc);
    mk_args a;
    rc = parse_args(&a, argc, argv);
    if (rc) return cli_fail("mkmodel", rc);
    if (mkdir(a.out, 0755) && errno != EEXIST)
        return cli_fail("mkmodel", err_set(ZP_EIO, "%s: %s", a.out, strerror(errno)));
    if ((rc = write_config(&a)) || (rc = write_tokenizer(&a)) || (rc = write_weights(&a)))
        return cli_fail("mkmodel", rc);
    return 0;
}
