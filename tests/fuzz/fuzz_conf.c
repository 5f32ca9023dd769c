/* fuzz_conf: zipage.conf files and command-line overrides (engine/conf.c). The input is a
 * zipage.conf text, then NUL-separated command-line arguments handed to conf_from_args after
 * `-c FILE` (--set k=v, --model DIR, --backend B, -c, anything else). A `-c`/`--config` among
 * them always names the input's own file, so no input can make the target read another file
 * (such as /dev/stdin) and hang.
 *
 * Oracle beyond "no crash, no leak, no hang": a refusal has a negative code and a message, and
 * an accepted configuration can be written out by conf_write.
 */
#include "arena/err.h"
#include "engine/conf.h"
#include "tests/fuzz/fuzz_util.h"

#define MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[300];
    snprintf(path, sizeof path, "%s/zipage.conf", fuzz_dir());
    const uint8_t *p;
    size_t n;
    fuzz_split(data, size, 0, &p, &n);
    fuzz_write("zipage.conf", p, n);
    /* argv strings must be NUL-terminated: one copy of the input with a NUL after it. */
    char *args = malloc(size + 1), *argv[MAX_ARGS + 4];
    if (!args) abort();
    memcpy(args, data, size);
    args[size] = 0;
    int argc = 0;
    argv[argc++] = "zipage";
    argv[argc++] = "-c";
    argv[argc++] = path;
    for (int i = 1; argc < MAX_ARGS && fuzz_split(data, size, i, &p, &n); i++) {
        char *a = args + (p - data);
        bool file = !strcmp(argv[argc - 1], "-c") || !strcmp(argv[argc - 1], "--config");
        argv[argc++] = file ? path : a;
    }
    argv[argc] = NULL;
    conf c;
    conf_defaults(&c);
    err_set(0, "%s", "");
    int rc = conf_from_args(&c, &argc, argv);
    if (rc) {
        if (rc > 0 || !err_msg()[0]) abort(); /* an error always has a code and a message */
    } else {
        char out[1 << 16];
        FILE *f = fmemopen(out, sizeof out, "w");
        if (!f) abort();
        conf_write(f, &c);
        fclose(f);
    }
    free(args);
    return 0;
}
