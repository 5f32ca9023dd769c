/* test_tok_util: helpers shared by the tokenizer and chat tests (header-only, libc).
 * tt_write_mini() writes the small byte-level tokenizer.json that `zipage mkmodel` ships
 * (Qwen2 format: NFC, Qwen Split regex + ByteLevel, BPE over the 256 byte symbols, ids
 * 0..255 in byte order) into a fresh directory, with optional extras for the loader's
 * other paths. */
#ifndef ZP_TEST_TOK_UTIL_H
#define ZP_TEST_TOK_UTIL_H

#include "engine/json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TT_QWEN_RE                                                                                 \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "                         \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* UTF-8 of GPT-2's byte-level character for byte b. */
static inline int tt_bl_char(int b, char *o) {
    int n = 0;
    unsigned c = (unsigned)b;
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
        for (int x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
        c = 256u + (unsigned)n;
    }
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    o[0] = (char)(0xC0 | (c >> 6));
    o[1] = (char)(0x80 | (c & 0x3F));
    return 2;
}

static inline void tt_put_str(FILE *f, const char *s) {
    char buf[4096];
    long n = json_escape(s, strlen(s), buf, sizeof buf);
    fwrite(buf, 1, n > 0 ? (size_t)n : 0, f);
}

typedef struct {
    bool merges;        /* vocab 256 "Ġt", 257 "he", 258 "Ġthe" and their merges */
    bool legacy_merges; /* merges as "a b" strings */
    bool bos_template;  /* post_processor TemplateProcessing prepending <|endoftext|> */
    const char *chat_template; /* tokenizer_config.json chat_template, or NULL for no config */
    const char *bos, *eos;     /* tokenizer_config.json bos_token / eos_token */
} tt_opts;

/* Ids: 0..255 bytes, (+3 merged tokens), then <|endoftext|>, <|im_start|>, <|im_end|>,
 * <think>, </think>. Returns the directory (static buffer). */
static inline const char *tt_write_mini(const tt_opts *o) {
    static char dir[256];
    snprintf(dir, sizeof dir, "/tmp/zp_tok_XXXXXX");
    if (!mkdtemp(dir)) abort();
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) abort();
    fprintf(f, "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[");
    int base = o->merges ? 259 : 256;
    const char *added[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"};
    for (int i = 0; i < 5; i++)
        fprintf(f, "%s{\"id\":%d,\"content\":\"%s\",\"single_word\":false,\"lstrip\":false,"
                   "\"rstrip\":false,\"normalized\":false,\"special\":%s}",
                i ? "," : "", base + i, added[i], i < 3 ? "true" : "false");
    fprintf(f, "],\"normalizer\":{\"type\":\"NFC\"},\"pre_tokenizer\":{\"type\":\"Sequence\","
               "\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":");
    tt_put_str(f, TT_QWEN_RE);
    fprintf(f, "},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\","
               "\"add_prefix_space\":false,\"trim_offsets\":false,\"use_regex\":false}]},");
    if (o->bos_template)
        fprintf(f, "\"post_processor\":{\"type\":\"Sequence\",\"processors\":[{\"type\":\"ByteLevel\","
                   "\"add_prefix_space\":true,\"trim_offsets\":false,\"use_regex\":true},"
                   "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":"
                   "\"<|endoftext|>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],"
                   "\"pair\":[],\"special_tokens\":{\"<|endoftext|>\":{\"id\":\"<|endoftext|>\","
                   "\"ids\":[%d],\"tokens\":[\"<|endoftext|>\"]}}}]},", base);
    else
        fprintf(f, "\"post_processor\":null,");
    fprintf(f, "\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":false,"
               "\"use_regex\":false},\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,"
               "\"continuing_subword_prefix\":\"\",\"end_of_word_suffix\":\"\",\"fuse_unk\":false,"
               "\"byte_fallback\":false,\"ignore_merges\":false,\"vocab\":{");
    for (int b = 0; b < 256; b++) {
        char c[3] = {0};
        tt_bl_char(b, c);
        fputs(b ? "," : "", f);
        tt_put_str(f, c);
        fprintf(f, ":%d", b);
    }
    if (o->merges) fprintf(f, ",\"Ġt\":256,\"he\":257,\"Ġthe\":258");
    fprintf(f, "},\"merges\":[");
    if (o->merges && o->legacy_merges) fprintf(f, "\"h e\",\"Ġ t\",\"Ġt he\"");
    else if (o->merges) fprintf(f, "[\"h\",\"e\"],[\"Ġ\",\"t\"],[\"Ġt\",\"he\"]");
    fprintf(f, "]}}\n");
    fclose(f);
    if (o->chat_template || o->bos || o->eos) {
        snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
        f = fopen(path, "w");
        if (!f) abort();
        fprintf(f, "{\"add_bos_token\":false");
        if (o->bos) fprintf(f, ",\"bos_token\":\"%s\"", o->bos);
        if (o->eos) fprintf(f, ",\"eos_token\":{\"content\":\"%s\",\"special\":true}", o->eos);
        if (o->chat_template) {
            fprintf(f, ",\"chat_template\":");
            char buf[16384];
            long n = json_escape(o->chat_template, strlen(o->chat_template), buf, sizeof buf);
            fwrite(buf, 1, n > 0 ? (size_t)n : 0, f);
        }
        fprintf(f, "}\n");
        fclose(f);
    }
    return dir;
}

/* Removes a directory made by tt_write_mini. */
static inline void tt_remove(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    unlink(path);
    rmdir(dir);
}

#endif
