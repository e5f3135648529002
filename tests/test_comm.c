/* test_comm.c: what data parallelism rests on, in one process (tests/mpi.sh runs the ranks
 * themselves): how a batch is shared out, that a rank's rows gather the pixels, draw the
 * binarization and the noise of those rows in one process, the loss flag the ranks sum,
 * and a communicator of one rank. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cvae/backend.h"
#include "cvae/comm.h"
#include "cvae/rng.h"
#include "helpers.h"

static cv_backend *be;

static void setup(void) {
    cv_err err;
    cr_assert_eq(cv_backend_cpu_create(&be, &err), CV_OK);
}
static void teardown(void) { be->destroy(be); }

TestSuite(comm, .init = setup, .fini = teardown);

Test(comm, a_batch_is_shared_out_whole_in_order_the_remainder_first) {
    const int ten_over_three[3] = {4, 3, 3};
    for (int r = 0; r < 3; r++) cr_assert_eq(cv_batch_part_of(10, r, 3).rows, ten_over_three[r]);
    test_rng rng = test_rng_new("batch parts");
    for (int trial = 0; trial < 200; trial++) {
        const int total = (int)test_uniform(&rng, 0, 1000), size = 1 + (int)test_uniform(&rng, 0, 9);
        int next = 0;
        for (int r = 0; r < size; r++) {
            const cv_batch_part p = cv_batch_part_of(total, r, size);
            cr_assert_eq(p.offset, next, "%d over %d, rank %d", total, size, r);
            cr_assert(p.rows == total / size + (r < total % size), "%d over %d, rank %d: %d rows",
                      total, size, r, p.rows);
            cr_assert(p.total == total && p.ranks == size);
            next += p.rows;
        }
        cr_assert_eq(next, total, "%d over %d: %d rows taken", total, size, next);
    }
    char text[64];
    cv_batch_split_text(text, sizeof text, 128, 2);
    cr_assert_str_eq(text, "64 rows a rank");
    cv_batch_split_text(text, sizeof text, 10, 3);
    cr_assert_str_eq(text, "4 or 3 rows a rank");
}

/* The data set for the gathers: bytes or floats, labels or condition vectors. */
typedef struct {
    uint8_t pixels[60 * 37], labels[60];
    float fpixels[60 * 37], conditions[60 * 5];
    int32_t perm[60];
} gather_data;

static void fill_data(gather_data *d, test_rng *r) {
    for (int i = 0; i < 60 * 37; i++) {
        d->pixels[i] = (uint8_t)test_uniform(r, 0, 256);
        d->fpixels[i] = (float)test_uniform(r, 0, 1);
    }
    for (int i = 0; i < 60; i++) d->labels[i] = (uint8_t)test_uniform(r, 0, 10);
    test_fill(r, d->conditions, 60 * 5, -1, 1);
    for (int i = 0; i < 60; i++) d->perm[i] = i;
    for (int i = 59; i > 0; i--) { /* a shuffled order, as an epoch's */
        int j = (int)test_uniform(r, 0, i + 1), t = d->perm[i];
        d->perm[i] = d->perm[j];
        d->perm[j] = t;
    }
}

Test(comm, a_rank_s_rows_gather_and_binarize_as_in_one_process) {
    test_rng r = test_rng_new("gather part");
    static gather_data d;
    fill_data(&d, &r);
    enum { B = 23, DIM = 37, K = 5 };
    static float x_all[B * DIM], x_part[B * DIM], c_all[B * K], c_part[B * K];
    int32_t lab_all[B], lab_part[B];
    for (int kind = 0; kind < 2; kind++) {
        const cv_device_split src = {.pixels = kind ? NULL : d.pixels,
                                     .fpixels = kind ? d.fpixels : NULL,
                                     .labels = kind ? NULL : d.labels,
                                     .conditions = kind ? d.conditions : NULL, .perm = d.perm,
                                     .n = 60, .dim = DIM, .cond_width = kind ? K : 0};
        for (int binarize = 0; binarize < 2; binarize++) {
            const cv_step st = {.step = 1 + (int64_t)test_uniform(&r, 0, 1000),
                                .start = (int32_t)test_uniform(&r, 0, 60 - B)};
            be->gather_batch(be, &src, &st, 0, B, binarize, r.s, x_all, lab_all, c_all);
            for (int ranks = 2; ranks <= 4; ranks++) {
                for (int rank = 0; rank < ranks; rank++) {
                    const cv_batch_part p = cv_batch_part_of(B, rank, ranks);
                    be->gather_batch(be, &src, &st, p.offset, p.rows, binarize, r.s, x_part,
                                     lab_part, c_part);
                    cr_assert(memcmp(x_part, x_all + p.offset * DIM,
                                     (size_t)p.rows * DIM * sizeof(float)) == 0,
                              "kind %d, binarize %d: rank %d of %d gathered other values", kind,
                              binarize, rank, ranks);
                    if (kind)
                        cr_assert(memcmp(c_part, c_all + p.offset * K,
                                         (size_t)p.rows * K * sizeof(float)) == 0);
                    else
                        cr_assert(memcmp(lab_part, lab_all + p.offset,
                                         (size_t)p.rows * sizeof(int32_t)) == 0);
                }
            }
        }
    }
}

