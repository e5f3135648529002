/* allreduce_cuda.h: the CUDA backend's sum of a device buffer over the ranks of a
 * data-parallel run (internal to backend_cuda.c; docs/design.md 7).
 *
 * With NCCL (the build's `nccl` option), one ncclAllReduce on the backend's stream, which a
 * CUDA graph can record; its communicator is made from an id that rank 0 draws and MPI
 * broadcasts. Without it, the buffer goes through host memory: downloaded, summed over MPI
 * and uploaded, which no graph can record, so the backend then runs its steps eagerly.
 */
#ifndef CV_ALLREDUCE_CUDA_H
#define CV_ALLREDUCE_CUDA_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stddef.h>

#include "cvae/comm.h"
#include "cvae/status.h"

typedef struct cv_cuda_allreduce cv_cuda_allreduce;

/* Every rank of comm calls it, after its device and stream are set up. */
cv_status cv_cuda_allreduce_create(cv_comm *comm, cudaStream_t stream, cv_cuda_allreduce **out,
                                   cv_err *err);
void cv_cuda_allreduce_destroy(cv_cuda_allreduce *a);

/* buf (n floats, device) = its sum over the ranks, in order on the stream. */
void cv_cuda_allreduce_run(cv_cuda_allreduce *a, float *buf, size_t n);

/* Whether a CUDA graph can record cv_cuda_allreduce_run; and how the sum travels. */
bool cv_cuda_allreduce_recordable(const cv_cuda_allreduce *a);
const char *cv_cuda_allreduce_transport(const cv_cuda_allreduce *a);

#endif
