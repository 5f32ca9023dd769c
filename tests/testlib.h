/* testlib: tiny helpers for zipage's test programs (header-only).
 * A test is a program: exit 0 = PASS, 77 = SKIP, anything else = FAIL. CHECK failures print
 * file:line and the condition and count; test_done() turns the count into the exit code. */
#ifndef ZP_TESTLIB_H
#define ZP_TESTLIB_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int test_failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);              \
            test_failures++;                                                                       \
        }                                                                                          \
    } while (0)

#define CHECKF(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);              \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            test_failures++;                                                                       \
        }                                                                                          \
    } while (0)

/* Fails the test at once (setup errors). */
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);            \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static inline int test_skip(const char *why) {
    printf("SKIP %s\n", why);
    return 77;
}

static inline int test_done(const char *name) {
    if (test_failures) {
        printf("FAIL %s (%d checks failed)\n", name, test_failures);
        return 1;
    }
    printf("PASS %s\n", name);
    return 0;
}

/* Deterministic random numbers for tests (splitmix64). */
static inline unsigned long long test_rand_u64(unsigned long long *s) {
    unsigned long long z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline float test_randf(unsigned long long *s) { /* uniform in [-1, 1) */
    return (float)((test_rand_u64(s) >> 40) * (1.0 / (1ull << 24))) * 2.0f - 1.0f;
}

#endif
