/* clang-format off: one key per line, as a table */
/* conf_keys: the one table of configuration keys (X-macro; included by conf.h and conf.c).
 * Columns: section, key, default, [min, max,] one-line doc. Keep docs under ~90 characters. */

/* [engine] */
CONF_STR(engine, model, "", "Hugging Face model directory (config.json, *.safetensors, tokenizer.json)")
CONF_ENUM(engine, load_format, "auto", "auto|dummy", "weights: auto = the model directory's; dummy = random, only config.json read (benchmarks)")
CONF_ENUM(engine, backend, "auto", "auto|cpu|cuda", "compute backend; auto = cuda when a GPU is usable, else cpu")
CONF_INT(engine, threads, 0, 0, 1024, "CPU backend worker threads; 0 = one per online core")
CONF_ENUM(engine, cpu_matmul_precision, "f32", "f32|bf16", "CPU matmul with bf16 weights: f32 = f32 activations (the reference); bf16 = activations rounded to bf16 (faster, less exact)")
CONF_ENUM(engine, cpu_isa, "auto", "auto|generic|avx2|avx512", "CPU matmul kernels; auto = the best this CPU runs (the last bits differ between them)")
CONF_INT(engine, tensor_parallel_size, 1, 1, 8, "GPUs one engine shards the model over (docs/TENSOR_PARALLEL.md): ranks on GPUs cuda_device + rank; > 1 needs backend=cuda")
CONF_INT(engine, host_arena_mb, 4096, 16, 1048576, "host arena reservation in MiB (pages are committed on first touch)")

/* [gpu] */
CONF_STR(gpu, kernel_cache_dir, "", "compiled-kernel cache; empty = $XDG_CACHE_HOME or ~/.cache, then zipage/kernels; 'off' = none")
CONF_STR(gpu, nvrtc_path, "", "libnvrtc file or directory to use; empty = search (ZIPAGE_NVRTC, sonames, CUDA and pip dirs)")
CONF_STR(gpu, cublaslt_path, "", "libcublasLt file or directory to use; empty = search (ZIPAGE_CUBLASLT, sonames, CUDA and pip dirs)")
CONF_STR(gpu, nccl_path, "", "libnccl file or directory to use (tensor parallelism); empty = search (ZIPAGE_NCCL, soname, CUDA and pip dirs)")
CONF_STR(gpu, cuda_driver_path, "", "libcuda file to use; empty = libcuda.so.1 on the loader path")
CONF_INT(gpu, cuda_device, 0, 0, 63, "ordinal of the GPU to use")
CONF_INT(gpu, attention_chunk, 512, 64, 1048576, "KV positions per split of GPU attention (fixed for every row: results do not depend on the batch)")
CONF_INT(gpu, attention_prefill_chunk, 4096, 64, 1048576, "KV positions per split of GPU attention for prompt rows (fixed for every row; at least attention_chunk)")
CONF_ENUM(gpu, attention_kernel, "mma", "simt|mma", "decode attention on the GPU: mma = tensor cores, simt = CUDA-core FMAs (every decode row takes the same one)")
CONF_ENUM(gpu, attention_prefill_kernel, "auto", "auto|mma|wgmma", "prompt-row attention on the GPU: wgmma = Hopper's warpgroup MMA (sm_90 only), mma = mma.sync (any GPU), auto = wgmma on sm_90, else mma (every prompt row takes the same one)")
CONF_BOOL(gpu, cuda_pdl, true, "programmatic dependent launch (sm_90+, driver CUDA 12.3+): each zipage kernel is launched while the kernel before it finishes and waits for its results on the GPU")
CONF_BOOL(gpu, cuda_graphs, true, "replay decode steps from CUDA graphs captured at start-up (per batch and context bucket)")
CONF_INT(gpu, gemm_workspace_mb, 256, 1, 4096, "cuBLASLt workspace in MiB, from the device arena (larger lets split-K algorithms serve large batches)")
CONF_BOOL(gpu, batch_invariant, true, "GEMMs whose rows do not depend on the batch: tokens are the same alone and together (CUDA: algorithms chosen at start-up by measurement and kept in kernel_cache_dir)")

/* [memory] */
CONF_ENUM(memory, kv_dtype, "auto", "auto|f32|bf16|f16", "KV cache element type; auto = f32 on cpu, bf16 on cuda")
CONF_INT(memory, kv_memory_mb, 0, 0, 16777216, "KV cache + query cache memory in MiB; 0 = auto (1024 on cpu, from free GPU memory on cuda)")
CONF_FLOAT(memory, gpu_memory_utilization, 0.9, 0.05, 0.99, "fraction of free GPU memory the device arena may take")
CONF_INT(memory, num_kv_blocks, 0, 0, 16777216, "exact number of KV blocks; 0 = as many as the memory plan allows")

