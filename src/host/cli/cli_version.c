/* cli_version.c: `cvae --version`: the version and what this build runs on. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>

#include "build_info.h"
#include "cli.h"
#include "cuda/cuda_module.h"
#include "cvae/version.h"

int cv_cmd_version(const char *coretype) {
    printf("cvae %s\n", CVAE_VERSION_STRING);
#if CV_BUILD_CUDA
    printf("CUDA backend: built for %s (GEMMs through cuBLASLt), in a module loaded on the "
           "first use of a GPU\n", CV_BUILD_CUDA_CODES);
    char module[PATH_MAX + 1024];
    cv_cuda_module_describe(module, sizeof module);
    printf("%s\n", module);
#else
    printf("CUDA backend: not built\n");
#endif
    if (CV_BUILD_CUDA)
        printf("precisions: fp32 (default), bf16 and tf32x3 on the CPU and the GPU, tf32 on "
               "the GPU\n");
    else
        printf("precisions: fp32 (default), bf16 and tf32x3 (tf32 needs the CUDA backend)\n");
    if (!CV_BUILD_MPI)
        printf("data parallelism: not built (no MPI)\n");
    else if (!CV_BUILD_CUDA)
        printf("data parallelism: MPI (mpirun -np N cvae train ...)\n");
    else
        printf("data parallelism: MPI (mpirun -np N cvae train ...); GPU gradients summed %s\n",
               CV_BUILD_NCCL ? "with NCCL" : "through host memory (no NCCL)");
    printf("ONNX export: %s\n", CV_BUILD_ONNX ? "built (protobuf-c)" : "not built (no protobuf-c "
           "or onnx.proto at configure time)");
    printf("OpenMP threads: %d\n", omp_get_max_threads());
    /* --version runs without cli_main.c's restart, so OpenBLAS's own choice is in use here */
    if (coretype)
        printf("OpenBLAS core: %s (the commands that compute ask for %s: OPENBLAS_CORETYPE)\n",
               openblas_get_corename(), coretype);
    else
        printf("OpenBLAS core: %s\n", openblas_get_corename());
    return 0;
}
