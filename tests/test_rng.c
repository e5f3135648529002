/* test_rng.c: the random numbers: Philox against its known answers, the normal and
 * uniform streams (statistics, replay, independence of rows), seeded shuffles, and
 * generated pixels. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cv_math.h"
#include "cvae/backend.h"
#include "cvae/rng.h"
#include "helpers.h"

static cv_backend *be;

static void setup(void) {
    cv_err err;
    cr_assert_eq(cv_backend_cpu_create(&be, &err), CV_OK);
}
static void teardown(void) { be->destroy(be); }

TestSuite(rng, .init = setup, .fini = teardown);

Test(rng, philox_known_answers) {
    /* Random123's known-answer vectors for philox4x32-10 */
    cv_u32x4 zero = {{0, 0, 0, 0}};
    cv_u32x4 a = cv_philox4x32_10(zero, 0, 0);
    cr_assert(a.v[0] == 0x6627e8d5u && a.v[1] == 0xe169c58du && a.v[2] == 0xbc57ac4cu &&
                  a.v[3] == 0x9b00dbd8u,
              "zero vector: %08x %08x %08x %08x", a.v[0], a.v[1], a.v[2], a.v[3]);
    cv_u32x4 ones = {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}};
    cv_u32x4 b = cv_philox4x32_10(ones, 0xffffffffu, 0xffffffffu);
    cr_assert(b.v[0] == 0x408f276du && b.v[1] == 0x41c83b0eu && b.v[2] == 0xa20bc7c6u &&
                  b.v[3] == 0x6d5451fdu,
              "ones vector: %08x %08x %08x %08x", b.v[0], b.v[1], b.v[2], b.v[3]);
    cv_u32x4 pi = {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}};
    cv_u32x4 c = cv_philox4x32_10(pi, 0xa4093822u, 0x299f31d0u);
    cr_assert(c.v[0] == 0xd16cfe09u && c.v[1] == 0x94fdccebu && c.v[2] == 0x5001e420u &&
                  c.v[3] == 0x24126ea1u,
              "pi vector: %08x %08x %08x %08x", c.v[0], c.v[1], c.v[2], c.v[3]);
}

/* cuRAND's range: 0 is never drawn, 1 is (the top 128 words round to it), so anything
 * scaled by a uniform reaches its bound. */
Test(rng, uniforms_lie_in_zero_excluded_one_included) {
    cr_assert_gt(cv_uniform01(0), 0.0f);
    cr_assert_eq(cv_uniform01(0xffffffffu), 1.0f);
    cr_assert_eq(cv_uniform01(0xffffffffu - 127u), 1.0f);
    cr_assert_lt(cv_uniform01(0xffffffffu - 128u), 1.0f);
}

/* Bernoulli(p) from u in (0, 1]: 1 whenever p is 1 (u may be 1), never when p is 0. */
Test(rng, bernoulli_draws_of_zero_and_one_are_certain) {
    const float u_max = cv_uniform01(0xffffffffu), u_min = cv_uniform01(0);
    cr_assert_eq(cv_pixel_sample(30.0f, u_max), 255, "a white pixel (p = 1) drawn as black");
    cr_assert_eq(cv_pixel_sample(-200.0f, u_min), 0, "a black pixel (p = 0) drawn as white");
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

Test(rng, normal_draws_are_standard_normal) {
    test_rng r = test_rng_new("normal");
    const size_t n = 1000003;
    float *x = malloc(n * 4);
    be->normal(be, x, 1, (int)n, r.s, 12345);
    double mean = 0, var = 0, tail = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert(isfinite(x[i]));
        mean += x[i];
    }
    mean /= n;
    for (size_t i = 0; i < n; i++) {
        var += (x[i] - mean) * (x[i] - mean);
        tail += fabsf(x[i]) > 2.0f;
    }
    var /= n - 1;
    tail /= n;
    /* thresholds at ~6 standard errors: false alarms are 1e-9 events */
    cr_assert(fabs(mean) < 6.0 / sqrt(n), "mean %g", mean);
    cr_assert(fabs(var - 1.0) < 6.0 * sqrt(2.0 / n), "variance %g", var);
    cr_assert(fabs(tail - 0.0455003) < 6.0 * sqrt(0.0455 * 0.9545 / n), "P(|x|>2) = %g", tail);
    /* Kolmogorov-Smirnov against Phi: D > 2.2/sqrt(n) has probability below 1e-4 */
    qsort(x, n, 4, cmp_float);
    double d = 0;
    for (size_t i = 0; i < n; i += 7) {
        double cdf = 0.5 * erfc(-x[i] / sqrt(2.0));
        double lo = fabs(cdf - (double)i / n), hi = fabs(cdf - (double)(i + 1) / n);
        d = fmax(d, fmax(lo, hi));
    }
    cr_assert(d < 2.2 / sqrt(n), "KS distance %g", d);
    free(x);
}

