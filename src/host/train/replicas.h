/* replicas.h: the check that the ranks of a data-parallel run hold one model (internal to the
 * training run: train_setup.c, called at the start and each epoch's end; docs/design.md 7). */
#ifndef CV_REPLICAS_H
#define CV_REPLICAS_H

#include <stddef.h>
#include <stdint.h>

#include "cvae/comm.h"
#include "cvae/data.h"
#include "cvae/model.h"

/* A CRC-32 of the split's shape, values and conditions: what every rank must have read. */
uint32_t cv_split_crc(const cv_split *s);

/* Every rank calls it: CV_OK when every rank's parameters, Adam state and `place` (any
 * bytes the ranks must share, e.g. the data's CRC and the step) are rank 0's; else, on the
 * first rank that differs, one line saying so (cv_comm_agree), at step `step`. */
cv_status cv_replicas_agree(cv_comm *comm, const cv_model *m, const void *place,
                            size_t place_bytes, int64_t step, cv_err *err);

#endif
