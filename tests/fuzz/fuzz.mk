# tests/fuzz/fuzz.mk: coverage-guided fuzzing with libFuzzer (included by the Makefile).
# Every tests/fuzz/fuzz_NAME.c is one target, a file defining LLVMFuzzerTestOneInput; its
# seed corpus is tests/fuzz/corpus/NAME/. Targets link against the asan test library's
# sources (ALIB_OBJS, so this fragment comes after ipc.mk) compiled again with clang and
# -fsanitize=fuzzer-no-link (coverage counters) plus ASan+UBSan, in $(O)/fuzz/obj.
#   make fuzz [FUZZ_SECONDS=300] [FUZZ_TARGETS="json conf"]  runs each target that long
#   make fuzz-build                                          builds them (part of `make test`)
# Without clang's libFuzzer runtime (Debian: clang, libclang-rt-14-dev) fuzz-build says so and
# builds nothing, and tests/test_fuzz.sh skips. See docs/FUZZING.md.
.DEFAULT_GOAL := all
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 300
FUZZ_SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
FUZZ_CFLAGS  := $(CSTD) $(WARN) -O1 -g -I. -pthread -MMD -MP -DZP_TESTING
FUZZ_SRCS    := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_TARGETS ?= $(FUZZ_SRCS:tests/fuzz/fuzz_%.c=%)
FUZZ_BINS    := $(FUZZ_SRCS:tests/fuzz/%.c=$(O)/fuzz/%)
FUZZ_OBJS    := $(ALIB_OBJS:$(O)/asan/obj/%=$(O)/fuzz/obj/%)

.PHONY: fuzz fuzz-build
TEST_DEPS += fuzz-build

# The CPU kernels (drv/) are numeric code, not input parsing, and clang refuses drv/cpu.c's
# generic-vector helpers without -mavx: they join the fuzz library uninstrumented, built by
# $(CC) with the Makefile's flags (plain C objects link into a sanitized program).
$(O)/fuzz/obj/drv/%.o: drv/%.c | deps
	@mkdir -p $(dir $@)
	@echo "CC [fuzz, plain] $<"; $(CC) $(CFLAGS_ALL) -O3 -Wno-psabi -c $< -o $@

$(O)/fuzz/obj/%.o: %.c | deps
	@mkdir -p $(dir $@)
	@echo "CC [fuzz] $<"; $(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -c $< -o $@

$(O)/fuzz/libzpengine.a: $(FUZZ_OBJS)
	@rm -f $@; ar rcs $@ $^

# A target may name extra link flags in a comment line: `// LDFLAGS: ...` (as tests do).
$(O)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(O)/fuzz/libzpengine.a | deps
	@echo "LD [fuzz] $@"; $(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $< \
	  $(O)/fuzz/libzpengine.a $$(sed -n 's|^// LDFLAGS: ||p' $<) $(LIBS)

# Probes for the libFuzzer runtime first, so that a machine without it still runs `make test`
# (the fuzz test then skips and says why).
fuzz-build: | deps
	@mkdir -p $(O)/fuzz
	@if printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n{ return 0; }\n' \
	    | $(FUZZ_CC) -x c -fsanitize=fuzzer -o $(O)/fuzz/probe - >/dev/null 2>&1; then \
	  $(MAKE) -s --no-print-directory $(FUZZ_BINS); \
	else echo "$(FUZZ_CC) with libFuzzer (-fsanitize=fuzzer) not found: fuzz targets not built"; fi

fuzz: fuzz-build
	@tests/fuzz/run.sh $(O) $(FUZZ_SECONDS) $(O)/fuzz/corpus $(FUZZ_TARGETS)
