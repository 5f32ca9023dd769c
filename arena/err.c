/* err: per-thread error message buffer (see err.h). */
#include "arena/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char err_buf[1024];

int err_set(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return code;
}

int err_prefix(int code, const char *fmt, ...) {
    char old[sizeof err_buf];
    memcpy(old, err_buf, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof err_buf)
        snprintf(err_buf + n, sizeof err_buf - (size_t)n, ": %s", old);
    return code;
}

const char *err_msg(void) { return err_buf[0] ? err_buf : "no error message"; }

const char *err_name(int code) {
    switch (code) {
    case ZP_OK: return "ok";
    case ZP_EINVAL: return "invalid argument";
    case ZP_ENOMEM: return "out of memory";
    case ZP_EIO: return "i/o error";
    case ZP_EFORMAT: return "bad format";
    case ZP_EUNSUP: return "unsupported";
    case ZP_ELIMIT: return "limit reached";
    case ZP_ENOTFOUND: return "not found";
    case ZP_EBACKEND: return "backend error";
    case ZP_EBUSY: return "busy";
    case ZP_ESTATE: return "bad state";
    default: return "unknown error";
    }
}

int err_exit_status(int code) {
    switch (code) {
    case ZP_EINVAL:
    case ZP_EIO:
    case ZP_EFORMAT:
    case ZP_EUNSUP:
    case ZP_ELIMIT:
    case ZP_ENOTFOUND: return 2;
    default: return 1;
    }
}
