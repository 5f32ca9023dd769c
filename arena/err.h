/* err: zipage's error convention.
 *
 * Every fallible function returns 0 on success or a negative ZP_E* code, and on failure
 * leaves a message in a per-thread buffer that names the file, key or value at fault.
 * Only main() prints it and exits. The buffer is thread-local, so no locking; a message
 * stays until the next err_set() on the same thread. No allocation ever.
 */
#ifndef ZP_ERR_H
#define ZP_ERR_H

enum {
    ZP_OK = 0,
    ZP_EINVAL = -1,   /* bad argument or value */
    ZP_ENOMEM = -2,   /* an arena or pool is full */
    ZP_EIO = -3,      /* file or system call failed */
    ZP_EFORMAT = -4,  /* malformed file contents */
    ZP_EUNSUP = -5,   /* valid but unsupported (architecture, dtype, tokenizer feature) */
    ZP_ELIMIT = -6,   /* a configured limit was hit */
    ZP_ENOTFOUND = -7,
    ZP_EBACKEND = -8, /* the compute backend failed */
    ZP_EBUSY = -9,    /* try again later (backpressure) */
    ZP_ESTATE = -10,  /* wrong state for this call */
};

/* Records a formatted message for this thread and returns code (for `return err_set(...)`). */
int err_set(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepends "prefix: " to the current message (adds context while unwinding). Returns code. */
int err_prefix(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *err_msg(void);
const char *err_name(int code);
/* Process exit status for an error code: 2 for user-input errors, 1 otherwise. */
int err_exit_status(int code);

#endif
