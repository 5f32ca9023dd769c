/* zipage: the engine binary's entry point; dispatches to one subcommand (tools/cmd_*.c).
 * Each subcommand parses its own options after the shared ones (-c, --set, --model,
 * --backend) and returns the process exit status: 0 ok, 2 bad input or configuration (start-up
 * memory, arenas and shared memory that cannot be had included), 1 internal error. */
#include "engine/conf.h"

#include <stdio.h>
#include <string.h>

int cmd_config(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_gguf(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_kernels(int argc, char **argv);

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} cmds[] = {
    {"bench", cmd_bench, "bench accuracy: answers of a reasoning set at full KV and compressed budgets"},
    {"config", cmd_config, "print the configuration (defaults, or after -c/--set) as zipage.conf"},
    {"generate", cmd_generate, "run requests through the engine in this process and print the results"},
    {"gguf", cmd_gguf, "show a GGUF file's keys and tensors (--dequant NAME OUT: one tensor as raw f32)"},
    {"kernels", cmd_kernels, "compile every GPU kernel with NVRTC (--compile-only [--arch sm_90]: no GPU needed)"},
    {"logits", cmd_logits, "write the logits of every prompt position as raw f32 (parity checks)"},
    {"mkmodel", cmd_mkmodel, "write a small random Hugging Face model directory (tests, demos)"},
    {"tokenize", cmd_tokenize, "encode text to token ids or decode ids (--model DIR --text T|--file F)"},
    {"serve", cmd_serve, "serve requests over shared memory (--echo: no model, IPC only)"},
};

static int usage(FILE *f) {
    fprintf(f, "usage: zipage COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].help);
    fprintf(f, "\noptions every command accepts:\n"
               "  -c FILE           read a zipage.conf\n"
               "  --set KEY=VALUE   override one key (any number of times)\n"
               "  --model DIR       same as --set model=DIR\n"
               "  --backend B       same as --set backend=B (cpu|cuda|auto)\n");
    return f == stdout ? 0 : 2;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage(stderr);
    if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
        return usage(stdout);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "zipage: unknown command '%s'\n", argv[1]);
    return usage(stderr);
}
