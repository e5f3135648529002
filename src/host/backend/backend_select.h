/* backend_select.h: the --device policy with the CUDA constructor as a parameter, so the
 * tests can try it with a GPU that fails (internal: not installed). */
#ifndef CVAE_BACKEND_SELECT_H
#define CVAE_BACKEND_SELECT_H

#include "cvae/backend.h"

typedef cv_status (*cv_backend_create_fn)(const cv_backend_options *opt, cv_backend **out,
                                          cv_err *err);

/* cv_backend_open with cuda_create in place of cv_backend_cuda_create. */
cv_status cv_backend_open_with(const char *device, const cv_backend_options *opt,
                               cv_backend_create_fn cuda_create, cv_backend **out,
                               cv_err *err);

#endif
