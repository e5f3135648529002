/* backend_cuda_absent.c: the CUDA entry points of a build without the CUDA toolkit
 * (-Dcuda=disabled, or no nvcc found), so --device cuda says why it cannot run. */
#include "cuda/cuda_module.h"

bool cv_backend_cuda_available(void) { return false; }

cv_status cv_backend_cuda_create(const cv_backend_options *opt, cv_backend **out,
                                 cv_err *err) {
    (void)opt;
    *out = NULL;
    return cv_fail(err, CV_ERR_DEVICE,
                   "this cvae was built without CUDA (-Dcuda=disabled or no CUDA toolkit "
                   "found)");
}

/* no driver to look for: cv_backend_cuda_create says why no GPU runs */
cv_status cv_cuda_driver_check(cv_err *err) {
    (void)err;
    return CV_OK;
}
