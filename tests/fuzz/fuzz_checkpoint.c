/* fuzz_checkpoint.c: libFuzzer target for the checkpoint reader (see fuzz_idx.c). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cvae/checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("ckpt", 0);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size) abort();
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    cv_checkpoint ck;
    cv_err err;
    if (cv_checkpoint_load(path, &ck, &err) == CV_OK) {
        /* an accepted checkpoint's arrays are as long as its layout says */
        volatile float sink = ck.params[ck.n_params - 1] + ck.adam_v[ck.n_params - 1];
        (void)sink;
        cv_checkpoint_free(&ck);
    }
    close(fd);
    return 0;
}
