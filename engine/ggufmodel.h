/* ggufmodel: a GGUF file (engine/gguf.h) as a model: the llama, qwen2 and qwen3 architectures'
 * metadata mapped onto model_config, and their tensors onto model_weights, named and shaped as
 * the Hugging Face checkpoints they were converted from.
 *
 * What the conversion to GGUF changed is undone here, as transformers does when it loads the
 * same file: llama's q and k rows were permuted by llama.cpp's converter to interleaved rotary
 * pairs and are put back in Hugging Face's half-split order; quantized tensors (Q8_0, Q4_0,
 * Q4_1, Q4_K, Q5_K, Q6_K) are dequantized to f32 (transformers' default dtype, so the CPU
 * backend computes with exactly the values transformers uses; the CUDA backend converts them
 * to bf16 at upload like any f32 checkpoint). F32, F16 and BF16 tensors are used in place,
 * unless permuted. A rope_freqs tensor (Llama-3.1-style rope scaling as llama.cpp stores it)
 * becomes model_config.rope_factors. loader_config/loader_weights call these for a path whose
 * first bytes are GGUF's magic, so `--model FILE.gguf` works wherever `--model DIR` does.
 *
 * Memory: dequantized and permuted tensors live in the arena (4 bytes per weight for a
 * quantized one); the file stays mapped until loader_close (model_weights.maps[0]). Start-up
 * only; the result is read-only and may be shared by threads.
 */
#ifndef ZP_GGUFMODEL_H
#define ZP_GGUFMODEL_H

#include "arena/arena.h"
#include "engine/loader.h"

typedef struct gguf_file gguf_file;

/* The config (and, when w is not NULL, the weights, pointing into g's buffer where used in
 * place: g must outlive them) of an open file: what the two below do, and what the fuzzer
 * runs on files parsed from memory. */
int ggufmodel_parse(model_config *c, model_weights *w, arena *a, const gguf_file *g);

/* The loader's entry points for a path: open, parse, close (the weights keep the mapping,
 * model_weights.maps[0]); ggufmodel_weights checks the file still has config c. */
int ggufmodel_config(model_config *c, arena *a, const char *path);
int ggufmodel_weights(model_weights *w, const model_config *c, arena *a, const char *path);

#endif
