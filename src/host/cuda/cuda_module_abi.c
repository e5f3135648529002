/* cuda_module_abi.c: the CUDA module's mark of the build it belongs to, which the loader
 * compares with its own before it calls the module (cuda_module.h). */
#include "cuda/cuda_module.h"

void cv_cuda_module_abi(char *out, size_t size) { cv_cuda_module_abi_string(out, size); }
