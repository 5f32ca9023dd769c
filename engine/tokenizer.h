/* tokenizer: Hugging Face-exact byte-level BPE tokenizer (Qwen2/Qwen2.5/Qwen3,
 * DeepSeek-R1-Distill-Qwen, Llama-3, SmolLM2 tokenizer.json files, and the "gpt2" tokenizers
 * of GGUF files as transformers builds them), decoder and streaming detokenizer.
 *
 * Encoding follows HF tokenizers step by step: added tokens are matched on the raw text
 * (leftmost-longest, special or not), the rest is NFC-normalized (when the file says so),
 * split by a hand-written scanner equivalent to the Qwen2/Llama-3 Split regex or GPT-2's
 * ByteLevel regex (with or without every number character split off first; Unicode classes
 * from engine/unicode_classes.h), byte-level mapped and merged by BPE (merge ranks in a hash
 * table, ignore_merges for Llama-3); add_special applies the post-processor
 * (TemplateProcessing, e.g. Llama-3.1's BOS; a GGUF's add_bos_token/add_eos_token). Anything
 * else is refused at load with "unsupported tokenizer: ..." (tokenizer.json) or ZP_EUNSUP
 * naming the GGUF key. Text must be valid UTF-8 (else ZP_EINVAL).
 *
 * Documented limits (pathological input only): a pre-token longer than TOK_MAX_PIECE bytes
 * is merged in TOK_MAX_PIECE-byte slices, and text that needs NFC changes is normalized and
 * scanned through a TOK_WINDOW-byte window, so a single pre-token over ~190 KiB inside such
 * text is cut at the window edge.
 *
 * Memory: everything lives in the arena given to tok_load / tok_load_gguf (tokenizer.json is
 * parsed in the arena's temporary side, released before return); encoding and decoding never
 * allocate. A piece cache (pre-token bytes -> ids) in the arena is reset when full.
 * Threading: one tokenizer is used from one thread (the engine's); tok_encode mutates the
 * piece cache and scratch buffers. The decode functions only read the tokenizer.
 */
#ifndef ZP_TOKENIZER_H
#define ZP_TOKENIZER_H

#include "arena/arena.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOK_MAX_PIECE 65536
#define TOK_WINDOW (256 * 1024)

typedef struct tokenizer tokenizer;

/* Loads the tokenizer of a model path, as --model takes it: a GGUF file's metadata
 * (tok_load_gguf; the file's directory and tensors cost a few KB of a's permanent side), else
 * DIR/tokenizer.json and, when present, DIR/tokenizer_config.json (bos/eos tokens,
 * chat_template). */
int tok_load(tokenizer **out, arena *a, const char *model);

/* Whether the model path carries a tokenizer (DIR/tokenizer.json; a GGUF file's
 * tokenizer.ggml.model key): what decides if text prompts can be taken. A GGUF file that
 * cannot be parsed gives 0 with err set. */
int tok_present(arena *a, const char *model, bool *present);

/* Builds the tokenizer a GGUF file's metadata describes (tokenizer.ggml.*, chat_template) the
 * way transformers does when it loads the file (docs/TOKENIZER.md, "Tokenizers from GGUF"):
 * tokenizer.ggml.model "gpt2" only (else ZP_EUNSUP), pre-tokenizers of Llama-3, Qwen2, GPT-2
 * and SmolLM2 (else ZP_EUNSUP naming tokenizer.ggml.pre). Nothing is kept from g: it may be
 * closed afterwards. */
typedef struct gguf_file gguf_file;
int tok_load_gguf(tokenizer **out, arena *a, const gguf_file *g);

/* Encodes text[0..len) into ids[0..*n). add_special applies the post-processor like HF's
 * add_special_tokens=True. ZP_ELIMIT when cap is too small (ids then hold a prefix),
 * ZP_EINVAL for invalid UTF-8. */
int tok_encode(tokenizer *t, const char *text, size_t len, bool add_special, int32_t *ids,
               size_t cap, size_t *n);

/* Decodes ids into out[0..*len) (NUL-terminated when room is left), like HF decode with
 * the ByteLevel decoder: invalid UTF-8 becomes U+FFFD; skip_special drops special added
 * tokens. ZP_EINVAL for an id outside the vocabulary, ZP_ELIMIT when out is too small. */
int tok_decode(const tokenizer *t, const int32_t *ids, size_t n, bool skip_special, char *out,
               size_t cap, size_t *len);

/* Streaming detokenizer: caller-owned, fixed size. Each push emits only complete UTF-8 and
 * holds back a partial sequence (at most 3 bytes) until later tokens complete it; bytes that
 * can no longer form a character become U+FFFD, as in tok_decode. The concatenation of all
 * pushes and the final flush equals tok_decode of the same ids. With cap >=
 * tok_stream_cap(t) a push never fails for lack of room. */
typedef struct tok_stream {
    uint8_t pend[4];
    uint8_t npend;
    bool skip_special;
} tok_stream;

void tok_stream_init(tok_stream *st, bool skip_special);
int tok_stream_push(const tokenizer *t, tok_stream *st, int32_t id, char *out, size_t cap,
                    size_t *len);
/* Emits U+FFFD for a sequence left incomplete at the end, and resets the stream. */
int tok_stream_flush(tok_stream *st, char *out, size_t cap, size_t *len);
size_t tok_stream_cap(const tokenizer *t);

/* Ids the tokenizer can produce are 0 .. tok_vocab_size()-1 (base vocabulary + added
 * tokens); a model may have more embedding rows, which must never be sampled. */
int32_t tok_vocab_size(const tokenizer *t);
/* Id of a token given by its text (added token content or vocabulary entry), or -1. */
int32_t tok_token_id(const tokenizer *t, const char *text);
bool tok_is_special(const tokenizer *t, int32_t id);
/* The bytes an id decodes to (not NUL-terminated); ZP_EINVAL for an unknown id. */
int tok_token_bytes(const tokenizer *t, int32_t id, const char **s, size_t *len);
/* bos_token / eos_token of tokenizer_config.json (a GGUF's bos/eos_token_id), or -1 when absent. */
int32_t tok_bos_id(const tokenizer *t);
int32_t tok_eos_id(const tokenizer *t);
/* tokenizer_config.json's chat_template (the "default" one of a list; a GGUF's
 * tokenizer.chat_template), or NULL. */
const char *tok_chat_template(const tokenizer *t);

#endif
