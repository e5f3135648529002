/* allreduce_cuda.h: the CUDA backend's sum of a device buffer over the ranks of a
 * data-parallel run (internal to backend_cuda.c; docs/design.md 7). Two ways:
 *
 * - NCCL (the build's `nccl` option): one ncclAllReduce on the backend's stream, which a
 *   CUDA graph can record; its communicator is made from an id that rank 0 draws and MPI
 *   broadcasts. NCCL refuses two ranks on one GPU.
 * - host memory: the buffer downloaded, summed over MPI and uploaded, which no graph can
 *   record, so the backend then runs its steps eagerly. It serves builds without NCCL and
 *   runs whose ranks share a GPU.
 */
#ifndef CV_ALLREDUCE_CUDA_H
#define CV_ALLREDUCE_CUDA_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stddef.h>

#include "build_info.h"
#include "cvae/comm.h"
#include "cvae/status.h"

typedef struct cv_cuda_allreduce cv_cuda_allreduce;
struct cv_cuda_allreduce {
    /* buf (n floats, device) = its sum over the ranks, in order on the stream */
    void (*run)(cv_cuda_allreduce *a, float *buf, size_t n);
    void (*destroy)(cv_cuda_allreduce *a);
    bool recordable;     /* whether a CUDA graph can record run */
    char transport[112]; /* how the sum travels, for the device line */
};

/* Every rank of comm calls one of them alike, after its device and stream are set up.
 * why: the reason for the host path, for the device line. */
cv_status cv_host_allreduce_create(cv_comm *comm, cudaStream_t stream, const char *why,
                                   cv_cuda_allreduce **out, cv_err *err);
#if CV_BUILD_NCCL
cv_status cv_nccl_allreduce_create(cv_comm *comm, cudaStream_t stream, cv_cuda_allreduce **out,
                                   cv_err *err);
#endif

#endif
