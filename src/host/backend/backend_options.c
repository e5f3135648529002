/* backend_options.c: the options a backend is created with, and the names of its
 * precisions (docs/design.md 2.7), which every backend and the command line read. */
#include "cvae/backend.h"

cv_precision cv_backend_options_precision(const cv_backend_options *opt) {
    return opt ? opt->precision : CV_PRECISION_FP32;
}

const char *cv_precision_name(cv_precision p) {
    static const char *const names[CV_PRECISION_COUNT] = {"fp32", "tf32", "bf16", "tf32x3"};
    return (unsigned)p < CV_PRECISION_COUNT ? names[p] : "unknown";
}

const char *cv_precision_describe(cv_precision p) {
    static const char *const what[CV_PRECISION_COUNT] = {
        "plain fp32 GEMMs (no input rounding)",
        "GEMM inputs converted to TF32 (10-bit mantissa) by the tensor cores, fp32 sums",
        "GEMM inputs rounded to bf16 (nearest even), fp32 sums and outputs; weights, Adam "
        "and the loss in fp32",
        "each GEMM input split into two TF32 parts, three TF32 products summed in fp32 "
        "(3xTF32): near-fp32 accuracy",
    };
    return (unsigned)p < CV_PRECISION_COUNT ? what[p] : "unknown";
}
