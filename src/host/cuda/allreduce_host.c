/* allreduce_host.c: the device buffer's sum over the ranks through host memory and MPI
 * (allreduce_cuda.h): two copies a step and no recorded steps, but it runs wherever MPI
 * does. */
#include <stdio.h>
#include <stdlib.h>

#include "allreduce_cuda.h"
#include "cv_cuda.h"

typedef struct {
    cv_cuda_allreduce base;
    cv_comm *comm;
    cudaStream_t stream;
    float *host; /* pinned, grown to the largest buffer summed */
    size_t capacity;
} host_allreduce;

static void host_destroy(cv_cuda_allreduce *base) {
    host_allreduce *a = (host_allreduce *)base;
    if (a->host) cudaFreeHost(a->host);
    free(a);
}

static void host_run(cv_cuda_allreduce *base, float *buf, size_t n) {
    host_allreduce *a = (host_allreduce *)base;
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
    /* stream-ordered before the next download into the same buffer */
    CV_CUDA_CHECK(cudaMemcpyAsync(buf, a->host, n * sizeof(float), cudaMemcpyHostToDevice,
                                  a->stream));
}

cv_status cv_host_allreduce_create(cv_comm *comm, cudaStream_t stream, const char *why,
                                   cv_cuda_allreduce **out, cv_err *err) {
    host_allreduce *a = calloc(1, sizeof *a);
    *out = NULL;
    if (!a) return cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    a->base.run = host_run;
    a->base.destroy = host_destroy;
    a->base.recordable = false;
    snprintf(a->base.transport, sizeof a->base.transport, "host memory over MPI (%s)", why);
    a->comm = comm;
    a->stream = stream;
    *out = &a->base;
    return CV_OK;
}
