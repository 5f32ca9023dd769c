# nccl.mk: NCCL for the loader's tests on machines without CUDA (included by the Makefile): the
# nvidia-nccl-cu13 wheel (about 200 MB) in a venv under the build directory (git-ignored), where
# drv/culib.c looks beside the binary and tests/test_nccl_load.c under $ZP_BUILD. Best effort:
# without it (no network, no pip) that test SKIPs, saying so.
$(O)/nccl-venv.stamp:
	@mkdir -p $(O)
	@(python3 -m venv $(O)/nccl-venv && \
	  $(O)/nccl-venv/bin/pip install -q --disable-pip-version-check 'nvidia-nccl-cu13>=2.27,<3') \
	  >/dev/null 2>&1 || echo "note: nvidia-nccl-cu13 could not be installed; test_nccl_load will SKIP"
	@touch $@
TEST_DEPS += $(O)/nccl-venv.stamp
