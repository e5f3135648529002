/* allreduce_nccl.c: the device buffer's sum over the ranks through NCCL (allreduce_cuda.h).
 * Rank 0 draws the NCCL id and MPI hands it to the others; every rank then joins one NCCL
 * communicator, rank for rank as in MPI. NCCL's ring sums in an order fixed by the ranks
 * and the buffer's size, so the bits repeat from run to run on the same machines. */
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>

#include "allreduce_cuda.h"
#include "cv_cuda.h"

/* NCCL's operations can be captured in a CUDA graph from version 2.9.6 */
#define NCCL_CAPTURE_VERSION 20906

typedef struct {
    cv_cuda_allreduce base;
    ncclComm_t nccl;
    cudaStream_t stream;
} nccl_allreduce;

/* A failure once the ranks have entered NCCL: the others may be waiting inside it for this
 * one, where no agreement reaches them, so one line and an abort, which makes the
 * launcher end the job. */
static void nccl_check(ncclResult_t rc, const char *call, cv_comm *comm) {
    if (rc == ncclSuccess) return;
    fprintf(stderr, "cvae: rank %d of %d: %s failed: %s\n", cv_comm_rank(comm),
            cv_comm_size(comm), call, ncclGetErrorString(rc));
    abort();
}

static void nccl_destroy(cv_cuda_allreduce *base) {
    nccl_allreduce *a = (nccl_allreduce *)base;
    ncclCommDestroy(a->nccl);
    free(a);
}

static void nccl_run(cv_cuda_allreduce *base, float *buf, size_t n) {
    nccl_allreduce *a = (nccl_allreduce *)base;
    ncclResult_t rc = ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, a->nccl, a->stream);
    if (rc == ncclSuccess) return;
    fprintf(stderr, "cvae: ncclAllReduce of %zu floats failed: %s\n", n, ncclGetErrorString(rc));
    abort();
}

cv_status cv_nccl_allreduce_create(cv_comm *comm, cudaStream_t stream, cv_cuda_allreduce **out,
                                   cv_err *err) {
    *out = NULL;
    nccl_allreduce *a = calloc(1, sizeof *a);
    float *probe = NULL;
    ncclUniqueId id;
    cv_status st = a ? cv_cuda_malloc((void **)&probe, sizeof *probe, "the NCCL probe", err)
                     : cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    if (!st && cv_comm_rank(comm) == 0) {
        ncclResult_t rc = ncclGetUniqueId(&id);
        if (rc != ncclSuccess)
            st = cv_fail(err, CV_ERR_DEVICE, "ncclGetUniqueId failed: %s", ncclGetErrorString(rc));
    }
    /* every failure that can be shared must be, before the ranks wait inside NCCL */
    st = cv_comm_agree(comm, st, err);
    if (st) {
        if (probe) cudaFree(probe);
        free(a);
        return st;
    }
    cv_comm_broadcast(comm, &id, sizeof id, 0);
    nccl_check(ncclCommInitRank(&a->nccl, cv_comm_size(comm), id, cv_comm_rank(comm)),
               "ncclCommInitRank", comm);
    a->stream = stream;
    a->base.run = nccl_run;
    a->base.destroy = nccl_destroy;
    /* one sum now, outside any graph: NCCL connects its ranks on first use, and a broken
     * transport shows here rather than in a recorded step */
    CV_CUDA_CHECK(cudaMemsetAsync(probe, 0, sizeof *probe, stream));
    nccl_run(&a->base, probe, 1);
    CV_CUDA_CHECK(cudaStreamSynchronize(stream));
    CV_CUDA_CHECK(cudaFree(probe));
    int version = 0;
    nccl_check(ncclGetVersion(&version), "ncclGetVersion", comm);
    a->base.recordable = version >= NCCL_CAPTURE_VERSION;
    /* the version's code is major*10000 + minor*100 + patch from 2.9, major*1000 before */
    const int major_unit = version >= 10000 ? 10000 : 1000;
    snprintf(a->base.transport, sizeof a->base.transport, "NCCL %d.%d.%d%s",
             version / major_unit, version % major_unit / 100, version % 100,
             a->base.recordable ? "" : " (too old for CUDA graphs: steps run eagerly)");
    *out = &a->base;
    return CV_OK;
}
