/* backend_select.c: --device auto|cpu|cuda. */
#include <string.h>

#include "cvae/backend_select.h"

static cv_status open_cpu(const cv_backend_options *opt, cv_backend **out, cv_err *err) {
    if (opt && opt->tf32)
        return cv_fail(err, CV_ERR_USAGE, "--precision tf32 needs a GPU (--device cuda)");
    return cv_backend_cpu_create(out, err);
}

cv_status cv_backend_open_with(const char *device, const cv_backend_options *opt,
                               cv_backend_create_fn cuda_create, cv_backend **out,
                               cv_err *err) {
    cv_backend_options none = {0};
    if (!opt) opt = &none;
    if (strcmp(device, "cpu") == 0) return open_cpu(opt, out, err);
    if (strcmp(device, "cuda") == 0) return cuda_create(opt, out, err);
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
    return cv_fail(err, CV_ERR_USAGE, "unknown device '%s' (expected auto, cpu or cuda)",
                   device);
}

cv_status cv_backend_open(const char *device, const cv_backend_options *opt,
                          cv_backend **out, cv_err *err) {
    return cv_backend_open_with(device, opt, cv_backend_cuda_create, out, err);
}
