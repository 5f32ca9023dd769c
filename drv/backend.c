/* backend: the factory (see backend.h): which backend runs, and why; and the argument checks
 * every backend shares.
 *
 * `auto` tries CUDA first and falls back to the CPU, keeping CUDA's reason in one line; an
 * explicit `cuda` that cannot start is the caller's error. Start-up only; no state.
 */
#include "drv/backend.h"
#include "drv/cuda_be.h"

#include "arena/err.h"

#include <stdio.h>
#include <string.h>

int be_shape_max_k(const be_shape *s) {
    int k = s->hidden;
    if (s->heads * s->head_dim > k) k = s->heads * s->head_dim;
    if (s->intermediate > k) k = s->intermediate;
    return k;
}

int be_check_queue(const backend *be, int q) {
    if (q < 0 || q >= BE_QUEUES)
        return err_set(ZP_EINVAL, "%s backend: no queue %d (0 compute, 1 compression)", be->name,
                       q);
    return 0;
}

int be_check_event(const backend *be, int ev) {
    if (ev < 0 || ev >= BE_EVENTS)
        return err_set(ZP_EINVAL, "%s backend: no event %d (the pool has ids 0..%d)", be->name, ev,
                       BE_EVENTS - 1);
    return 0;
}

int backend_create(backend **out, const be_config *c, const be_shape *s, char *why,
                   size_t why_len) {
    *out = NULL;
    if (c->kind != BE_CPU) {
        int rc = cuda_backend_create(out, c, s);
        if (!rc) {
            snprintf(why, why_len, "cuda: %s", cuda_backend_describe(*out));
            return 0;
        }
        if (c->kind == BE_CUDA) return rc;
        snprintf(why, why_len, "cpu (no GPU backend: %s)", err_msg());
    } else {
        snprintf(why, why_len, "cpu (backend=cpu)");
    }
    int rc = cpu_backend_create(out, c->threads, be_shape_max_k(s), c->cpu_isa, c->cpu_prec);
    if (!rc) {
        size_t n = strlen(why);
        snprintf(why + n, why_len - n, ", %s", cpu_backend_describe(*out));
    }
    return rc;
}
