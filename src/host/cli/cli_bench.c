/* cli_bench.c: `cvae bench`: its flags, and the report as a table or one JSON object. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cvae/bench.h"

static const char *help =
    "usage: cvae bench [flags]\n"
    "\n"
    "Measure training throughput on synthetic data of the given shape. First the two\n"
    "ceilings: the device's copy bandwidth (a 256 MiB copy within its memory, bytes read +\n"
    "written) and the rate of a large GEMM at the chosen precision (2048^3 on the CPU,\n"
    "4096^3 on a GPU, through the same GEMM training uses). Then the training step as\n"
    "cvae train runs it (a replayed CUDA graph on a GPU): the median of --steps steps after\n"
    "a warm-up, and samples/s. Last, from as many eager (non-graph) steps with every\n"
    "kernel call timed, each kernel family's time per step, its share, its achieved GB/s\n"
    "(TFLOP/s for GEMMs) and that as a percentage of the matching ceiling. Above 100%\n"
    "of the copy ceiling, a family's data stayed in cache. On a GPU, an eager call that\n"
    "waits for the host to launch it counts that wait too.\n"
    "\n"
    "  --hidden LIST     hidden layer sizes, e.g. 400 or 1024,1024 (default 400)\n"
    "  --latent L        latent dimensions (default 20)\n"
    "  --batch B         batch size (default 128)\n"
    "  --classes K       number of classes (default 10)\n"
    "  --dim D           pixels per image (default 784); images are H x W with H*W = D,\n"
    "                    as square as D allows (28 x 28; 1 x D for a prime)\n"
    "  --precision P     fp32 (default), tf32 (GPU only), bf16 or tf32x3: how GEMMs\n"
    "                    round their inputs (cvae train --help says more)\n"
    "  --device D        auto, cpu, cuda or cuda:N (default auto: a GPU when usable)\n"
    "  --steps N         timed steps, for the step and for the families (default 200)\n"
    "  --json            one JSON object instead of the table\n"
    "  -h, --help        this text\n";

enum { OPT_HIDDEN = 256, OPT_LATENT, OPT_BATCH, OPT_CLASSES, OPT_DIM, OPT_PRECISION,
       OPT_DEVICE, OPT_STEPS, OPT_JSON };

/* The values --precision takes and what each asks of the backend: a new one is one line. */
static const struct {
    const char *name;
    cv_backend_options backend;
} precisions[] = {
    {"fp32", {.precision = CV_PRECISION_FP32}},
    {"tf32", {.precision = CV_PRECISION_TF32}},
    {"bf16", {.precision = CV_PRECISION_BF16}},
    {"tf32x3", {.precision = CV_PRECISION_TF32X3}},
};
#define N_PRECISIONS ((int)(sizeof precisions / sizeof precisions[0]))

static bool parse_precision(const char *cmd, const char *s, cv_bench_options *o) {
    const char *names[N_PRECISIONS];
    for (int i = 0; i < N_PRECISIONS; i++) names[i] = precisions[i].name;
    int choice;
    if (!cv_parse_choice(cmd, "--precision", s, names, N_PRECISIONS, &choice)) return false;
    o->precision = precisions[choice].name;
    o->backend = precisions[choice].backend;
    return true;
}

/* One flag into o; false after printing the error line. */
static bool apply_flag(int c, const char *arg, cv_bench_options *o, bool *json) {
    const char *cmd = "bench";
    switch (c) {
    case OPT_HIDDEN:
        return cv_parse_int_list(cmd, "--hidden", arg, 1, 65536, CV_MAX_HIDDEN, o->hidden,
                                 &o->n_hidden);
    case OPT_LATENT: return cv_parse_int(cmd, "--latent", arg, 1, 65536, &o->latent);
    case OPT_BATCH: return cv_parse_int(cmd, "--batch", arg, 1, 1 << 20, &o->batch);
    case OPT_CLASSES: return cv_parse_int(cmd, "--classes", arg, 1, 256, &o->classes);
    case OPT_DIM: return cv_parse_int(cmd, "--dim", arg, 1, 1 << 24, &o->dim);
    case OPT_PRECISION: return parse_precision(cmd, arg, o);
    case OPT_DEVICE: o->device = arg; return cv_parse_device(cmd, arg);
    case OPT_STEPS: return cv_parse_int(cmd, "--steps", arg, 1, 1000000, &o->steps);
    case OPT_JSON: *json = true; return true;
    default: CV_ASSERT(!"a flag without a case"); return false;
    }
}

