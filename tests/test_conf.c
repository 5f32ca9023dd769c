/* test_conf: zipage.conf parsing and validation: defaults, file + --set precedence,
 * sections, every error names the source/line/key, and the shipped zipage.conf lists every
 * key at its default (it must equal `zipage config` output). */
#include "arena/err.h"
#include "engine/conf.h"
#include "tests/testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[128];

static int load(conf *c, const char *text) {
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fputs(text, f);
    fclose(f);
    conf_defaults(c);
    return conf_load_file(c, path);
}

static void expect_err(const char *text, const char *needle) {
    conf c;
    int rc = load(&c, text);
    CHECKF(rc == ZP_EINVAL, "accepted: %s", text);
    CHECKF(strstr(err_msg(), needle) != NULL, "message '%s' lacks '%s'", err_msg(), needle);
}

int main(void) {
    snprintf(path, sizeof path, "/tmp/zp_test_conf_%d.conf", (int)getpid());
    conf c;
    conf_defaults(&c);
    CHECK(c.block_size == 256 && c.max_cache_blocks_per_seq == 8 && c.query_cache_len == 16);
    CHECK(c.compress && !c.use_global_score && c.global_score_decay == 0.8);
    CHECK(c.protect_recent == 128 && c.protect_prompt == 0); /* docs/ACCURACY.md: the default */
    CHECK(c.redundancy == CONF_REDUNDANCY_LIGHTNING && c.pooling_size == 5 && c.sink_len == 0);
    CHECK(c.ipc_mode == 0600 && !strcmp(c.ipc_name, "zipage"));
    CHECK(c.load_format == CONF_LOAD_FORMAT_AUTO);

    CHECK(load(&c, "# comment\n[scheduler]\nblock_size = 16 # trailing\n\nmax_num_seqs=3\n"
                   "[engine]\nmodel = \"/x y\"\nbackend = cpu\n[ipc]\nipc_mode = 0640\n") == 0);
    CHECK(c.block_size == 16 && c.max_num_seqs == 3 && !strcmp(c.model, "/x y"));
    CHECK(c.backend == CONF_BACKEND_CPU && c.ipc_mode == 0640);
    CHECK(conf_set(&c, "load_format=dummy", "--set") == 0 &&
          c.load_format == CONF_LOAD_FORMAT_DUMMY);
    CHECK(conf_set(&c, "scheduler.block_size=32", "--set") == 0 && c.block_size == 32);
    CHECK(conf_set(&c, "compress=off", "--set") == 0 && !c.compress);

    expect_err("block_size = 0\n", ":1: key 'block_size': value 0 out of range");
    expect_err("\n\nnope = 1\n", ":3: key 'nope': unknown key");
    expect_err("block_size = 12x\n", "not an integer");
    expect_err("[memory]\nblock_size = 16\n", "belongs in section [scheduler]");
    expect_err("[nosuch]\n", "unknown section");
    expect_err("compress = maybe\n", "not a boolean");
    expect_err("backend = tpu\n", "not one of auto|cpu|cuda");
    expect_err("load_format = bogus\n", ":1: key 'load_format': 'bogus' is not one of auto|dummy");
    expect_err("global_score_decay = 1.5\n", "out of range");
    expect_err("just words\n", "expected 'key = value'");
    CHECK(conf_set(&c, "block_size", "--set") == ZP_EINVAL);

    /* command-line handling: -c then --set in order, shorthands, leftovers kept */
    FILE *f = fopen(path, "w");
    fputs("block_size = 64\n", f);
    fclose(f);
    char *argv[] = {"x", "--set", "block_size=128", "-c", path, "--model", "/m", "--backend",
                    "cpu", "--keep", "1", NULL};
    int argc = 11;
    conf_defaults(&c);
    CHECK(conf_from_args(&c, &argc, argv) == 0);
    CHECK(c.block_size == 128 && !strcmp(c.model, "/m") && c.backend == CONF_BACKEND_CPU);
    CHECK(argc == 3 && !strcmp(argv[1], "--keep") && !strcmp(argv[2], "1"));

    /* the shipped file is exactly the defaults */
    conf_defaults(&c);
    FILE *g = fopen(path, "w");
    conf_write(g, &c);
    fclose(g);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cmp -s %s zipage.conf", path);
    CHECKF(system(cmd) == 0, "zipage.conf differs from 'zipage config' (regenerate it)");
    conf c2;
    conf_defaults(&c2);
    CHECK(conf_load_file(&c2, "zipage.conf") == 0);
    CHECK(memcmp(&c, &c2, sizeof c) == 0);
    unlink(path);
    return test_done("conf");
}
