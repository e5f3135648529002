/* onnx_absent.c: cv_export_onnx in a build without protobuf-c or onnx.proto. */
#include "cvae/export.h"

cv_status cv_export_onnx(const cv_export_source *src, const char *dir, cv_err *err) {
    (void)src;
    (void)dir;
    return cv_fail(err, CV_ERR_USAGE, "this cvae was built without ONNX export; install "
                   "libprotobuf-c-dev, protobuf-c-compiler and libonnx-dev (onnx.proto), "
                   "then meson setup --reconfigure BUILD_DIR");
}