/* ---- the table ---- */

/* v with three significant digits and no exponent (unless below 0.001): 0.0912, 3.41,
 * 45.2, 2003. */
static const char *sig3(char *buf, size_t size, double v) {
    const char *fmt = v >= 100 ? "%.0f" : v >= 10 ? "%.1f" : v >= 1 ? "%.2f" : "%.3g";
    snprintf(buf, size, fmt, v);
    return buf;
}

/* A time as "53.2 us" or "3.41 ms". */
static const char *time_text(char *buf, size_t size, double ms) {
    char num[32];
    snprintf(buf, size, "%s %s", sig3(num, sizeof num, ms < 1.0 ? ms * 1e3 : ms),
             ms < 1.0 ? "us" : "ms");
    return buf;
}

static void print_table(const cv_bench_options *o, const cv_bench_result *r) {
    char a[48], b[48];
    printf("device: %s | copy %s GB/s | GEMM %d^3 %s %s TFLOP/s\n", r->device,
           sig3(a, sizeof a, r->copy_gbs), r->gemm_n, o->precision,
           sig3(b, sizeof b, r->gemm_tflops));
    printf("%-18s %10s %7s %15s %13s\n", "family", "time/step", "share", "achieved",
           "% of ceiling");
    for (int i = 0; i < CV_FAMILY_COUNT; i++) {
        const cv_op_family f = (cv_op_family)i;
        const double ms = r->family[f].ms;
        if (r->family[f].calls == 0) continue; /* allreduce, in one process */
        char rate[64];
        snprintf(rate, sizeof rate, "%s %s", sig3(a, sizeof a, cv_bench_rate(r, f)),
                 cv_op_family_is_flops(f) ? "TFLOP/s" : "GB/s");
        printf("%-18s %10s %6.1f%% %15s %12.1f%%\n", cv_op_family_name(f),
               time_text(b, sizeof b, ms), r->eager_ms > 0 ? 100.0 * ms / r->eager_ms : 0.0,
               rate, cv_bench_ceiling_pct(r, f));
    }
    printf("step: %s, the median of %d %s steps: %.0f samples/s\n",
           time_text(a, sizeof a, r->step_ms), r->steps,
           r->step_replayed ? "replayed (CUDA graph)" : "eager", r->samples_per_s);
    printf("families: medians of %d eager (non-graph) steps with every kernel call timed, "
           "%s in all\n", r->steps, time_text(b, sizeof b, r->eager_ms));
    printf("shape: hidden");
    for (int i = 0; i < o->n_hidden; i++) printf("%s%d", i ? "," : " ", o->hidden[i]);
    printf(", latent %d, batch %d, classes %d, dim %d (%d x %d), %zu parameters\n", o->latent,
           o->batch, o->classes, o->dim, r->height, r->width, r->n_params);
    const int ranks = cv_comm_size(o->backend.comm);
    if (ranks > 1) {
        cv_batch_split_text(a, sizeof a, o->batch, ranks);
        printf("ranks: %d (MPI), %s; rank 0's times, whose allreduce includes waiting for "
               "the slowest rank; ceilings measured on rank 0 alone\n", ranks, a);
    }
}

/* ---- JSON ---- */

static void json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

/* A number, or null where it is not finite (JSON has no Inf or NaN). */
static void json_number(double v) {
    if (isfinite(v))
        printf("%.6g", v);
    else
        printf("null");
}

