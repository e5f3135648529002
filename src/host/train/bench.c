/* bench.c: `cvae bench`: the device's two ceilings (copy bandwidth, a large GEMM's rate),
 * then the training step on synthetic data: its median time as cvae train runs it, and
 * its time per kernel family from eager steps through the timing backend.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cvae/bench.h"
#include "cvae/eval.h"
#include "cvae/rng.h"
#include "cvae/train.h"

#define BENCH_SEED 0
/* The synthetic data set holds this many batches; the batch start goes back to its first
 * row after them, so its size does not grow with --steps. */
#define CYCLE_STEPS 8
/* Steps run before any is timed: cuBLAS picks its kernels, caches and clocks settle. */
#define WARMUP_STEPS 8
#define WARMUP_EAGER_STEPS 2
/* Calls the timing backend times per step (read after each): a step of the deepest model
 * (18 layers) makes under 100. */
#define TIMED_CALLS 256

cv_bench_options cv_bench_defaults(void) {
    cv_bench_options o = {.device = "auto", .precision = "fp32", .n_hidden = 1,
                          .hidden = {400}, .latent = 20, .batch = 128, .classes = 10,
                          .dim = 784, .steps = 200};
    return o;
}

void cv_bench_image_shape(int dim, int *height, int *width) {
    int h = 1;
    for (int d = 1; (long)d * d <= dim; d++)
        if (dim % d == 0) h = d;
    *height = h;
    *width = dim / h;
}

double cv_bench_rate(const cv_bench_result *r, cv_op_family f) {
    const cv_family_stats *s = &r->family[f];
    if (!(s->ms > 0.0)) return 0.0;
    return cv_op_family_is_flops(f) ? s->flops / (s->ms * 1e9) : s->bytes / (s->ms * 1e6);
}

double cv_bench_ceiling_pct(const cv_bench_result *r, cv_op_family f) {
    double ceiling = cv_op_family_is_flops(f) ? r->gemm_tflops : r->copy_gbs;
    return ceiling > 0.0 ? 100.0 * cv_bench_rate(r, f) / ceiling : 0.0;
}

/* ---- timing helpers ---- */

typedef void (*bench_fn)(cv_backend *be, const void *job);

/* The fastest of `repeats` runs of fn, after one run that is not timed, in ms. */
static cv_status best_ms(cv_backend *be, bench_fn fn, const void *job, int repeats,
                         double *out, cv_err *err) {
    void *start = NULL, *end = NULL;
    cv_status st = be->event_create(be, &start, err);
    if (!st) st = be->event_create(be, &end, err);
    if (!st) {
        fn(be, job);
        double best = INFINITY;
        for (int r = 0; r < repeats; r++) {
            be->event_record(be, start);
            fn(be, job);
            be->event_record(be, end);
            best = fmin(best, be->event_elapsed_ms(be, start, end));
        }
        *out = best;
    }
    if (start) be->event_destroy(be, start);
    if (end) be->event_destroy(be, end);
    return st;
}

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[n] (sorted in place). */
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, compare_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- the ceilings ---- */

/* Sizes big enough to reach a device's peak (well past its caches) and small enough to
 * take about a second. */
typedef struct {
    size_t copy_bytes;
    int gemm_n;
    int repeats;
} ceiling_plan;

static ceiling_plan plan_for(const cv_backend *be) {
    const bool cpu = strcmp(be->name, "cpu") == 0;
    return (ceiling_plan){(size_t)256 << 20, cpu ? 2048 : 4096, cpu ? 3 : 20};
}

typedef struct {
    void *dst;
    const void *src;
    size_t bytes;
} copy_job;

static void run_copy(cv_backend *be, const void *job) {
    const copy_job *j = job;
    be->copy(be, j->dst, j->src, j->bytes);
}

static cv_status measure_copy(cv_backend *be, const ceiling_plan *p, cv_bench_result *res,
                              cv_err *err) {
    void *src = NULL, *dst = NULL;
    cv_status st = be->alloc(be, &src, p->copy_bytes, "the copy benchmark's source", err);
    if (!st) st = be->alloc(be, &dst, p->copy_bytes, "the copy benchmark's destination", err);
    if (!st) {
        be->zero(be, src, p->copy_bytes);
        copy_job job = {dst, src, p->copy_bytes};
        double ms = 0.0;
        st = best_ms(be, run_copy, &job, p->repeats, &ms, err);
        res->copy_bytes = (double)p->copy_bytes;
        /* a copy reads and writes every byte */
        if (!st) res->copy_gbs = 2.0 * (double)p->copy_bytes / (ms * 1e6);
    }
    if (src) be->release(be, src);
    if (dst) be->release(be, dst);
    return st;
}

