/* idx.c: IDX files (unsigned byte, 1 to 4 dimensions, plain or gzip), validated before
 * allocating.
 *
 * Layout: 0x00 0x00 <type 0x08> <ndims>, ndims big-endian uint32 sizes, then the bytes.
 * A plain file must be exactly header + payload bytes long. A gzip file cannot be sized
 * before it is inflated, so its payload may be at most DEFLATE_MAX_RATIO times its
 * compressed size (deflate cannot do better), and it must inflate to exactly the size
 * the header declares. Training images in a plain file are memory-mapped, not read.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "cvae/data.h"
#include "util/fileio.h"

#define DEFLATE_MAX_RATIO 1032u
#define IDX_MAX_PAYLOAD (UINT64_C(1) << 40)
#define READ_CHUNK (1u << 30)

static cv_status read_exact(gzFile gz, const char *path, void *buf, size_t n,
                            const char *what, cv_err *err) {
    uint8_t *p = buf;
    size_t done = 0;
    while (done < n) {
        unsigned want = (unsigned)(n - done < READ_CHUNK ? n - done : READ_CHUNK);
        int got = gzread(gz, p + done, want);
        if (got < 0) {
            int zerr;
            const char *msg = gzerror(gz, &zerr);
            return cv_fail(err, CV_ERR_FORMAT, "%s: corrupt data in %s: %s", path, what,
                           zerr == Z_ERRNO ? strerror(errno) : msg);
        }
        if (got == 0)
            return cv_fail(err, CV_ERR_FORMAT,
                           "%s: truncated %s (%zu of %zu bytes present)", path, what,
                           done, n);
        done += (size_t)got;
    }
    return CV_OK;
}

/* The file's dimension count must lie in min_dims..max_dims. */
static cv_status check_header(const char *path, const uint8_t magic[4], int min_dims,
                              int max_dims, cv_err *err) {
    if (magic[0] != 0 || magic[1] != 0)
        return cv_fail(err, CV_ERR_FORMAT, "%s: not an IDX file (bad magic %02x %02x)",
                       path, magic[0], magic[1]);
    if (magic[2] != 0x08)
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: unsupported IDX type code 0x%02x (only unsigned byte, 0x08)",
                       path, magic[2]);
    if (magic[3] >= min_dims && magic[3] <= max_dims) return CV_OK;
    if (min_dims == max_dims)
        return cv_fail(err, CV_ERR_FORMAT, "%s: has %d dimensions, expected %d%s", path,
                       magic[3], min_dims, min_dims == 1 ? " (an idx1 label file)" : "");
    return cv_fail(err, CV_ERR_FORMAT,
                   "%s: has %d dimensions, expected %d to %d (images: n, height, width[, "
                   "channels])", path, magic[3], min_dims, max_dims);
}

/* The header, checked against the file: dims get the sizes, *hlen the header's bytes and
 * *total the payload's. */
static cv_status read_header(gzFile gz, const char *path, int min_dims, int max_dims,
                             uint64_t file_size, bool compressed, int dims[4], size_t *hlen,
                             uint64_t *total, cv_err *err) {
    uint8_t magic[4], raw[16];
    cv_status st = read_exact(gz, path, magic, 4, "header", err);
    if (!st) st = check_header(path, magic, min_dims, max_dims, err);
    const int ndims = magic[3];
    if (!st) st = read_exact(gz, path, raw, 4 * (size_t)ndims, "header", err);
    if (st) return st;
    *total = 1;
    for (int i = 0; i < ndims; i++) {
        uint32_t d = (uint32_t)raw[4 * i] << 24 | (uint32_t)raw[4 * i + 1] << 16 |
                     (uint32_t)raw[4 * i + 2] << 8 | raw[4 * i + 3];
        if (d == 0 || d > INT32_MAX)
            return cv_fail(err, CV_ERR_FORMAT, "%s: dimension %d is %u (must be 1..%d)",
                           path, i, d, INT32_MAX);
        if (*total > IDX_MAX_PAYLOAD / d)
            return cv_fail(err, CV_ERR_FORMAT,
                           "%s: dimensions are absurd (payload over %llu bytes)", path,
                           (unsigned long long)IDX_MAX_PAYLOAD);
        *total *= d;
        dims[i] = (int)d;
    }
    *hlen = 4 + 4 * (size_t)ndims;
    uint64_t expect = *hlen + *total;
    if (!compressed && file_size != expect)
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: file is %llu bytes but its header says %llu (%s)", path,
                       (unsigned long long)file_size, (unsigned long long)expect,
                       file_size < expect ? "truncated" : "trailing bytes");
    if (compressed && *total > DEFLATE_MAX_RATIO * file_size)
        return cv_fail(err, CV_ERR_FORMAT,
                       "%s: header declares %llu bytes, more than %llu compressed bytes "
                       "can hold (truncated or corrupt)",
                       path, (unsigned long long)*total, (unsigned long long)file_size);
    return CV_OK;
}

static cv_status read_gz(gzFile gz, const char *path, int min_dims, int max_dims,
                         uint64_t file_size, bool compressed, int dims[4], uint8_t **payload,
                         cv_err *err) {
    size_t hlen;
    uint64_t total;
    cv_status st = read_header(gz, path, min_dims, max_dims, file_size, compressed, dims, &hlen,
                               &total, err);
    if (st) return st;
    uint8_t *buf = malloc(total);
    if (!buf)
        return cv_fail(err, CV_ERR_NOMEM, "%s: out of memory for %llu bytes", path,
                       (unsigned long long)total);
    st = read_exact(gz, path, buf, total, "payload", err);
    uint8_t extra;
    if (!st && gzread(gz, &extra, 1) != 0)
        st = cv_fail(err, CV_ERR_FORMAT, "%s: trailing bytes after the %llu-byte payload",
                     path, (unsigned long long)total);
    if (st) {
        free(buf);
        return st;
    }
    *payload = buf;
    return CV_OK;
}

