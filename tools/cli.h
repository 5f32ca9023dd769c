/* cli: small shared helpers for zipage's subcommands: option parsing over argv left by
 * conf_from_args(), number parsing with clear errors, and the standard error exit. */
#ifndef ZP_CLI_H
#define ZP_CLI_H

#include "engine/conf.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct cli {
    int argc, i;
    char **argv;
    const char *cmd;
} cli;

void cli_init(cli *c, const char *cmd, int argc, char **argv);
/* Next option name (e.g. "--max-tokens"), or NULL at the end. */
const char *cli_next(cli *c);
/* The value of the option just returned; errors when missing. */
int cli_str(cli *c, const char **v);
int cli_int(cli *c, int64_t *v, int64_t lo, int64_t hi);
int cli_float(cli *c, double *v, double lo, double hi);
/* Error for an option the command does not know. */
int cli_unknown(cli *c, const char *opt);
/* Prints "zipage CMD: message" and returns the exit status for rc. */
int cli_fail(const char *cmd, int rc);
/* Loads configuration from argv (-c, --set, --model, --backend) into *cf. */
int cli_conf(conf *cf, int *argc, char **argv);

#endif
