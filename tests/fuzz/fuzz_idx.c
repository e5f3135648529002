/* fuzz_idx.c: libFuzzer target for the IDX reader, plain and gzip, as images and as
 * labels, and mapped as training images. Run by tests/fuzz/run.sh with ASan, UBSan and a malloc limit, so a crash, a
 * leak or an allocation larger than the input justifies fails the run. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cvae/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("idx", 0);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size) abort();
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    for (int ndims = 1; ndims <= 3; ndims += 2) {
        int dims[3];
        uint8_t *payload;
        cv_err err;
        if (cv_idx_read(path, ndims, dims, &payload, &err) == CV_OK) {
            /* an accepted file holds exactly the bytes its header declares */
            size_t total = 1;
            for (int i = 0; i < ndims; i++) total *= (size_t)dims[i];
            volatile uint8_t sink = payload[total - 1];
            (void)sink;
            free(payload);
        }
    }
    /* training images: mapped when the file is plain */
    int dims[4];
    uint8_t *payload;
    cv_idx_mapping m;
    cv_err err;
    if (cv_idx_map_images(path, dims, &payload, &m, &err) == CV_OK) {
        const size_t total = (size_t)dims[0] * dims[1] * dims[2] * dims[3];
        volatile uint8_t sink = payload[total - 1];
        (void)sink;
        if (m.mapping)
            munmap(m.mapping, m.bytes);
        else
            free(payload);
    }
    close(fd);
    return 0;
}
