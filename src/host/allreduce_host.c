/* allreduce_host.c: the device buffer's sum over the ranks through host memory and MPI,
 * for builds without NCCL (allreduce_cuda.h): the same binary still runs data-parallel on
 * GPUs, at the cost of two copies a step and no recorded steps. */
#include <stdio.h>
#include <stdlib.h>

#include "allreduce_cuda.h"
#include "cv_cuda.h"

struct cv_cuda_allreduce {
    cv_comm *comm;
    cudaStream_t stream;
    float *host; /* pinned, grown to the largest buffer summed */
    size_t capacity;
};

cv_status cv_cuda_allreduce_create(cv_comm *comm, cudaStream_t stream, cv_cuda_allreduce **out,
                                   cv_err *err) {
    *out = calloc(1, sizeof **out);
    if (!*out) return cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    (*out)->comm = comm;
    (*out)->stream = stream;
    return CV_OK;
}

void cv_cuda_allreduce_destroy(cv_cuda_allreduce *a) {
    if (!a) return;
    if (a->host) cudaFreeHost(a->host);
    free(a);
}

void cv_cuda_allreduce_run(cv_cuda_allreduce *a, float *buf, size_t n) {
    if (n > a->capacity) {
        CV_CUDA_CHECK(cudaStreamSynchronize(a->stream)); /* the last upload read it */
        if (a->host) CV_CUDA_CHECK(cudaFreeHost(a->host));
        a->host = NULL;
        CV_CUDA_CHECK(cudaMallocHost((void **)&a->host, n * sizeof(float)));
        a->capacity = n;
    }
    CV_CUDA_CHECK(cudaMemcpyAsync(a->host, buf, n * sizeof(float), cudaMemcpyDeviceToHost,
                                  a->stream));
    CV_CUDA_CHECK(cudaStreamSynchronize(a->stream));
    cv_comm_sum_f32(a->comm, a->host, n);
    CV_CUDA_CHECK(cudaMemcpyAsync(buf, a->host, n * sizeof(float), cudaMemcpyHostToDevice,
                                  a->stream));
}

bool cv_cuda_allreduce_recordable(const cv_cuda_allreduce *a) {
    (void)a;
    return false;
}

const char *cv_cuda_allreduce_transport(const cv_cuda_allreduce *a) {
    (void)a;
    return "host memory over MPI (no NCCL in this build)";
}
