/* bench_workload: see bench_workload.h. */
#include "tools/bench_workload.h"

#include <time.h>

double bench_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int bench_workload_conf(conf *cf, int *argc, char **argv) {
    conf_defaults(cf);
    cf->load_format = CONF_LOAD_FORMAT_DUMMY;
    cf->block_size = 256;
    cf->max_num_seqs = 0;   /* still 0 after parsing: one per request */
    cf->max_model_len = -1; /* still -1 after parsing: the longest request */
    return conf_from_args(cf, argc, argv);
}

void bench_workload_fit(conf *cf, int64_t requests, int64_t longest, int64_t budget) {
    if (cf->max_num_seqs == 0) cf->max_num_seqs = requests;
    if (cf->max_model_len < 0) cf->max_model_len = longest;
    if (cf->max_waiting < requests) cf->max_waiting = requests; /* all are queued at once */
    cf->max_cache_blocks_per_seq = budget;
    if (cf->max_kv_budget_blocks < budget) cf->max_kv_budget_blocks = budget;
}

void bench_prompt_ids(int32_t *ids, int64_t n, int64_t i, int32_t vocab) {
    uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
    for (int64_t k = 0; k < n; k++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[k] = (int32_t)(x % (uint64_t)vocab);
    }
}
