/* rtc_sources: the kernel sources of rtc_kernels/ embedded in the binary at build time
 * (the Makefile generates build/gen/rtc_sources.c with .incbin), so a deployed zipage needs
 * no source tree. Files ending in .cuh are headers every kernel may include by name.
 * Read-only data; no state. */
#ifndef ZP_RTC_SOURCES_H
#define ZP_RTC_SOURCES_H

#include <stddef.h>

typedef struct rtc_source {
    const char *name; /* file name, e.g. "attention.cu" */
    const char *text; /* NUL-terminated */
} rtc_source;

extern const rtc_source rtc_sources[];
extern const int rtc_n_sources;

/* The source with this file name, or NULL. */
const rtc_source *rtc_source_find(const char *name);

#endif
