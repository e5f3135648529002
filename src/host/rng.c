/* rng.c: host-side draws from the Philox streams of rng.h. */
#include <stddef.h>

#include "cv_math.h"
#include "cvae/rng.h"

/* Sequential uint32 values of one stream. */
typedef struct {
    uint64_t seed, stream, block;
    cv_u32x4 buf;
    int used;
} philox_reader;

static uint32_t next_u32(philox_reader *r) {
    if (r->used == 4) {
        r->buf = cv_philox_block(r->seed, r->stream, r->block++);
        r->used = 0;
    }
    return r->buf.v[r->used++];
}

void cv_shuffle(int32_t *perm, int n, uint64_t seed, uint64_t stream) {
    philox_reader r = {seed, stream, 0, {{0, 0, 0, 0}}, 4};
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        /* uniform j in [0, i] by rejection, so no index is favoured */
        uint32_t bound = (uint32_t)i + 1;
        uint32_t limit = UINT32_MAX - UINT32_MAX % bound;
        uint32_t u;
        do u = next_u32(&r); while (u >= limit);
        int j = (int)(u % bound);
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

void cv_uniform_fill(float *out, size_t n, uint64_t seed, uint64_t stream) {
    for (size_t i = 0; i < n; i += 4) {
        cv_u32x4 b = cv_philox_block(seed, stream, i / 4);
        for (size_t k = 0; k < 4 && i + k < n; k++) out[i + k] = cv_uniform01(b.v[k]);
    }
}

void cv_normal_fill(float *out, size_t n, uint64_t seed, uint64_t stream) {
    /* counter-based: every block of 4 is independent, so threads can split them */
    const long blocks = (long)((n + 3) / 4);
#pragma omp parallel for if (blocks > 1024) schedule(static)
    for (long blk = 0; blk < blocks; blk++) {
        size_t i = (size_t)blk * 4;
        cv_u32x4 b = cv_philox_block(seed, stream, (uint64_t)blk);
        float v[4];
        cv_box_muller(b.v[0], b.v[1], &v[0], &v[1]);
        cv_box_muller(b.v[2], b.v[3], &v[2], &v[3]);
        for (size_t k = 0; k < 4 && i + k < n; k++) out[i + k] = v[k];
    }
}
