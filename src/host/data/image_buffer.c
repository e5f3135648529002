/* image_buffer.c: the buffers a thread reuses from image to image, and a file read whole
 * into one (image.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/image.h"
#include "util/fileio.h"

bool cv_image_reserve(uint8_t **buf, size_t *cap, size_t n) {
    if (n <= *cap) return true;
    uint8_t *p = realloc(*buf, n);
    if (!p) return false;
    *buf = p;
    *cap = n;
    return true;
}

void cv_image_scratch_free(cv_image_scratch *s) {
    free(s->file);
    free(s->pixels);
    free(s->grey);
    memset(s, 0, sizeof *s);
}

cv_status cv_image_read_file(const char *path, cv_image_scratch *s, size_t *len, cv_err *err) {
    int fd;
    uint64_t size;
    cv_status st = cv_open_regular(path, "an image file", &fd, &size, err);
    if (st) return st;
    if (size > CV_IMAGE_MAX_DECODED)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: a file of %llu bytes is too large for an image",
                     path, (unsigned long long)size);
    else if (!cv_image_reserve(&s->file, &s->file_cap, size ? (size_t)size : 1))
        st = cv_fail(err, CV_ERR_NOMEM, "%s: out of memory for %llu bytes", path,
                     (unsigned long long)size);
    size_t done = 0;
    while (!st && done < size) {
        ssize_t got = read(fd, s->file + done, (size_t)size - done);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) st = cv_fail(err, CV_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
        if (got == 0) break; /* shrank while read: decoded as far as it goes */
        if (got > 0) done += (size_t)got;
    }
    close(fd);
    *len = done;
    return st;
}