typedef struct {
    int n;
    const float *a, *b;
    float *c;
} gemm_job;

static void run_gemm(cv_backend *be, const void *job) {
    const gemm_job *j = job;
    be->gemm(be, false, false, j->n, j->n, j->n, 1.0f, j->a, j->n, j->b, j->n, 0.0f, j->c, j->n);
}

static cv_status measure_gemm(cv_backend *be, const ceiling_plan *p, cv_bench_result *res,
                              cv_err *err) {
    const int n = p->gemm_n;
    const size_t bytes = (size_t)n * n * sizeof(float);
    float *m[3] = {NULL, NULL, NULL};
    static const char *const what[3] = {"the GEMM benchmark's A", "the GEMM benchmark's B",
                                        "the GEMM benchmark's C"};
    cv_status st = CV_OK;
    for (int i = 0; i < 3 && !st; i++) st = be->alloc(be, (void **)&m[i], bytes, what[i], err);
    if (!st) {
        /* normal draws, not zeros: a GPU draws less power, and clocks higher, on zeros */
        be->normal(be, m[0], n, n, BENCH_SEED, 0);
        be->normal(be, m[1], n, n, BENCH_SEED, (uint64_t)n);
        gemm_job job = {n, m[0], m[1], m[2]};
        double ms = 0.0;
        st = best_ms(be, run_gemm, &job, p->repeats, &ms, err);
        res->gemm_n = n;
        if (!st) res->gemm_tflops = 2.0 * n * (double)n * n / (ms * 1e9);
    }
    for (int i = 0; i < 3; i++)
        if (m[i]) be->release(be, m[i]);
    return st;
}

/* ---- the training step ---- */

typedef struct {
    cv_backend *be;
    cv_model model;
    cv_workspace ws;
    cv_device_split data;
    void *recording; /* the recorded full step, when the backend records */
    cv_batch_part part; /* this rank's rows of each batch (all of them in one process) */
    cv_adam_config adam;
    int position;    /* the row of the synthetic data the next step starts at */
} bench_state;

static void state_free(bench_state *s) {
    if (!s->be) return;
    if (s->recording) s->be->recording_free(s->be, s->recording);
    cv_device_split_free(s->be, &s->data);
    if (s->ws.max_rows) cv_workspace_destroy(&s->model, &s->ws);
    cv_model_destroy(&s->model);
    s->be->destroy(s->be);
    memset(s, 0, sizeof *s);
}

static cv_model_config model_config(const cv_bench_options *o, int height, int width) {
    cv_model_config cfg = {.height = height, .width = width, .channels = 1,
                           .condition = CV_COND_LABELS, .cond_width = o->classes,
                           .latent = o->latent, .n_hidden = o->n_hidden};
    memcpy(cfg.hidden, o->hidden, sizeof cfg.hidden);
    return cfg;
}

/* CYCLE_STEPS batches of uniformly random pixels with balanced labels, on the device in a
 * shuffled order. */
static cv_status upload_synthetic(bench_state *s, const cv_bench_options *o, int height,
                                  int width, cv_err *err) {
    const int rows = o->batch * CYCLE_STEPS, dim = height * width;
    cv_split sp = {.n = rows, .h = height, .w = width, .channels = 1};
    sp.pixels = malloc((size_t)rows * dim);
    sp.labels = malloc((size_t)rows);
    float *u = malloc((size_t)dim * sizeof(float));
    int32_t *perm = malloc((size_t)rows * sizeof(int32_t));
    cv_status st = CV_OK;
    if (!sp.pixels || !sp.labels || !u || !perm)
        st = cv_fail(err, CV_ERR_NOMEM, "out of host memory: %d synthetic images of %d pixels",
                     rows, dim);
    for (int r = 0; !st && r < rows; r++) {
        cv_uniform_fill(u, (size_t)dim, BENCH_SEED, (uint64_t)r);
        for (int j = 0; j < dim; j++) sp.pixels[(size_t)r * dim + j] = (uint8_t)(255.0f * u[j]);
        sp.labels[r] = (uint8_t)(r % o->classes);
    }
    if (!st) st = cv_device_split_upload(s->be, &sp, &s->data, err);
    if (!st) {
        cv_shuffle(perm, rows, BENCH_SEED, CV_STREAM_SHUFFLE(0));
        s->be->upload(s->be, s->data.perm, perm, (size_t)rows * sizeof(int32_t));
    }
    free(sp.pixels);
    free(sp.labels);
    free(u);
    free(perm);
    return st;
}

