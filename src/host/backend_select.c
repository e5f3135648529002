/* backend_select.c: --device auto|cpu|cuda. */
#include <string.h>

#include "cvae/backend.h"

cv_status cv_backend_open(const char *device, cv_backend **out, cv_err *err) {
    if (strcmp(device, "cpu") == 0) return cv_backend_cpu_create(out, err);
    if (strcmp(device, "cuda") == 0) return cv_backend_cuda_create(out, err);
    if (strcmp(device, "auto") == 0) {
        if (cv_backend_cuda_available() && cv_backend_cuda_create(out, err) == CV_OK)
            return CV_OK;
        return cv_backend_cpu_create(out, err);
    }
    return cv_fail(err, CV_ERR_USAGE, "unknown device '%s' (expected auto, cpu or cuda)",
                   device);
}
