/* backend_select.c: --device auto|cpu|cuda|cuda:N. */
#include <stdlib.h>
#include <string.h>

#include "backend/backend_select.h"
#include "build_info.h"
#include "cuda/cuda_module.h"

static cv_status open_cpu(const cv_backend_options *opt, cv_backend **out, cv_err *err) {
    if (cv_backend_options_precision(opt) == CV_PRECISION_TF32)
        return cv_fail(err, CV_ERR_USAGE, CV_BUILD_CUDA
                       ? "--precision tf32 needs a GPU (--device cuda)"
                       : "--precision tf32 needs a GPU, and this cvae was built without CUDA");
    return cv_backend_cpu_create_with(opt, out, err);
}

int cv_backend_cuda_index(const char *device) {
    if (strncmp(device, "cuda:", 5) != 0) return -1;
    char *end;
    long n = strtol(device + 5, &end, 10);
    return device[5] >= '0' && device[5] <= '9' && *end == '\0' && n <= 255 ? (int)n : -1;
}

cv_status cv_backend_open_with(const char *device, const cv_backend_options *opt,
                               cv_backend_create_fn cuda_create, cv_backend **out,
                               cv_err *err) {
    cv_backend_options chosen = {0};
    if (opt) chosen = *opt;
    opt = &chosen;
    if (strcmp(device, "cpu") == 0) return open_cpu(opt, out, err);
    if (strcmp(device, "cuda") == 0) return cuda_create(opt, out, err);
    if (cv_backend_cuda_index(device) >= 0) {
        chosen.device_chosen = true;
        chosen.device = cv_backend_cuda_index(device);
        return cuda_create(opt, out, err);
    }
    if (strcmp(device, "auto") == 0) {
        cv_err why;
        if (cuda_create(opt, out, &why) == CV_OK) return CV_OK;
        cv_status st = open_cpu(opt, out, err);
        if (!st) {
            /* say why the GPU was passed over */
            size_t len = strlen((*out)->description);
            snprintf((*out)->description + len, sizeof (*out)->description - len,
                     "; auto chose the CPU: %.150s", why.msg);
        }
        return st;
    }
    return cv_fail(err, CV_ERR_USAGE, "unknown device '%s' (expected auto, cpu, cuda or cuda:N)",
                   device);
}

/* auto's GPU: only where the NVIDIA driver is installed, since without it no GPU can run
 * and loading the CUDA libraries to learn that costs 0.25 s and 214 MiB on a 2-core EPYC
 * (bench/results/startup-cpu.md); --device cuda goes straight on, to name what is missing. */
static cv_status cuda_if_driver(const cv_backend_options *opt, cv_backend **out,
                                cv_err *err) {
    *out = NULL;
    const cv_status st = cv_cuda_driver_check(err);
    return st ? st : cv_backend_cuda_create(opt, out, err);
}

cv_status cv_backend_open(const char *device, const cv_backend_options *opt,
                          cv_backend **out, cv_err *err) {
    return cv_backend_open_with(device, opt,
                                strcmp(device, "auto") == 0 ? cuda_if_driver
                                                            : cv_backend_cuda_create,
                                out, err);
}