static void json_family(const cv_bench_result *r, cv_op_family f) {
    const cv_family_stats *s = &r->family[f];
    printf("{\"family\": \"%s\", \"ms_per_step\": ", cv_op_family_name(f));
    json_number(s->ms);
    printf(", \"share_pct\": ");
    json_number(r->eager_ms > 0 ? 100.0 * s->ms / r->eager_ms : 0.0);
    printf(", \"calls_per_step\": ");
    json_number(s->calls);
    printf(", \"bytes_per_step\": ");
    json_number(s->bytes);
    printf(", \"flops_per_step\": ");
    json_number(s->flops);
    printf(", \"rate\": ");
    json_number(cv_bench_rate(r, f));
    printf(", \"rate_unit\": \"%s\", \"ceiling_pct\": ",
           cv_op_family_is_flops(f) ? "TFLOP/s" : "GB/s");
    json_number(cv_bench_ceiling_pct(r, f));
    printf("}");
}

static void print_json(const cv_bench_options *o, const cv_bench_result *r) {
    printf("{\"device\": ");
    json_string(r->device);
    printf(", \"precision\": ");
    json_string(o->precision);
    printf(", \"shape\": {\"hidden\": [");
    for (int i = 0; i < o->n_hidden; i++) printf("%s%d", i ? ", " : "", o->hidden[i]);
    printf("], \"latent\": %d, \"batch\": %d, \"classes\": %d, \"dim\": %d, \"height\": %d, "
           "\"width\": %d, \"params\": %zu}",
           o->latent, o->batch, o->classes, o->dim, r->height, r->width, r->n_params);
    printf(", \"ranks\": %d", cv_comm_size(o->backend.comm));
    printf(", \"ceilings\": {\"copy_bytes\": %.0f, \"copy_gb_per_s\": ", r->copy_bytes);
    json_number(r->copy_gbs);
    printf(", \"gemm_n\": %d, \"gemm_tflop_per_s\": ", r->gemm_n);
    json_number(r->gemm_tflops);
    printf("}, \"steps\": %d, \"step_ms\": ", r->steps);
    json_number(r->step_ms);
    printf(", \"step_mode\": \"%s\", \"samples_per_s\": ", r->step_replayed ? "graph" : "eager");
    json_number(r->samples_per_s);
    printf(", \"eager_step_ms\": ");
    json_number(r->eager_ms);
    printf(", \"families\": [");
    for (int f = 0, shown = 0; f < CV_FAMILY_COUNT; f++) {
        if (r->family[f].calls == 0) continue; /* allreduce, in one process */
        printf(shown++ ? ", " : "");
        json_family(r, (cv_op_family)f);
    }
    printf("]}\n");
}

int cv_cmd_bench(int argc, char **argv, cv_comm *comm) {
    static const struct option opts[] = {
        {"hidden", required_argument, 0, OPT_HIDDEN},
        {"latent", required_argument, 0, OPT_LATENT},
        {"batch", required_argument, 0, OPT_BATCH},
        {"classes", required_argument, 0, OPT_CLASSES},
        {"dim", required_argument, 0, OPT_DIM},
        {"precision", required_argument, 0, OPT_PRECISION},
        {"device", required_argument, 0, OPT_DEVICE},
        {"steps", required_argument, 0, OPT_STEPS},
        {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    cv_bench_options o = cv_bench_defaults();
    o.backend.comm = comm;
    bool json = false;
    opterr = 0;
    optind = 1;
    int c, rc = 0;
    while ((c = cv_next_flag("bench", argc, argv, opts, &rc)) > 0) {
        if (c == 'h') {
            fputs(help, stdout);
            return 0;
        }
        if (!apply_flag(c, optarg, &o, &json)) return CV_EXIT_USAGE;
    }
    if (rc) return rc;
    if (optind < argc) return cv_usage_error("bench", "unexpected argument '%s'", argv[optind]);
    cv_bench_result r;
    cv_err err;
    cv_status st = cv_bench_run(&o, &r, &err);
    if (st) return cv_report("bench", st, &err);
    if (json)
        print_json(&o, &r);
    else
        print_table(&o, &r);
    return 0;
}
