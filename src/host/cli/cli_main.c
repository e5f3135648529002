/* cli_main.c: `cvae COMMAND ...` dispatch. */
#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* OpenBLAS picks its kernels when it loads, from the CPU's model number; a CPU newer than
 * the OpenBLAS build (Sapphire Rapids under Debian's 0.3.21) gets the generic SSE3
 * "Prescott" kernels, about 3x slower. OPENBLAS_CORETYPE overrides the choice. NULL when
 * OpenBLAS chose well or the CPU has nothing better. */
static const char *better_blas_kernels(void) {
    if (strcmp(openblas_get_corename(), "Prescott") != 0) return NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    return NULL;
}

/* The commands that run OpenBLAS and OpenMP, and so need configure_runtime's settings. */
static bool computes(int argc, char **argv) {
    static const char *const commands[] = {"train", "eval", "generate", "score", "encode",
                                           "decode", "bench"};
    for (size_t i = 0; argc > 1 && i < sizeof commands / sizeof *commands; i++)
        if (strcmp(argv[1], commands[i]) == 0) return true;
    return false;
}

/* Settings OpenBLAS and OpenMP read only when they load, in their constructors, before
 * main: so cvae sets them and starts itself again, once, before a command that computes
 * (--version, --help and info run as they are); a user's own setting of any of them is
 * left alone. Nothing can set them earlier: the program's .preinit_array runs first, but
 * before libc has its environment, which then replaces whatever was set. The second start
 * costs what the first did, 10 to 14 ms on a 2-core EPYC (bench/results/startup-cpu.md),
 * since a CUDA build loads its CUDA libraries only when a GPU is used (cuda/cuda_module.h).
 * - OPENBLAS_CORETYPE: see better_blas_kernels;
 * - OPENBLAS_NUM_THREADS=1: cvae runs OpenBLAS single-threaded under its own OpenMP
 *   threads, and OpenBLAS's idle thread pool can block the process's exit when memory
 *   is short;
 * - GOMP_SPINCOUNT=1000: OpenMP threads wait for work by spinning (300,000 turns by
 *   default), which on a busy machine takes the CPU from the threads that have work
 *   (bench/results/cpu-amd-epyc-2026-12-08.md, bench/threads_cpu.sh). */
static void configure_runtime(int argc, char **argv) {
    if (!computes(argc, argv)) return;
    /* under valgrind /proc/self/exe is valgrind's tool, which will not run on its own: no
     * restart there (its preload library in LD_PRELOAD says valgrind is running) */
    const char *preload = getenv("LD_PRELOAD");
    if (preload && strstr(preload, "vgpreload")) return;
    bool again = false;
    const char *core = getenv("OPENBLAS_CORETYPE") ? NULL : better_blas_kernels();
    if (core) again = setenv("OPENBLAS_CORETYPE", core, 1) == 0;
    if (!getenv("OPENBLAS_NUM_THREADS"))
        again = setenv("OPENBLAS_NUM_THREADS", "1", 1) == 0 || again;
    if (!getenv("GOMP_SPINCOUNT") && !getenv("OMP_WAIT_POLICY"))
        again = setenv("GOMP_SPINCOUNT", "1000", 1) == 0 || again;
    if (!again) return;
    /* by its path, not /proc/self/exe, so the process keeps its name (ps, pgrep, top) */
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0 || len >= (ssize_t)sizeof self - 1) return;
    self[len] = '\0';
    execv(self, argv); /* returns only on failure: carry on as is */
}

/* Under cron, a systemd unit or a daemon, a standard descriptor may be closed: the next
 * file cvae opens would take its number, and a line printed to stdout or stderr would
 * land in that file. Each closed one is opened on /dev/null first; false if one cannot
 * be. */
static bool open_standard_descriptors(void) {
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF) continue;
        int got = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY); /* the lowest free: fd */
        if (got != fd) {
            if (got >= 0) close(got);
            return false;
        }
    }
    return true;
}