/* gzdopen on a duplicate of fd, so that gzclose leaves fd to its owner. On failure nothing
 * more is open and errno says why (gzdopen, given a valid descriptor and mode, fails only
 * for want of memory). */
static gzFile gzdopen_dup(int fd, const char *mode) {
    int copy = dup(fd);
    if (copy < 0) return NULL;
    gzFile gz = gzdopen(copy, mode);
    if (!gz) {
        close(copy);
        errno = ENOMEM;
    }
    return gz;
}

/* The line for a gzdopen_dup that failed, from errno. */
static cv_status zlib_failed(const char *path, cv_err *err) {
    return cv_fail(err, errno == ENOMEM ? CV_ERR_NOMEM : CV_ERR_IO,
                   "%s: cannot start zlib: %s", path, strerror(errno));
}

/* The header of an uncompressed file checked, then the file mapped: the payload follows
 * the header. */
static cv_status map_plain(int fd, const char *path, int min_dims, int max_dims, uint64_t size,
                           int dims[4], uint8_t **payload, cv_idx_mapping *m, cv_err *err) {
    gzFile gz = gzdopen_dup(fd, "rb");
    if (!gz) return zlib_failed(path, err);
    size_t hlen;
    uint64_t total;
    cv_status st = read_header(gz, path, min_dims, max_dims, size, false, dims, &hlen, &total, err);
    gzclose(gz);
    if (st) return st;
    void *at = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (at == MAP_FAILED)
        return cv_fail(err, errno == ENOMEM ? CV_ERR_NOMEM : CV_ERR_IO, "%s: cannot map: %s",
                       path, strerror(errno));
    m->mapping = at;
    m->bytes = (size_t)size;
    *payload = (uint8_t *)at + hlen;
    return CV_OK;
}

/* A gzip file is read; a plain one is mapped when m is given, else read. */
static cv_status idx_read(const char *path, int min_dims, int max_dims, int dims[4],
                          uint8_t **payload, cv_idx_mapping *m, cv_err *err) {
    *payload = NULL;
    if (m) *m = (cv_idx_mapping){NULL, 0};
    int fd;
    uint64_t size;
    cv_status st = cv_open_regular(path, "an IDX file", &fd, &size, err);
    if (st) return st;
    uint8_t head[2] = {0, 0};
    bool compressed = pread(fd, head, 2, 0) == 2 && head[0] == 0x1f && head[1] == 0x8b;
    if (m && !compressed) {
        st = map_plain(fd, path, min_dims, max_dims, size, dims, payload, m, err);
        close(fd);
        return st;
    }
    gzFile gz = gzdopen_dup(fd, "rb");
    st = gz ? CV_OK : zlib_failed(path, err);
    close(fd);
    if (st) return st;
    st = read_gz(gz, path, min_dims, max_dims, size, compressed, dims, payload, err);
    gzclose(gz);
    return st;
}

cv_status cv_idx_read(const char *path, int ndims, int *dims, uint8_t **payload,
                      cv_err *err) {
    CV_ASSERT(ndims >= 1 && ndims <= 4);
    return idx_read(path, ndims, ndims, dims, payload, NULL, err);
}

cv_status cv_idx_read_images(const char *path, int dims[4], uint8_t **payload, cv_err *err) {
    dims[3] = 1;
    return idx_read(path, 3, 4, dims, payload, NULL, err);
}

cv_status cv_idx_map_images(const char *path, int dims[4], uint8_t **payload, cv_idx_mapping *m,
                            cv_err *err) {
    dims[3] = 1;
    return idx_read(path, 3, 4, dims, payload, m, err);
}

cv_status cv_idx_write(const char *path, int ndims, const int *dims,
                       const uint8_t *payload, bool gzip, cv_err *err) {
    CV_ASSERT(ndims >= 1 && ndims <= 4);
    uint8_t header[20] = {0, 0, 0x08, (uint8_t)ndims};
    size_t total = 1;
    for (int i = 0; i < ndims; i++) {
        uint32_t d = (uint32_t)dims[i];
        header[4 + 4 * i] = (uint8_t)(d >> 24);
        header[5 + 4 * i] = (uint8_t)(d >> 16);
        header[6 + 4 * i] = (uint8_t)(d >> 8);
        header[7 + 4 * i] = (uint8_t)d;
        total *= d;
    }
    size_t hlen = 4 + 4 * (size_t)ndims;
    cv_outfile f;
    cv_status st = cv_outfile_open(&f, path, err);
    if (st) return st;
    if (!gzip) {
        st = cv_outfile_write(&f, header, hlen, err);
        if (!st) st = cv_outfile_write(&f, payload, total, err);
    } else {
        gzFile gz = gzdopen_dup(fileno(f.fp), "wb6");
        if (!gz) st = zlib_failed(path, err);
        size_t done = 0;
        if (!st && gzwrite(gz, header, (unsigned)hlen) != (int)hlen)
            st = cv_fail(err, CV_ERR_IO, "%s: write failed", path);
        while (!st && done < total) {
            unsigned n = (unsigned)(total - done < READ_CHUNK ? total - done : READ_CHUNK);
            if (gzwrite(gz, payload + done, n) != (int)n)
                st = cv_fail(err, CV_ERR_IO, "%s: write failed", path);
            done += n;
        }
        if (gz && gzclose(gz) != Z_OK && !st)
            st = cv_fail(err, CV_ERR_IO, "%s: write failed", path);
    }
    if (st) {
        cv_outfile_abort(&f);
        return st;
    }
    return cv_outfile_commit(&f, err);
}
