/* status.c: formatting of the one-line environment errors. */
#include <stdarg.h>

#include "cvae/status.h"

cv_status cv_fail(cv_err *err, cv_status status, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return status;
}
