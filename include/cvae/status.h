/* status.h: how library code reports environment errors.
 *
 * Programmer errors abort with file and line (CV_ASSERT). Environment errors (a missing
 * or malformed file, no device, out of memory) return a cv_status and leave one line in a
 * cv_err that the command line prints; library code never exits.
 */
#ifndef CVAE_STATUS_H
#define CVAE_STATUS_H

#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CV_OK = 0,
    CV_ERR_IO,          /* a file could not be opened, read or written */
    CV_ERR_FORMAT,      /* a file is malformed, truncated or of the wrong kind */
    CV_ERR_NOMEM,       /* host or device memory ran out */
    CV_ERR_DEVICE,      /* no usable device, or the device failed */
    CV_ERR_USAGE,       /* a value the caller passed makes no sense */
    CV_ERR_NONFINITE,   /* training produced NaN or Inf */
    CV_ERR_INTERRUPTED, /* a signal asked us to stop */
} cv_status;

typedef struct {
    char msg[768];
} cv_err;

/* Writes the message into err (if any) and returns status, so callers can
 * `return cv_fail(err, CV_ERR_IO, "%s: ...", path);` */
cv_status cv_fail(cv_err *err, cv_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define CV_ASSERT(cond)                                                              \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "cvae: internal error at %s:%d: %s\n", __FILE__, __LINE__, \
                    #cond);                                                          \
            abort();                                                                 \
        }                                                                            \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
