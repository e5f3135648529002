/* cuda_memory.c: device allocation with a message a user can act on (out of GPU memory:
 * how much was asked and how much is free), for the backend, its GEMMs and the NCCL sum. */
#include "cv_cuda.h"

cv_status cv_cuda_malloc(void **ptr, size_t bytes, const char *what, cv_err *err) {
    cudaError_t e = cudaMalloc(ptr, bytes ? bytes : 1);
    if (e == cudaSuccess) return CV_OK;
    cudaGetLastError(); /* clear it, so no later check reports it again */
    *ptr = NULL;
    int device = -1;
    cudaGetDevice(&device);
    if (e != cudaErrorMemoryAllocation)
        return cv_fail(err, CV_ERR_DEVICE, "CUDA device %d is unusable: allocating %s failed: %s",
                       device, what, cudaGetErrorString(e));
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    return cv_fail(err, CV_ERR_NOMEM,
                   "out of GPU memory: %s needs %.1f MiB, %.1f MiB free of %.1f MiB", what,
                   bytes / 1048576.0, free_b / 1048576.0, total_b / 1048576.0);
}
