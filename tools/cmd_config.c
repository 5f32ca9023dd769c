/* zipage config: prints the effective configuration as a documented zipage.conf. With no
 * options that is the defaults (how the shipped zipage.conf is made); with -c/--set it shows
 * the result of validating and applying them. */
#include "arena/err.h"
#include "tools/cli.h"

#include <stdio.h>

int cmd_config(int argc, char **argv) {
    conf cf;
    int rc = cli_conf(&cf, &argc, argv);
    if (rc) return cli_fail("config", rc);
    if (argc > 1) return cli_fail("config", err_set(ZP_EINVAL, "unknown option '%s'", argv[1]));
    conf_write(stdout, &cf);
    return 0;
}
