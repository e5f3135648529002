/* replicas.c: the ranks of a data-parallel run start from the same bits (one checkpoint or
 * one seed, the same data) and take the same steps from the same sums, so they hold one
 * model. The training run checks it at the start (train_setup.c) and after every epoch
 * (train.c), with a CRC-32 of each rank's state against rank 0's, before rank 0 saves its
 * copy as the run's. */
#include <zlib.h>

#include "cvae/checkpoint.h"
#include "replicas.h"

static uint32_t crc_of(uint32_t crc, const void *p, size_t bytes) {
    return p ? (uint32_t)crc32_z(crc, (const Bytef *)p, bytes) : crc;
}

uint32_t cv_split_crc(const cv_split *s) {
    const int shape[5] = {s->n, s->h, s->w, s->channels, s->cond_width};
    const size_t values = (size_t)s->n * s->h * s->w * s->channels;
    uint32_t crc = crc_of(0, shape, sizeof shape);
    crc = crc_of(crc, s->pixels, values);
    crc = crc_of(crc, s->fpixels, values * sizeof(float));
    crc = crc_of(crc, s->labels, (size_t)s->n);
    return crc_of(crc, s->conditions, (size_t)s->n * s->cond_width * sizeof(float));
}

cv_status cv_replicas_agree(cv_comm *comm, const cv_model *m, const void *place,
                            size_t place_bytes, int64_t step, cv_err *err) {
    if (cv_comm_size(comm) == 1) return CV_OK;
    cv_checkpoint ck = {0};
    cv_status st = cv_checkpoint_from_model(m, &ck, err);
    uint32_t crc = crc_of(0, place, place_bytes);
    if (!st) {
        const size_t bytes = ck.n_params * sizeof(float);
        crc = crc_of(crc, ck.params, bytes);
        crc = crc_of(crc, ck.adam_m, bytes);
        crc = crc_of(crc, ck.adam_v, bytes);
    }
    cv_checkpoint_free(&ck);
    st = cv_comm_agree(comm, st, err);
    if (st) return st;
    uint32_t leader = crc;
    cv_comm_broadcast(comm, &leader, sizeof leader, 0);
    if (crc != leader)
        st = cv_fail(err, CV_ERR_FORMAT, "at step %lld its model (parameters and Adam state), "
                     "place in the data or training data differs from rank 0's: every rank "
                     "must read the same data and resume the same checkpoint, and their "
                     "gradient sums must agree", (long long)step);
    return cv_comm_agree(comm, st, err);
}