/* The model, its workspace, the data and a fresh step state; then the step recorded where
 * the backend records. */
static cv_status prepare_step(bench_state *s, const cv_bench_options *o, int height,
                              int width, cv_err *err) {
    cv_model_config cfg = model_config(o, height, width);
    cv_status st = cv_model_create(s->be, &cfg, &s->model, err);
    if (!st) st = cv_model_init_params(&s->model, BENCH_SEED, err);
    if (!st) st = cv_workspace_create(&s->model, o->batch, &s->ws, err);
    if (!st) st = upload_synthetic(s, o, height, width, err);
    if (st) return st;
    /* never halted: a step that is not finite is skipped and the benchmark goes on */
    cv_step step = {.first_bad_step = -1, .first_bad_index = -1, .allowed_nonfinite = INT64_MAX};
    cv_loss_sums sums = {0};
    s->be->upload(s->be, s->ws.step, &step, sizeof step);
    s->be->upload(s->be, s->ws.sums, &sums, sizeof sums);
    s->adam = (cv_adam_config){.lr = 1e-3f, .beta1 = CV_ADAM_BETA1, .beta2 = CV_ADAM_BETA2,
                               .eps = CV_ADAM_EPS};
    s->part = cv_batch_part_of(o->batch, cv_comm_rank(o->backend.comm),
                               cv_comm_size(o->backend.comm));
    /* as cvae train's run_step: record the full step once, then replay it */
    if (s->be->capture_begin(s->be)) {
        cv_train_step(&s->model, &s->ws, &s->data, &s->part, BENCH_SEED, &s->adam, 1.0f, false);
        s->recording = s->be->capture_end(s->be);
    }
    return CV_OK;
}

/* Back to the first row of the synthetic data when the next batch would run past it. */
static void rewind_data(bench_state *s, int batch) {
    if (s->position + batch <= s->data.n) return;
    const int32_t start = 0;
    s->be->upload(s->be, (char *)s->ws.step + offsetof(cv_step, start), &start, sizeof start);
    s->position = 0;
}

/* One full-batch step of model m (its backend runs it): the recording when given,
 * otherwise cv_train_step. */
static void run_step(bench_state *s, cv_model *m, void *recording, int batch) {
    if (recording)
        m->be->replay(m->be, recording);
    else
        cv_train_step(m, &s->ws, &s->data, &s->part, BENCH_SEED, &s->adam, 1.0f, false);
    s->position += batch;
}

/* The median step time as cvae train runs it. Each step lies between two events; they
 * are read after every CYCLE_STEPS steps, when the data rewinds. */
static cv_status time_steps(bench_state *s, const cv_bench_options *o, cv_bench_result *res,
                            cv_err *err) {
    double *times = malloc((size_t)o->steps * sizeof(double));
    void *ev[2 * CYCLE_STEPS] = {NULL};
    cv_status st = times ? CV_OK : cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    for (int i = 0; i < 2 * CYCLE_STEPS && !st; i++) st = s->be->event_create(s->be, &ev[i], err);
    st = cv_comm_agree(o->backend.comm, st, err); /* every rank takes every step, or none */
    for (int i = 0; i < WARMUP_STEPS && !st; i++) {
        rewind_data(s, o->batch);
        run_step(s, &s->model, s->recording, o->batch);
    }
    for (int done = 0; done < o->steps && !st;) {
        int n = o->steps - done < CYCLE_STEPS ? o->steps - done : CYCLE_STEPS;
        for (int i = 0; i < n; i++) {
            rewind_data(s, o->batch);
            s->be->event_record(s->be, ev[2 * i]);
            run_step(s, &s->model, s->recording, o->batch);
            s->be->event_record(s->be, ev[2 * i + 1]);
        }
        for (int i = 0; i < n; i++)
            times[done + i] = s->be->event_elapsed_ms(s->be, ev[2 * i], ev[2 * i + 1]);
        done += n;
    }
    if (!st) {
        res->step_ms = median(times, o->steps);
        res->step_replayed = s->recording != NULL;
        res->samples_per_s = o->batch * 1e3 / res->step_ms;
    }
    for (int i = 0; i < 2 * CYCLE_STEPS; i++)
        if (ev[i]) s->be->event_destroy(s->be, ev[i]);
    free(times);
    return st;
}

/* Per family, the median time of an eager step, and its bytes and FLOPs: the same model
 * driven through the timing backend, read after every step. Medians, like the step's, so
 * that a step the OS interrupted does not count. */
