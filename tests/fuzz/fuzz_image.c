/* fuzz_image.c: libFuzzer target for PNG and JPEG decoding (libpng and libjpeg-turbo with
 * cvae's error callbacks, the colour conversions, the crop and both resizers). Each input
 * is probed, then decoded to its own size and to targets that shrink (a DCT-scaled JPEG,
 * the area average), grow (stb_image_resize) and crop. Run by tests/fuzz/run.sh with ASan,
 * UBSan and a malloc limit: a crash, a leak, a read past the input or a longjmp that skips
 * a free fails the run. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "data/image.h"

/* native decodes stay under the fuzzer's malloc limit */
#define NATIVE_MAX_PIXELS (1 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cv_image_scratch s = {0};
    cv_image_info info;
    cv_err err;
    const bool known = cv_image_probe("fuzz", data, size, &info, &err) == CV_OK;
    cv_image_target targets[4] = {
        {16, 16, 3, true, true, true, "first"},
        {40, 24, 1, true, false, true, "first"},
        {3, 70, 3, true, true, false, "first"},
        {0, 0, 1, false, false, false, "first"},
    };
    int n = 3;
    if (known && info.height > 0 && info.width > 0 &&
        (int64_t)info.height * info.width <= NATIVE_MAX_PIXELS) {
        targets[3].height = info.height;
        targets[3].width = info.width;
        targets[3].channels = info.channels >= 3 ? 3 : 1;
        n = 4;
    }
    for (int i = 0; i < n; i++) {
        const cv_image_target *t = &targets[i];
        const size_t bytes = (size_t)t->height * t->width * t->channels;
        uint8_t *out = malloc(bytes);
        if (!out) abort();
        if (cv_image_decode("fuzz", data, size, t, &s, out, &err) == CV_OK) {
            /* an accepted image fills its target: read every byte */
            volatile unsigned sum = 0;
            for (size_t j = 0; j < bytes; j++) sum += out[j];
            (void)sum;
        } else if (!strchr(err.msg, ':') || strchr(err.msg, '\n')) {
            abort(); /* a refusal is one line naming the file */
        }
        free(out);
    }
    cv_image_scratch_free(&s);
    return 0;
}
