# rtc.mk: the kernel sources' build (included by the Makefile). rtc_kernels/*.cu and *.cuh are
# embedded in the engine library through a generated table (tools/embed-kernels.sh, .incbin),
# so every object that carries them is rebuilt when a kernel source changes.
RTC_SRCS := $(sort $(wildcard rtc_kernels/*.cu rtc_kernels/*.cuh))

# The list of sources as a file rewritten only when it changes, so adding or removing a kernel
# regenerates the table.
$(O)/gen/rtc_list: FORCE
	@mkdir -p $(dir $@)
	@echo '$(RTC_SRCS)' | cmp -s - $@ || echo '$(RTC_SRCS)' > $@
.PHONY: FORCE
FORCE:

$(O)/gen/rtc_table.c: $(RTC_SRCS) $(O)/gen/rtc_list tools/embed-kernels.sh
	@mkdir -p $(dir $@)
	@tools/embed-kernels.sh $(RTC_SRCS) > $@

$(O)/obj/rtc_table.o $(O)/asan/obj/rtc_table.o $(O)/fuzz/obj/rtc_table.o: $(O)/gen/rtc_table.c $(RTC_SRCS)
	@mkdir -p $(dir $@)
	@echo "CC $<"; $(CC) $(CSTD) $(WARN) -I. -c $< -o $@

LIB_OBJS  += $(O)/obj/rtc_table.o
ALIB_OBJS += $(O)/asan/obj/rtc_table.o

# NVRTC for the compile-only tests on machines without CUDA: the nvidia-cuda-nvrtc wheel in a
# venv under the build directory (git-ignored). Best effort: without it those tests SKIP.
$(O)/nvrtc-venv.stamp:
	@mkdir -p $(O)
	@(python3 -m venv $(O)/nvrtc-venv && \
	  $(O)/nvrtc-venv/bin/pip install -q --disable-pip-version-check 'nvidia-cuda-nvrtc>=13,<14') \
	  >/dev/null 2>&1 || echo "note: nvidia-cuda-nvrtc could not be installed; NVRTC tests will SKIP"
	@touch $@
TEST_DEPS += $(O)/nvrtc-venv.stamp

# GPU test programs, built here without sanitizers (ASan's shadow mappings and the CUDA driver
# do not mix) and carried to the GPU machine by tools/gpu-check.sh; under `make test` the same
# sources run with ASan and SKIP when there is no GPU (test_queues runs its CPU part there and
# skips its CUDA part).
GPU_TESTS := $(patsubst tests/%.c,$(O)/gpu/tests/%,$(wildcard tests/test_cuda_*.c tests/test_nvrtc.c \
                                                    tests/test_queues.c))
$(O)/gpu/tests/%: tests/%.c $(O)/libzpengine.a | deps
	@mkdir -p $(dir $@)
	@echo "LD [gpu] $@"; $(CC) $(CFLAGS_ALL) -DZP_TESTING -o $@ $< $(O)/libzpengine.a $(LIBS)
.PHONY: gpu-tests
gpu-tests: $(GPU_TESTS) $(O)/zipage