static cv_status time_families(bench_state *s, const cv_bench_options *o, cv_bench_result *res,
                               cv_err *err) {
    const int n = o->steps;
    double *ms = malloc((size_t)n * CV_FAMILY_COUNT * sizeof(double)); /* [family][step] */
    cv_backend *timed = NULL;
    cv_status st = ms ? cv_backend_timed_create(s->be, TIMED_CALLS, &timed, err)
                      : cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    /* every rank takes every step, or none */
    st = cv_comm_agree(o->backend.comm, st, err);
    if (st) {
        if (timed) timed->destroy(timed);
        free(ms);
        return st;
    }
    cv_model view = s->model; /* the same buffers, their calls timed */
    view.be = timed;
    cv_family_stats total[CV_FAMILY_COUNT] = {{0}};
    for (int i = -WARMUP_EAGER_STEPS; i < n && !st; i++) {
        cv_family_stats one[CV_FAMILY_COUNT] = {{0}};
        rewind_data(s, o->batch);
        run_step(s, &view, NULL, o->batch);
        st = cv_comm_agree(o->backend.comm, cv_backend_timed_read(timed, one, err), err);
        for (int f = 0; f < CV_FAMILY_COUNT && i >= 0; f++) {
            ms[(size_t)f * n + i] = one[f].ms;
            total[f].bytes += one[f].bytes;
            total[f].flops += one[f].flops;
            total[f].calls += one[f].calls;
        }
    }
    timed->destroy(timed);
    res->eager_ms = 0.0;
    for (int f = 0; f < CV_FAMILY_COUNT && !st; f++) {
        cv_family_stats *r = &res->family[f];
        r->ms = median(ms + (size_t)f * n, n);
        r->bytes = total[f].bytes / n;
        r->flops = total[f].flops / n;
        r->calls = total[f].calls / n;
        res->eager_ms += r->ms;
    }
    free(ms);
    return st;
}

/* ---- the benchmark ---- */

/* The checks that need no device, so a bad shape is reported before anything runs. */
static cv_status check_options(const cv_bench_options *o, int height, int width, cv_err *err) {
    if (o->steps < 1)
        return cv_fail(err, CV_ERR_USAGE, "--steps must be at least 1, got %d", o->steps);
    if (o->batch < 1 || o->batch > (1 << 20))
        return cv_fail(err, CV_ERR_USAGE, "--batch %d is out of range 1..%d", o->batch, 1 << 20);
    if (o->dim < 1 || o->dim > (1 << 24))
        return cv_fail(err, CV_ERR_USAGE, "--dim %d is out of range 1..%d", o->dim, 1 << 24);
    if (height > 65535 || width > 65535)
        return cv_fail(err, CV_ERR_USAGE,
                       "--dim %d makes images of %d x %d, but a side may be at most 65535",
                       o->dim, height, width);
    cv_model_config cfg = model_config(o, height, width);
    cv_layout layout;
    return cv_layout_init(&cfg, &layout, err);
}

cv_status cv_bench_run(const cv_bench_options *o, cv_bench_result *res, cv_err *err) {
    memset(res, 0, sizeof *res);
    int height = 1, width = 1;
    if (o->dim >= 1) cv_bench_image_shape(o->dim, &height, &width);
    cv_status st = check_options(o, height, width, err);
    if (st) return st;
    res->height = height;
    res->width = width;
    res->steps = o->steps;

    bench_state s;
    memset(&s, 0, sizeof s);
    /* in a data-parallel run every rank agrees on each phase, so none waits in a collective
     * a failed rank never reaches */
    cv_comm *comm = o->backend.comm;
    st = cv_comm_agree(comm, cv_backend_open(o->device, &o->backend, &s.be, err), err);
    if (st) return st;
    snprintf(res->device, sizeof res->device, "%s", s.be->description);
    /* the ceilings on rank 0 alone, while the others wait: ranks that share a machine
     * would otherwise measure each other */
    if (cv_comm_rank(comm) == 0) {
        ceiling_plan plan = plan_for(s.be);
        st = measure_copy(s.be, &plan, res, err);
        if (!st) st = measure_gemm(s.be, &plan, res, err);
    }
    st = cv_comm_agree(comm, st, err);
    if (!st) st = cv_comm_agree(comm, prepare_step(&s, o, height, width, err), err);
    if (!st) res->n_params = s.model.layout.n_params;
    if (!st) st = time_steps(&s, o, res, err);
    if (!st) st = time_families(&s, o, res, err);
    state_free(&s);
    return st;
}
