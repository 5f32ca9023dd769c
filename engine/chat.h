/* chat: chat templates without a Jinja engine.
 *
 * tokenizer_config.json's (or a GGUF file's tokenizer.chat_template) chat_template is
 * recognised by its markers and rendered by a built-in renderer that produces exactly what
 * transformers' apply_chat_template gives for plain {role, content} messages:
 *   ChatML   Qwen2 / Qwen2.5 / SmolLM2-Instruct (with the default system prompt their
 *            template carries)
 *   Qwen3    ChatML plus <think> handling: earlier assistant turns lose their reasoning,
 *            enable_thinking=false adds the empty think block, "-Thinking" templates open one
 *   Llama-3  <|start_header_id|> headers, BOS before the first message, trimmed contents
 *   Llama-3.1+ the same after a system block with "Cutting Knowledge Date" and today's date
 *   DeepSeek-R1-Distill  <｜User｜>/<｜Assistant｜> with the system prompt first
 * Anything else (including tool calls) is an error telling the user to pass a raw prompt.
 * The date of Llama-3.2 templates (strftime_now) is read from the clock, as transformers does.
 *
 * Messages are a JSON array (engine/json.h) of {"role": ..., "content": "..."} objects;
 * Qwen3 also reads "reasoning_content". No allocation: the prompt is written into the
 * caller's buffer (the message text is unescaped into its unused tail first). Reentrant.
 */
#ifndef ZP_CHAT_H
#define ZP_CHAT_H

#include "engine/json.h"
#include "engine/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    CHAT_CHATML, /* Qwen2, Qwen2.5, SmolLM2 and plain ChatML */
    CHAT_QWEN3,
    CHAT_LLAMA3,
    CHAT_LLAMA31, /* Llama-3.1/3.2/3.3: dated system block first */
    CHAT_DEEPSEEK_R1,
} chat_kind;

/* Recognises a chat template; ZP_EUNSUP (message says to pass raw prompts) when unknown,
 * ZP_ENOTFOUND when tmpl is NULL (no chat_template in tokenizer_config.json). */
int chat_detect(const char *tmpl, chat_kind *kind);
const char *chat_kind_name(chat_kind k);

/* Renders the messages array (token `messages` of d) with the tokenizer's chat template into
 * out[0..*len) (NUL-terminated when room is left). enable_thinking is the Qwen3 template
 * variable (ignored by templates without it). ZP_ELIMIT when out is too small, ZP_EINVAL
 * for malformed messages. The result is meant for tok_encode(add_special = false). */
int chat_render(const tokenizer *t, const json_doc *d, int messages, bool add_generation_prompt,
                bool enable_thinking, char *out, size_t cap, size_t *len);

#endif
