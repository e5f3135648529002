/* allreduce_nccl.c: the device buffer's sum over the ranks through NCCL (allreduce_cuda.h).
 * Rank 0 draws the NCCL id and MPI hands it to the others; every rank then joins one NCCL
 * communicator, rank for rank as in MPI. NCCL's ring sums in an order fixed by the ranks
 * and the buffer's size, so the bits repeat from run to run on the same machines. */
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>

#include "allreduce_cuda.h"

struct cv_cuda_allreduce {
    ncclComm_t nccl;
    cudaStream_t stream;
};

cv_status cv_cuda_allreduce_create(cv_comm *comm, cudaStream_t stream, cv_cuda_allreduce **out,
                                   cv_err *err) {
    *out = NULL;
    cv_cuda_allreduce *a = calloc(1, sizeof *a);
    if (!a) return cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    ncclUniqueId id;
    ncclResult_t rc = ncclSuccess;
    if (cv_comm_rank(comm) == 0) rc = ncclGetUniqueId(&id);
    /* rank 0's failure must reach the others before they wait in ncclCommInitRank */
    cv_status st = rc == ncclSuccess ? CV_OK
                                     : cv_fail(err, CV_ERR_DEVICE, "ncclGetUniqueId failed: %s",
                                               ncclGetErrorString(rc));
    st = cv_comm_agree(comm, st, err);
    if (!st) {
        cv_comm_broadcast(comm, &id, sizeof id, 0);
        rc = ncclCommInitRank(&a->nccl, cv_comm_size(comm), id, cv_comm_rank(comm));
        st = rc == ncclSuccess ? CV_OK
                               : cv_fail(err, CV_ERR_DEVICE, "ncclCommInitRank failed: %s",
                                         ncclGetErrorString(rc));
    }
    if (st) {
        free(a);
        return st;
    }
    a->stream = stream;
    *out = a;
    return CV_OK;
}

void cv_cuda_allreduce_destroy(cv_cuda_allreduce *a) {
    if (!a) return;
    ncclCommDestroy(a->nccl);
    free(a);
}

void cv_cuda_allreduce_run(cv_cuda_allreduce *a, float *buf, size_t n) {
    ncclResult_t rc = ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, a->nccl, a->stream);
    if (rc == ncclSuccess) return;
    fprintf(stderr, "cvae: ncclAllReduce of %zu floats failed: %s\n", n, ncclGetErrorString(rc));
    abort();
}

bool cv_cuda_allreduce_recordable(const cv_cuda_allreduce *a) {
    (void)a;
    return true;
}

const char *cv_cuda_allreduce_transport(const cv_cuda_allreduce *a) {
    (void)a;
    return "NCCL";
}