Test(comm, a_rank_s_rows_draw_the_noise_of_one_process) {
    test_rng r = test_rng_new("noise part");
    enum { B = 19, L = 6, K = 4 };
    static float enc[B * 2 * L], eps_all[B * L], z_all[B * L], kl_all[B], lr_all[B];
    static float eps[B * L], z[B * L], kl[B], lr[B], pm[K * L], pr[K * L];
    int32_t labels[B];
    test_fill(&r, enc, B * 2 * L, -2, 2);
    test_fill(&r, pm, K * L, -1, 1);
    test_fill(&r, pr, K * L, -1, 1);
    for (int i = 0; i < B; i++) labels[i] = (int32_t)test_uniform(&r, 0, K);
    const cv_step st = {.step = 1 + (int64_t)test_uniform(&r, 0, 1000)};
    const cv_prior tables = {pm, pr, false};
    const cv_prior *priors[2] = {NULL, &tables}; /* standard normal, per class */
    for (int pi = 0; pi < 2; pi++) {
        const cv_prior *prior = priors[pi];
        be->reparam_forward(be, enc, eps_all, true, r.s, CV_STREAM_TRAIN_EPS(0), &st, 0, prior,
                            labels, z_all, kl_all, lr_all, B, L);
        for (int ranks = 2; ranks <= 3; ranks++) {
            for (int rank = 0; rank < ranks; rank++) {
                const cv_batch_part p = cv_batch_part_of(B, rank, ranks);
                be->reparam_forward(be, enc + p.offset * 2 * L, eps, true, r.s,
                                    CV_STREAM_TRAIN_EPS(0), &st, p.offset, prior,
                                    labels + p.offset, z, kl, lr, p.rows, L);
                const size_t n = (size_t)p.rows * L * sizeof(float);
                cr_assert(memcmp(eps, eps_all + p.offset * L, n) == 0,
                          "prior %d: rank %d of %d drew other noise", pi, rank, ranks);
                cr_assert(memcmp(z, z_all + p.offset * L, n) == 0);
                cr_assert(memcmp(kl, kl_all + p.offset, (size_t)p.rows * sizeof(float)) == 0);
                cr_assert(memcmp(lr, lr_all + p.offset, (size_t)p.rows * sizeof(float)) == 0);
            }
        }
    }
}

Test(comm, the_loss_flag_is_nan_when_any_row_is_not_finite) {
    test_rng r = test_rng_new("loss flag");
    float rec[40], kl[40], flag = 1.0f;
    test_fill(&r, rec, 40, 50, 300);
    test_fill(&r, kl, 40, 0, 20);
    be->loss_flag(be, rec, kl, 40, &flag);
    cr_assert(flag == 0.0f, "finite losses flagged %g", flag);
    be->loss_flag(be, rec, kl, 0, &flag);
    cr_assert(flag == 0.0f, "no rows flagged %g", flag);
    const float bad[3] = {INFINITY, -INFINITY, NAN};
    for (int b = 0; b < 3; b++) {
        for (int which = 0; which < 2; which++) {
            const int row = (int)test_uniform(&r, 0, 40);
            float *v = which ? kl : rec, keep = v[row];
            v[row] = bad[b];
            be->loss_flag(be, rec, kl, 40, &flag);
            cr_assert(isnan(flag), "%s[%d] = %g flagged %g", which ? "kl" : "rec", row, bad[b],
                      flag);
            v[row] = keep;
        }
    }
}

/* Started without a launcher, a process is rank 0 of 1: its sums are its values, its
 * agreement its own status. */
Test(comm, one_process_is_rank_0_of_1) {
    unsetenv("OMPI_COMM_WORLD_SIZE");
    unsetenv("OMPI_COMM_WORLD_RANK");
    unsetenv("PMI_SIZE");
    unsetenv("PMI_RANK");
    unsetenv("PMIX_RANK");
    int argc = 1;
    char *args[] = {"test_comm", NULL}, **argv = args;
    cv_comm *comm;
    cv_err err;
    cr_assert_eq(cv_comm_open(&argc, &argv, &comm, &err), CV_OK, "%s", err.msg);
    cr_assert(cv_comm_rank(comm) == 0 && cv_comm_size(comm) == 1 && cv_comm_local_rank(comm) == 0);
    cr_assert(cv_comm_launcher_rank() == 0 && cv_comm_launcher_size() == 1);
    float f[3] = {1.5f, -2.0f, 3.25f};
    cv_comm_sum_f32(comm, f, 3);
    cr_assert(f[0] == 1.5f && f[1] == -2.0f && f[2] == 3.25f);
    cr_assert_eq(cv_comm_max_int(comm, -7), -7);
    int all = 0, mine = 42;
    cv_comm_gather(comm, &mine, sizeof mine, &all);
    cr_assert_eq(all, 42);
    cv_fail(&err, CV_ERR_IO, "kept");
    cr_assert_eq(cv_comm_agree(comm, CV_ERR_IO, &err), CV_ERR_IO);
    cr_assert_str_eq(err.msg, "kept");
    cv_comm_close(comm);
}
