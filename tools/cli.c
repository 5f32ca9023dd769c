/* cli: option parsing helpers for subcommands (see cli.h). */
#include "tools/cli.h"

#include "arena/err.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_init(cli *c, const char *cmd, int argc, char **argv) {
    c->argc = argc;
    c->argv = argv;
    c->i = 1;
    c->cmd = cmd;
}

const char *cli_next(cli *c) { return c->i < c->argc ? c->argv[c->i++] : NULL; }

int cli_str(cli *c, const char **v) {
    if (c->i >= c->argc) return err_set(ZP_EINVAL, "%s needs a value", c->argv[c->i - 1]);
    *v = c->argv[c->i++];
    return 0;
}

int cli_int(cli *c, int64_t *v, int64_t lo, int64_t hi) {
    const char *s = NULL, *opt = c->argv[c->i - 1];
    int rc = cli_str(c, &s);
    if (rc) return rc;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (!*s || *end || errno) return err_set(ZP_EINVAL, "%s: '%s' is not an integer", opt, s);
    if (x < lo || x > hi)
        return err_set(ZP_EINVAL, "%s: %lld out of range [%lld, %lld]", opt, x, (long long)lo,
                       (long long)hi);
    *v = x;
    return 0;
}

int cli_float(cli *c, double *v, double lo, double hi) {
    const char *s = NULL, *opt = c->argv[c->i - 1];
    int rc = cli_str(c, &s);
    if (rc) return rc;
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(x))
        return err_set(ZP_EINVAL, "%s: '%s' is not a number", opt, s);
    if (x < lo || x > hi) return err_set(ZP_EINVAL, "%s: %g out of range [%g, %g]", opt, x, lo, hi);
    *v = x;
    return 0;
}

int cli_unknown(cli *c, const char *opt) {
    return err_set(ZP_EINVAL, "unknown option '%s' (see 'zipage help')", opt);
}

int cli_fail(const char *cmd, int rc) {
    fprintf(stderr, "zipage %s: %s\n", cmd, err_msg());
    return err_exit_status(rc);
}

int cli_conf(conf *cf, int *argc, char **argv) {
    conf_defaults(cf);
    return conf_from_args(cf, argc, argv);
}
