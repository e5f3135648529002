/* cuda_module.h: the CUDA backend as a module loaded on its first use (internal).
 *
 * A CUDA build puts the backend (backend_cuda.c, gemm_cuda.c, the allreduces and the
 * kernels) in its own shared module, libcvae-cuda.so, linked against the CUDA runtime,
 * cuBLASLt and NCCL. libcvae itself links none of them: cv_backend_cuda_create and
 * cv_backend_cuda_available (cuda_loader.c) dlopen the module the first time a command
 * asks for a GPU, so that a CUDA build starts, and runs on the CPU, where the CUDA
 * libraries are missing, as fast and as small as a CPU build (the loader would otherwise
 * map and relocate cuBLASLt's 540 MB before main: bench/results/startup-cpu.md).
 *
 * The module is looked for, in order: beside the shared libcvae (when the program uses
 * it), beside the program, in the program's installed library folder (bin/../lib/...),
 * then by name on the dynamic loader's path (LD_LIBRARY_PATH, RUNPATH, ld.so.cache). A
 * module of another build (cv_cuda_module_abi differs) is passed over.
 */
#ifndef CV_CUDA_MODULE_H
#define CV_CUDA_MODULE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "build_info.h"
#include "cvae/backend.h"
#include "cvae/status.h"
#include "cvae/version.h"

#define CV_CUDA_MODULE_FILE "libcvae-cuda.so"

/* What the module and the libcvae that loads it must agree on: the version and the layout
 * of the structures they pass each other, each written as it was compiled. */
static inline void cv_cuda_module_abi_string(char *out, size_t size) {
    snprintf(out, size, "cvae %s, backend %zu, options %zu, err %zu, mpi %d, nccl %d",
             CVAE_VERSION_STRING, sizeof(cv_backend), sizeof(cv_backend_options),
             sizeof(cv_err), CV_BUILD_MPI, CV_BUILD_NCCL);
}

/* The module's own cv_cuda_module_abi_string (cuda_module_abi.c). The module exports it,
 * cv_backend_cuda_create and cv_backend_cuda_available of backend_cuda.c, and nothing
 * else (cuda_module.map). */
void cv_cuda_module_abi(char *out, size_t size);

/* CV_OK where the NVIDIA driver's library (libcuda.so.1, which the CUDA runtime loads)
 * can be loaded, else CV_ERR_DEVICE naming what the dynamic loader said. --device auto and
 * cv_backend_cuda_available look no further without it, so that a machine without a GPU
 * never loads the CUDA libraries to learn that. A build without CUDA has nothing to check. */
cv_status cv_cuda_driver_check(cv_err *err);

/* The folders the module is looked for in, in order, before the dynamic loader's path:
 * their count, each canonical and existing. */
#define CV_CUDA_MODULE_FOLDERS 3
int cv_cuda_module_folders(char folders[CV_CUDA_MODULE_FOLDERS][PATH_MAX]);

/* Those folders for a message: "A, B or C", into out. */
void cv_cuda_module_where(char *out, size_t size);

/* The module's file, if one lies in one of those folders: true and its path in path
 * (size bytes). */
bool cv_cuda_module_find(char *path, size_t size);

/* One line for `cvae --version`: where the module is and whether the libraries it needs
 * can all be found (asked of the dynamic loader without loading them), into out. */
void cv_cuda_module_describe(char *out, size_t size);

#endif
