# ipc.mk: the IPC module's build (included by the Makefile).
# - ipc/echo.c joins the engine library (it is an engine, used by `zipage serve --echo`), and
#   so does the client (ipc/client.c): `zipage bench throughput --ipc` and the IPC tests link
#   both sides from one archive.
# - build/libzipage.a: the client library, static, compiled with musl-gcc;
#   build/libzipage.so: the same sources for glibc, -fPIC (Python's ctypes, other languages);
#   build/zipage-cli: static musl binary.
# This file is included before the Makefile's `all:`; keep `all` the default goal.
.DEFAULT_GOAL := all
MUSL_CC   ?= musl-gcc
IPC_CLIENT_SRCS := ipc/client.c ipc/ring.c
IPC_MUSL_OBJS   := $(IPC_CLIENT_SRCS:%.c=$(O)/musl/obj/%.o)
IPC_PIC_OBJS    := $(IPC_CLIENT_SRCS:%.c=$(O)/pic/obj/%.o)

LIB_OBJS   += $(O)/obj/ipc/echo.o $(O)/obj/ipc/client.o
ALIB_OBJS  += $(O)/asan/obj/ipc/echo.o $(O)/asan/obj/ipc/client.o

$(O)/musl/obj/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(MUSL_CC) $(CSTD) $(WARN) $(CFLAGS) -I. -MMD -MP -c $< -o $@

$(O)/pic/obj/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(CFLAGS) -fPIC -fvisibility=hidden -DZIPAGE_SHARED -I. -MMD -MP -c $< -o $@

$(O)/libzipage.a: $(IPC_MUSL_OBJS)
	@rm -f $@; ar rcs $@ $^

$(O)/libzipage.so: $(IPC_PIC_OBJS)
	$(CC) -shared -o $@ $^

$(O)/zipage-cli: $(O)/musl/obj/tools/zipage-cli.o $(O)/libzipage.a
	$(MUSL_CC) -static $(CFLAGS) -o $@ $^

ALL_EXTRA += $(O)/libzipage.a $(O)/libzipage.so $(O)/zipage-cli
TEST_DEPS += $(O)/zipage-cli $(O)/libzipage.so