static const char *usage =
    "usage: cvae COMMAND [flags]\n"
    "\n"
    "Train and use conditional variational autoencoders on image data sets (IDX, NumPy, or\n"
    "PNG and JPEG images in class folders or named by a table).\n"
    "\n"
    "commands:\n"
    "  train     train a model on a data folder (cvae train --data DIR --out RUNDIR)\n"
    "  eval      test -ELBO and importance-weighted NLL of a checkpoint\n"
    "  generate  labeled synthetic data sets, sample grids, latent traversals and\n"
    "            interpolations from a checkpoint\n"
    "  score     how good the data a checkpoint generates is: classifier fidelity and CAS\n"
    "            (class labels), R^2 of the conditions (condition vectors)\n"
    "  encode    the posteriors of a data set's images: [mean | logvar] as .npy\n"
    "  decode    the decoder's output for given latents, as .npy and images\n"
    "  export    the model for PyTorch (safetensors) or ONNX Runtime (onnx)\n"
    "  info      what a checkpoint holds\n"
    "  report    several runs' curves on one page (each run also writes RUNDIR/report.html)\n"
    "  data      what training would read from a data set: splits, classes or condition\n"
    "            columns, image size, the decoded cache; a preview grid of its images\n"
    "  bench     training throughput on synthetic data: step time, and per kernel family\n"
    "            time, share and achieved GB/s or TFLOP/s against the device's ceilings\n"
    "\n"
    "  --version  the version, the GPU codes the CUDA backend was built for and whether\n"
    "             its module and the CUDA libraries are found, the OpenMP threads and the\n"
    "             OpenBLAS core in use\n"
    "\n"
    "`cvae COMMAND --help` describes each command's flags.\n";

/* The command itself, on this process's rank of the run. */
static int run_command(int argc, char **argv, cv_comm *comm) {
    const char *cmd = argv[1];
    if (strcmp(cmd, "train") == 0) return cv_cmd_train(argc - 1, argv + 1, comm);
    if (strcmp(cmd, "eval") == 0) return cv_cmd_eval(argc - 1, argv + 1, comm);
    if (strcmp(cmd, "bench") == 0) return cv_cmd_bench(argc - 1, argv + 1, comm);
    static const char *const serial_commands[] = {"info", "generate", "score", "encode",
                                                  "decode", "export", "report", "data"};
    bool serial = false;
    for (size_t i = 0; i < sizeof serial_commands / sizeof *serial_commands; i++)
        serial = serial || strcmp(cmd, serial_commands[i]) == 0;
    if (serial && cv_comm_size(comm) > 1)
        return cv_usage_error(cmd, "runs in one process, not under an MPI launcher (%d ranks)",
                              cv_comm_size(comm));
    if (strcmp(cmd, "info") == 0) return cv_cmd_info(argc - 1, argv + 1);
    if (strcmp(cmd, "generate") == 0) return cv_cmd_generate(argc - 1, argv + 1);
    if (strcmp(cmd, "score") == 0) return cv_cmd_score(argc - 1, argv + 1);
    if (strcmp(cmd, "encode") == 0) return cv_cmd_encode(argc - 1, argv + 1);
    if (strcmp(cmd, "decode") == 0) return cv_cmd_decode(argc - 1, argv + 1);
    if (strcmp(cmd, "export") == 0) return cv_cmd_export(argc - 1, argv + 1);
    if (strcmp(cmd, "report") == 0) return cv_cmd_report(argc - 1, argv + 1);
    if (strcmp(cmd, "data") == 0) return cv_cmd_data(argc - 1, argv + 1);
    if (cv_comm_rank(comm) == 0)
        fprintf(stderr, "cvae: unknown command '%s' (expected train, eval, generate, score, "
                "encode, decode, export, report, info, data or bench)\n", cmd);
    return CV_EXIT_USAGE;
}

int main(int argc, char **argv) {
    if (!open_standard_descriptors()) {
        fprintf(stderr, "cvae: cannot open /dev/null for a closed standard descriptor\n");
        return CV_EXIT_FAIL;
    }
    configure_runtime(argc, argv);
    if (argc < 2) {
        fprintf(stderr, "cvae: missing command (train, eval, generate, score, encode, decode, "
                "export, report, info, data or bench); see cvae --help\n");
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
        /* the kernels a computing command would ask for (configure_runtime) */
        return cv_cmd_version(getenv("OPENBLAS_CORETYPE") ? NULL : better_blas_kernels());
    }
    /* under an MPI launcher every process joins the run; rank 0 alone writes to stdout */
    cv_comm *comm;
    cv_err err;
    if (cv_comm_open(&argc, &argv, &comm, &err)) {
        if (cv_comm_launcher_rank() == 0) fprintf(stderr, "cvae: %s\n", err.msg);
        return CV_EXIT_USAGE;
    }
    if (cv_comm_rank(comm) != 0 && !freopen("/dev/null", "w", stdout)) {
        fprintf(stderr, "cvae: rank %d: cannot quiet its standard output\n", cv_comm_rank(comm));
        cv_comm_close(comm);
        return CV_EXIT_FAIL;
    }
    const int rc = run_command(argc, argv, comm);
    fflush(stdout);
    cv_comm_close(comm); /* MPI_Finalize: no rank leaves before rank 0 has said its last */
    return rc;
}