Test(rng, normal_streams_are_replayable_and_distinct) {
    test_rng r = test_rng_new("normal streams");
    float a[1000], b[1000], c[10];
    be->normal(be, a, 1, 1000, r.s, 5);
    be->normal(be, b, 1, 1000, r.s, 5);
    cr_assert(memcmp(a, b, sizeof a) == 0, "the same stream gave different draws");
    be->normal(be, c, 1, 10, r.s, 5);
    cr_assert(memcmp(a, c, sizeof c) == 0, "a draw depends on how many are asked for");
    /* rows of a batch are streams of their own: row 1 of a batch from stream 4 is the
     * start of stream 5 */
    float rows2[2][10];
    be->normal(be, &rows2[0][0], 2, 10, r.s, 4);
    cr_assert(memcmp(rows2[1], a, sizeof rows2[1]) == 0, "row streams are not first + r");
    be->normal(be, b, 1, 1000, r.s, 6);
    int same = 0;
    for (int i = 0; i < 1000; i++) same += a[i] == b[i];
    cr_assert_lt(same, 5, "streams 5 and 6 agree on %d of 1000 draws", same);
}

Test(rng, shuffle_is_a_uniform_seeded_permutation) {
    test_rng r = test_rng_new("shuffle");
    int32_t p[1000], q[1000];
    cv_shuffle(p, 1000, r.s, 1);
    cv_shuffle(q, 1000, r.s, 1);
    cr_assert(memcmp(p, q, sizeof p) == 0, "the same seed gave another order");
    int seen[1000] = {0};
    for (int i = 0; i < 1000; i++) seen[p[i]]++;
    for (int i = 0; i < 1000; i++) cr_assert_eq(seen[i], 1, "not a permutation");
    cv_shuffle(q, 1000, r.s, 2);
    cr_assert(memcmp(p, q, sizeof p) != 0, "two epochs gave the same order");
    /* all 24 orders of 4 items equally often: chi-square with 23 degrees of freedom,
     * 70 is past its 1e-6 quantile */
    int counts[24] = {0};
    const int trials = 48000;
    for (int t = 0; t < trials; t++) {
        int32_t s[4];
        cv_shuffle(s, 4, r.s, 100 + (uint64_t)t);
        int code = 0, used = 0;
        for (int i = 0; i < 4; i++) {
            int rank = 0;
            for (int k = 0; k < s[i]; k++) rank += !(used >> k & 1);
            used |= 1 << s[i];
            code = code * (4 - i) + rank;
        }
        counts[code]++;
    }
    double chi = 0, expect = trials / 24.0;
    for (int i = 0; i < 24; i++) chi += (counts[i] - expect) * (counts[i] - expect) / expect;
    cr_assert_lt(chi, 70.0, "chi-square %g over the 24 orders", chi);
}

Test(rng, pixels_from_logits_mean_and_sample) {
    test_rng r = test_rng_new("pixels");
    const int rows = 33, cols = 257;
    float *l = malloc(rows * cols * 4);
    uint8_t *mean = malloc(rows * cols), *samp = malloc(rows * cols), *again = malloc(rows * cols);
    test_fill(&r, l, (size_t)rows * cols, -6, 6);
    l[0] = 0.0f; /* sigmoid 0.5: 127.5 rounds half up */
    be->pixels_from_logits(be, CV_LIKELIHOOD_BERNOULLI, 0, l, rows, cols, true, r.s, 0, mean);
    for (int i = 0; i < rows * cols; i++) {
        double ref = floor(255.0 / (1.0 + exp(-(double)l[i])) + 0.5);
        cr_assert(fabs(mean[i] - ref) <= 1, "mean pixel %d: %d vs %g", i, mean[i], ref);
    }
    cr_assert_eq(mean[0], 128);
    be->pixels_from_logits(be, CV_LIKELIHOOD_BERNOULLI, 0, l, rows, cols, false, r.s, 100, samp);
    be->pixels_from_logits(be, CV_LIKELIHOOD_BERNOULLI, 0, l, rows, cols, false, r.s, 100, again);
    cr_assert(memcmp(samp, again, (size_t)rows * cols) == 0, "samples are not replayable");
    double ones = 0, expect = 0;
    for (int i = 0; i < rows * cols; i++) {
        cr_assert(samp[i] == 0 || samp[i] == 255);
        ones += samp[i] == 255;
        expect += 1.0 / (1.0 + exp(-(double)l[i]));
    }
    /* a sum of independent Bernoullis: within 6 standard deviations (< sqrt(n)/2) */
    cr_assert(fabs(ones - expect) < 6 * sqrt(rows * cols / 4.0), "%g ones, expected %g", ones,
              expect);
    free(l); free(mean); free(samp); free(again);
}

