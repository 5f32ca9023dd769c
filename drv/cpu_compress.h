/* cpu_compress: the CPU backend's compression ops (drv/backend.h: qcache_store, cmp_score,
 * cmp_redundancy, cmp_select, cmp_compact), registered in cpu.c's op table. Semantics are the
 * contract comments in backend.h and docs/COMPRESSION.md ("The compression ops").
 *
 * Each op is split over (layer, job, kv head) rows (qcache_store: over token rows) with
 * cpu_parallel;
 * one row is computed by one thread in a fixed order, so results are bit-identical for any
 * thread count. No allocation: per-row state lives on the stack (bounded below) or in the
 * caller's `work` scratch.
 *
 * Bounds (asserted): head dim <= CPU_CMP_MAX_DIM, (hq / hkv) * qcl <= CPU_CMP_MAX_GQ,
 * pool <= CPU_CMP_MAX_POOL.
 *
 * Caller rules beyond backend.h: within one cmp_score call, no two jobs may share a source
 * block (C := S is written back into the source blocks); in cmp_compact, a dst block that is
 * also a source block of the job must sit at the same index in both tables (dst == src, or
 * fresh blocks followed by the job's own blocks in place), so no unread source is overwritten
 * (at a lower dst index, target j would overwrite source position j + bs * shift, which may
 * be read later).
 */
#ifndef ZP_CPU_COMPRESS_H
#define ZP_CPU_COMPRESS_H

#include "drv/backend.h"

#define CPU_CMP_MAX_DIM  512
#define CPU_CMP_MAX_GQ   1024
#define CPU_CMP_MAX_POOL 257

/* The bounds above, as an error naming the configuration key to change. */
int cpu_cmp_check(backend *be, const be_cparams *p);
void cpu_qcache_store(backend *be, be_ptr qc, be_ptr q, const be_batch *b, be_ptr tok_qslot,
                      int layer, const be_cparams *p);
void cpu_cmp_score(backend *be, be_ptr scores, be_ptr qc, be_ptr kc, be_ptr cc, zp_dtype kvt,
                   const be_cjobs *j, int layer0, int n_layers, const be_cparams *p);
void cpu_cmp_redundancy(backend *be, be_ptr scores, be_ptr kc, zp_dtype kvt, be_ptr work,
                        const be_cjobs *j, int layer0, int n_layers, const be_cparams *p);
void cpu_cmp_select(backend *be, be_ptr keep, be_ptr scores, be_ptr work, const be_cjobs *j,
                    int n_layers, const be_cparams *p);
void cpu_cmp_compact(backend *be, be_ptr kc, be_ptr vc, be_ptr cc, zp_dtype kvt, be_ptr keep,
                     const be_cjobs *j, int layer0, int n_layers, const be_cparams *p);

#endif