/* [scheduler] */
CONF_INT(scheduler, block_size, 256, 1, 4096, "tokens per KV block (page)")
CONF_INT(scheduler, max_num_seqs, 64, 1, 65536, "most requests running at once")
CONF_INT(scheduler, max_num_batched_tokens, 2048, 1, 1048576, "most tokens (prefill chunks + decodes) in one step")
CONF_INT(scheduler, max_model_len, 0, 0, 16777216, "longest prompt + completion; 0 = the model's max_position_embeddings")
CONF_BOOL(scheduler, enable_prefix_caching, true, "share KV blocks of identical prompt prefixes")
CONF_INT(scheduler, max_waiting, 4096, 1, 1048576, "most requests queued before new ones are refused")

/* [compress] */
CONF_BOOL(compress, compress, true, "cap each request's KV at max_cache_blocks_per_seq+1 blocks by evicting tokens")
CONF_INT(compress, max_cache_blocks_per_seq, 8, 1, 65536, "M: blocks kept after a compression")
CONF_INT(compress, max_kv_budget_blocks, 64, 1, 65536, "largest per-request kv_budget_blocks a request may ask for")
CONF_INT(compress, query_cache_len, 16, 1, 4096, "recent queries kept per request for scoring (qcl)")
CONF_BOOL(compress, compress_after_prefill, true, "compress a prompt longer than the budget right after its prefill")
CONF_BOOL(compress, max_norm, false, "divide attention scores by their maximum per head")
CONF_BOOL(compress, use_global_score, false, "carry a decayed per-token score across compressions")
CONF_FLOAT(compress, global_score_decay, 0.8, 0.0, 1.0, "decay gamma of the carried score")
CONF_INT(compress, pooling_size, 5, 0, 255, "max-pooling width over positions (odd); 0 or 1 = off")
CONF_BOOL(compress, continuous_pooling, false, "pool at every compression, not only the first")
CONF_ENUM(compress, redundancy, "lightning", "lightning|raw|off", "key-redundancy penalty: within blocks, all pairs, or none")
CONF_FLOAT(compress, redundancy_lambda, 0.2, 0.0, 1.0, "weight of attention vs redundancy: S = l*S - (1-l)*R")
CONF_FLOAT(compress, redundancy_temperature, 0.4, 0.001, 100.0, "softmax temperature of the redundancy score")
CONF_FLOAT(compress, redundancy_threshold, 0.5, -1.0, 1.0, "cosine similarity above which the newest similar key is spared")
CONF_ENUM(compress, eviction, "score", "score|streaming|random|oracle", "which tokens a compression keeps: by score; baselines: first max(sink_len, protect) + newest, seeded random, or the attention recorded in a full-KV run (zipage bench accuracy only)")
CONF_INT(compress, eviction_seed, 0, 0, 2147483647, "seed of eviction=random (with the prompt, layer, head and compression count)")
CONF_INT(compress, sink_len, 0, 0, 65536, "first cached positions never evicted (attention sinks)")
CONF_INT(compress, protect_recent, 128, 0, 65536, "recent window never evicted: newest min(this, (budget - protected prefix) / 2) (qcl always)")
CONF_INT(compress, protect_prompt, 0, 0, 16777216, "leading prompt tokens never evicted, for requests that do not set protect_prompt")
CONF_INT(compress, protect_prompt_max, 0, 0, 16777216, "largest protect_prompt a request may set (+ query_cache_len < M * block_size)")
CONF_BOOL(compress, hybrid_scheduling, true, "admit requests beyond the query-cache slots to run on idle blocks while short (the first preemption victims); false = a compressing request starts only with a free slot")
CONF_INT(compress, compression_batch, 8, 1, 1024, "requests compressed together in one batch (the memory plan counts its scratch)")
CONF_BOOL(compress, async_compression, true, "run compression batches on the compression queue while the other requests keep decoding (GPU; the CPU runs them at once)")

/* [ipc] */
CONF_STR(ipc, ipc_name, "zipage", "shared-memory object name (/dev/shm/NAME)")
CONF_INT(ipc, ipc_mode, 0600, 0, 0777, "permission bits of the shared-memory object (octal)")
CONF_STR(ipc, ipc_group, "", "group owning the shared-memory object; empty = the engine's")
CONF_INT(ipc, max_clients, 16, 1, 1024, "client slots")
CONF_INT(ipc, max_inflight_per_client, 64, 1, 65536, "requests a client may have in flight")
CONF_INT(ipc, payload_bytes_per_client, 1048576, 4096, 1073741824, "payload area per client slot in bytes")
CONF_INT(ipc, spin_us, 50, 0, 1000000, "busy-wait before sleeping on a futex, in microseconds")
CONF_ENUM(ipc, sigterm, "finish", "finish|cancel", "on SIGTERM: finish running requests, or cancel them")
CONF_BOOL(ipc, ipc_admin_cancel, false, "let any client cancel other clients' requests (zipage-cli cancel)")
