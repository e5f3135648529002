/* fuzz_npy.c: libFuzzer target for the .npy reader. Run by tests/fuzz/run.sh with ASan,
 * UBSan and a malloc limit, so a crash, a leak or an allocation larger than the input
 * justifies fails the run. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cvae/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("npy", 0);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size) abort();
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    bool npy = cv_npy_sniff(path);
    cv_npy_array a;
    cv_err err;
    if (cv_npy_read(path, &a, &err) == CV_OK) {
        /* an accepted file starts with the magic and holds exactly the bytes its header
         * declares, in a shape the reader promises */
        if (!npy || a.ndims < 1 || a.ndims > CV_NPY_MAX_DIMS) abort();
        size_t total = cv_npy_item_size(a.dtype);
        for (int i = 0; i < a.ndims; i++) {
            if (a.dims[i] < 1 || a.dims[i] > INT32_MAX) abort();
            total *= (size_t)a.dims[i];
        }
        if (a.bytes != total || a.bytes > size) abort();
        volatile uint8_t sink = ((const uint8_t *)a.data)[a.bytes - 1];
        (void)sink;
        cv_npy_free(&a);
    } else if (a.data != NULL || a.bytes != 0) {
        abort(); /* a rejected file leaves nothing to free */
    }
    /* mapped, it passes the same checks and holds the same bytes */
    cv_npy_array m;
    if (cv_npy_map(path, &m, &err) == CV_OK) {
        volatile uint8_t sink = ((const uint8_t *)m.data)[m.bytes - 1];
        (void)sink;
        cv_npy_free(&m);
    } else if (m.data != NULL || m.mapping != NULL) {
        abort();
    }
    close(fd);
    return 0;
}
