/* rng.h: every random draw in cvae comes from Philox4x32-10 keyed by the run's seed.
 *
 * A draw is named by its stream, so any of them can be replayed without carrying state:
 * the training noise of step t is stream t, an epoch's shuffle, the initialisation and
 * the evaluation noise each have a stream range of their own.
 */
#ifndef CVAE_RNG_H
#define CVAE_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CV_STREAM_TRAIN_EPS(step) ((uint64_t)(step))
/* the IWAE objective's draw k of a step: stream CV_STREAM_TRAIN_EPS(step) + this (draw 0
 * is the ELBO's; k < 2^20, steps < 2^40) */
#define CV_STREAM_IWAE_SAMPLE(k) ((uint64_t)(k) << 40)
#define CV_STREAM_EVAL_EPS(batch) (UINT64_C(0x4000000000000000) | (uint64_t)(batch))
#define CV_STREAM_SHUFFLE(epoch) (UINT64_C(0x8000000000000000) | (uint64_t)(epoch))
/* cvae score's classifiers and regressions: the shuffle of their epoch e (from 0) */
#define CV_STREAM_SCORE_SHUFFLE(epoch) (UINT64_C(0x9000000000000000) | (uint64_t)(epoch))
#define CV_STREAM_INIT UINT64_C(0xC000000000000000)
#define CV_STREAM_BINARIZE(step) (UINT64_C(0x2000000000000000) | (uint64_t)(step))
/* the test set is binarized once, with this seed and stream, whatever the run's seed */
#define CV_BINARIZE_TEST_SEED UINT64_C(0x7E57)
#define CV_STREAM_BINARIZE_TEST UINT64_C(0x1000000000000000)
#define CV_STREAM_GEN_Z(image) (UINT64_C(0xA000000000000000) | (uint64_t)(image))
#define CV_STREAM_GEN_PIXELS(image) (UINT64_C(0xB000000000000000) | (uint64_t)(image))

/* perm = a uniformly random permutation of 0..n-1 (Fisher-Yates, unbiased). */
void cv_shuffle(int32_t *perm, int n, uint64_t seed, uint64_t stream);

/* out[i] = element i of the uniform (0, 1] Philox stream. */
void cv_uniform_fill(float *out, size_t n, uint64_t seed, uint64_t stream);

/* out[i] = element i of the standard normal Philox stream (cuRAND's Box-Muller). */
void cv_normal_fill(float *out, size_t n, uint64_t seed, uint64_t stream);
/* out[i] = element first + i of it: a rank's rows of a batch draw what the whole batch's
 * rows would. */
void cv_normal_fill_from(float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t first);

#ifdef __cplusplus
}
#endif

#endif
