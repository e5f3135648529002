/* cli_main.c: `cvae COMMAND ...` dispatch. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* OpenBLAS picks its kernels when it loads, from the CPU's model number; a CPU newer than
 * the OpenBLAS build (Sapphire Rapids under Debian's 0.3.21) gets the generic SSE3
 * "Prescott" kernels, about 3x slower. OPENBLAS_CORETYPE overrides the choice but is read
 * only at load time, so cvae sets it and starts itself again, once. A user's own
 * OPENBLAS_CORETYPE is left alone. */
static void select_blas_kernels(char **argv) {
    if (getenv("OPENBLAS_CORETYPE") || strcmp(openblas_get_corename(), "Prescott") != 0)
        return;
    __builtin_cpu_init();
    const char *core = NULL;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        core = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        core = "Haswell";
    if (!core) return;
    setenv("OPENBLAS_CORETYPE", core, 1);
    execv("/proc/self/exe", argv); /* returns only on failure: keep the generic kernels */
}

static const char *usage =
    "usage: cvae COMMAND [flags]\n"
    "\n"
    "Train and use conditional variational autoencoders on IDX image data sets.\n"
    "\n"
    "commands:\n"
    "  train     train a model on a data folder (cvae train --data DIR --out RUNDIR)\n"
    "  eval      test -ELBO and importance-weighted NLL of a checkpoint\n"
    "  generate  labeled synthetic data sets and sample grids from a checkpoint\n"
    "  info      what a checkpoint holds\n"
    "  bench     training throughput on synthetic data: step time, and per kernel family\n"
    "            time, share and achieved GB/s or TFLOP/s against the device's ceilings\n"
    "\n"
    "  --version  the version, the GPU codes the CUDA backend was built for, the OpenMP\n"
    "             threads and the OpenBLAS core in use\n"
    "\n"
    "`cvae COMMAND --help` describes each command's flags.\n";

int main(int argc, char **argv) {
    select_blas_kernels(argv);
    if (argc < 2) {
        fprintf(stderr, "cvae: missing command (train, eval, generate, info or bench); see cvae --help\n");
        return CV_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        if (argc > 2) {
            fprintf(stderr, "cvae: --version takes no arguments\n");
            return CV_EXIT_USAGE;
        }
        return cv_cmd_version();
    }
    if (strcmp(cmd, "train") == 0) return cv_cmd_train(argc - 1, argv + 1);
    if (strcmp(cmd, "eval") == 0) return cv_cmd_eval(argc - 1, argv + 1);
    if (strcmp(cmd, "info") == 0) return cv_cmd_info(argc - 1, argv + 1);
    if (strcmp(cmd, "generate") == 0) return cv_cmd_generate(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0) return cv_cmd_bench(argc - 1, argv + 1);
    fprintf(stderr, "cvae: unknown command '%s' (expected train, eval, generate, info or bench)\n", cmd);
    return CV_EXIT_USAGE;
}
