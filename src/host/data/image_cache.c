/* image_cache.c: image files decoded once into uint8 .npy files, which later runs map.
 *
 * Each split of a data set has one entry in the cache folder, named by a hash of its
 * source (the class folder or the table, as resolved on disk), the split and the target
 * (size, crop, channels): <name>-<split>.npy, uint8 (n, h, w) or (n, h, w, c), and
 * <name>-<split>.key, whose key line is the SHA-256 of every image's path, size and
 * modification time and of the target. A key that differs from the files' means the
 * entry is stale: it is decoded again. An entry whose key matches but whose .npy is
 * missing, malformed or of another shape is corrupt: refused, never silently replaced.
 * The images are decoded in parallel (OpenMP) straight into the new file, mapped, under a
 * lock on the cache folder that keeps a second process (another rank, another run) from
 * decoding into it at the same time; the file appears under its name only when whole (temporary name,
 * fsync, rename), the key after it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cvae/npy.h"
#include "data/image_set.h"
#include "util/interrupt.h"
#include "util/sha256.h"
#include "util/clock.h"

#define CACHE_FORMAT "cvae image cache 1"

cv_status cv_cache_dir(const cv_image_options *o, char dir[CV_PATH_MAX], cv_err *err) {
    if (o->cache_dir) return cv_trim_path(dir, o->cache_dir, err);
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int len;
    if (xdg && xdg[0] == '/')
        len = snprintf(dir, CV_PATH_MAX, "%s/cvae", xdg);
    else if (home && home[0])
        len = snprintf(dir, CV_PATH_MAX, "%s/.cache/cvae", home);
    else
        return cv_fail(err, CV_ERR_USAGE, "no folder for the decoded images: neither "
                       "XDG_CACHE_HOME nor HOME is set; give --cache DIR");
    return len < CV_PATH_MAX ? CV_OK : cv_fail(err, CV_ERR_USAGE, "the cache path is too long");
}

/* What the decoded bytes depend on besides the files. */
static void add_target(cv_sha256 *h, const cv_image_target *t) {
    char s[128];
    const int n = snprintf(s, sizeof s, "%dx%dx%d %s %s\n", t->height, t->width, t->channels,
                           t->resize ? "resized" : "as is", t->crop_center ? "centre" : "whole");
    cv_sha256_update(h, s, (size_t)n);
}

/* path made absolute (against the working folder) for a key that does not depend on it. */
static void absolute(const char *cwd, const char *path, char out[2 * CV_PATH_MAX]) {
    snprintf(out, 2 * CV_PATH_MAX, "%s%s%s", path[0] == '/' ? "" : cwd,
             path[0] == '/' ? "" : "/", path);
}

/* The entry's file names: a hash of the source, the split and the target. */
static cv_status name_entry(const char *dir, const char *split, const cv_image_list *l,
                            const cv_image_target *t, cv_cache_entry *e, cv_err *err) {
    char real[PATH_MAX], name[65];
    const char *source = realpath(l->source, real) ? real : l->source;
    cv_sha256 h;
    cv_sha256_init(&h);
    cv_sha256_update(&h, source, strlen(source) + 1);
    cv_sha256_update(&h, split, strlen(split) + 1);
    add_target(&h, t);
    cv_sha256_hex(&h, name);
    name[16] = '\0';
    if (snprintf(e->npy, sizeof e->npy, "%s/%s-%s.npy", dir, name, split) >= (int)sizeof e->npy)
        return cv_fail(err, CV_ERR_USAGE, "%s: the cache path is too long", dir);
    snprintf(e->key_file, sizeof e->key_file, "%s/%s-%s.key", dir, name, split);
    return CV_OK;
}

static cv_status missing_file(const cv_image_list *l, int i, cv_err *err) {
    const char *why = strerror(errno);
    if (l->line)
        return cv_fail(err, CV_ERR_IO, "%s: line %d: %s: %s", l->table, l->line[i], l->paths[i],
                       why);
    return cv_fail(err, CV_ERR_IO, "%s: %s", l->paths[i], why);
}

/* The key: every image's absolute path, size and modification time, then the target. */
static cv_status compute_key(const cv_image_list *l, const cv_image_target *t, char key[65],
                             cv_err *err) {
    char cwd[CV_PATH_MAX], path[2 * CV_PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) return cv_fail(err, CV_ERR_IO, "cannot find the working folder");
    cv_sha256 h;
    cv_sha256_init(&h);
    cv_sha256_update(&h, CACHE_FORMAT "\n", sizeof CACHE_FORMAT);
    add_target(&h, t);
    for (int i = 0; i < l->n; i++) {
        struct stat sb;
        if (stat(l->paths[i], &sb) != 0) return missing_file(l, i, err);
        if (!S_ISREG(sb.st_mode)) {
            errno = EISDIR;
            return missing_file(l, i, err);
        }
        absolute(cwd, l->paths[i], path);
        const long long stamp[3] = {(long long)sb.st_size, (long long)sb.st_mtim.tv_sec,
                                    (long long)sb.st_mtim.tv_nsec};
        cv_sha256_update(&h, path, strlen(path) + 1);
        cv_sha256_update(&h, stamp, sizeof stamp);
    }
    cv_sha256_hex(&h, key);
    return CV_OK;
}

/* The key line of an entry's key file; false when there is none. */
static bool stored_key(const char *file, char key[65]) {
    FILE *fp = fopen(file, "r");
    if (!fp) return false;
    char line[256];
    bool found = false;
    while (!found && fgets(line, sizeof line, fp))
        found = strncmp(line, "key ", 4) == 0 && strlen(line) >= 4 + 64 &&
                (memcpy(key, line + 4, 64), key[64] = '\0', true);
    fclose(fp);
    return found;
}

static cv_cache_state state_of(const cv_cache_entry *e) {
    char key[65];
    if (!stored_key(e->key_file, key)) return CV_CACHE_MISSING;
    return strcmp(key, e->key) == 0 ? CV_CACHE_FRESH : CV_CACHE_STALE;
}

cv_status cv_cache_locate(const char *dir, const char *split, const cv_image_list *l,
                          const cv_image_target *t, cv_cache_entry *e, cv_err *err) {
    memset(e, 0, sizeof *e);
    cv_status st = name_entry(dir, split, l, t, e, err);
    if (!st) st = compute_key(l, t, e->key, err);
    if (!st) e->state = state_of(e);
    return st;
}

/* ---------- building ---------- */

/* The decoding's shared state: how far it got, the first failure, the progress line. */
typedef struct {
    const cv_image_list *l;
    const cv_image_target *t;
    uint8_t *out;          /* (n, h, w, c) */
    const char *what;
    bool progress;
    long done;             /* images decoded (atomic) */
    long first_bad;        /* the lowest failed index so far (n: none) */
    cv_status bad_status;
    cv_err bad;
    double t0, shown;
} decode_run;

static void show_progress(decode_run *d, bool last) {
    const double t = cv_now_seconds();
    if (!last && t - d->shown < 0.25) return;
    const long done = __atomic_load_n(&d->done, __ATOMIC_RELAXED);
    const double rate = done / (t - d->t0 > 1e-9 ? t - d->t0 : 1e-9);
    fprintf(stderr, "\rdecoding %s images: %ld/%d (%.0f images/s, %.0f s left)   ", d->what,
            done, d->l->n, rate, rate > 0 ? (d->l->n - done) / rate : 0.0);
    if (last) fprintf(stderr, "\r%*s\r", 78, "");
    fflush(stderr);
    d->shown = t;
}

static void record_failure(decode_run *d, long i, cv_status st, const cv_err *err) {
#pragma omp critical(cv_decode_failure)
    if (i < d->first_bad) {
        __atomic_store_n(&d->first_bad, i, __ATOMIC_RELAXED);
        d->bad_status = st;
        d->bad = *err;
    }
}

/* One image into its row, unless an earlier one failed or a signal came. */
static void decode_one(decode_run *d, long i, cv_image_scratch *s) {
    if (i > __atomic_load_n(&d->first_bad, __ATOMIC_RELAXED)) return;
    cv_err err;
    if (cv_interrupt_pending()) {
        record_failure(d, -1, cv_fail(&err, CV_ERR_INTERRUPTED, "interrupted while decoding "
                                      "the %s images; nothing was written", d->what), &err);
        return;
    }
    const size_t dim = (size_t)d->t->height * d->t->width * d->t->channels;
    size_t len = 0;
    const char *path = d->l->paths[i];
    cv_status st = cv_image_read_file(path, s, &len, &err);
    if (!st) st = cv_image_decode(path, s->file, len, d->t, s, d->out + dim * (size_t)i, &err);
    if (st) record_failure(d, i, st, &err);
    __atomic_add_fetch(&d->done, 1, __ATOMIC_RELAXED);
}

static cv_status decode_all(decode_run *d, cv_err *err) {
    const long n = d->l->n;
    d->first_bad = n;
    d->t0 = d->shown = cv_now_seconds();
#pragma omp parallel
    {
        cv_image_scratch s = {0};
#pragma omp for schedule(dynamic, 8)
        for (long i = 0; i < n; i++) {
            decode_one(d, i, &s);
            if (d->progress && omp_get_thread_num() == 0) show_progress(d, false);
        }
        cv_image_scratch_free(&s);
    }
    if (d->progress) show_progress(d, true);
    if (d->first_bad == n) return CV_OK;
    *err = d->bad;
    return d->bad_status;
}

/* The .npy under its temporary name, sized and mapped; the decoding writes into it. */
static cv_status decode_into_file(const cv_cache_entry *e, decode_run *d, cv_err *err) {
    const cv_image_target *t = d->t;
    const int64_t dims[4] = {d->l->n, t->height, t->width, t->channels};
    char header[CV_NPY_HEADER_MAX];
    const size_t hlen = cv_npy_header(header, sizeof header, CV_NPY_U8, t->channels > 1 ? 4 : 3,
                                      dims);
    const size_t total = hlen + (size_t)d->l->n * t->height * t->width * t->channels;
    cv_outfile f;
    cv_status st = cv_outfile_open(&f, e->npy, err);
    if (st) return st;
    if (!(f.fp = freopen(f.tmp_path, "w+b", f.fp))) { /* read and write, for the mapping */
        st = cv_fail(err, CV_ERR_IO, "%s: cannot create: %s", e->npy, strerror(errno));
        cv_outfile_abort(&f);
        return st;
    }
    const int fd = fileno(f.fp);
    const int why = posix_fallocate(fd, 0, (off_t)total);
    void *m = why ? MAP_FAILED : mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (why)
        st = cv_fail(err, CV_ERR_IO, "%s: no room for the decoded images (%.1f MiB): %s",
                     e->npy, total / 1048576.0, strerror(why));
    else if (m == MAP_FAILED)
        st = cv_fail(err, CV_ERR_IO, "%s: cannot map: %s", e->npy, strerror(errno));
    if (!st) {
        memcpy(m, header, hlen);
        d->out = (uint8_t *)m + hlen;
        st = decode_all(d, err);
        munmap(m, total);
    }
    if (st) {
        cv_outfile_abort(&f);
        return st;
    }
    return cv_outfile_commit(&f, err);
}

static cv_status write_key(const cv_cache_entry *e, const cv_image_list *l,
                           const cv_image_target *t, cv_err *err) {
    char text[CV_PATH_MAX + 256];
    const int n = snprintf(text, sizeof text, CACHE_FORMAT "\nkey %s\nimages %d of %dx%dx%d\n"
                           "from %s\n", e->key, l->n, t->height, t->width, t->channels,
                           l->source);
    cv_outfile f;
    cv_status st = cv_outfile_open(&f, e->key_file, err);
    if (!st) st = cv_outfile_write(&f, text, (size_t)n, err);
    if (st) {
        cv_outfile_abort(&f);
        return st;
    }
    return cv_outfile_commit(&f, err);
}

/* The cache folder's lock (flock on the folder itself, so nothing is left behind), waited
 * for, with a note, while another process decodes into it. */
static cv_status take_lock(const char *dir, FILE *log, int *fd, cv_err *err) {
    *fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*fd < 0) return cv_fail(err, CV_ERR_IO, "%s: cannot open: %s", dir, strerror(errno));
    if (flock(*fd, LOCK_EX | LOCK_NB) == 0) return CV_OK;
    if (log) fprintf(log, "cache: waiting for another cvae decoding into %s\n", dir);
    while (flock(*fd, LOCK_EX) != 0)
        if (errno != EINTR || cv_interrupt_pending()) {
            const int e = errno;
            close(*fd);
            return cv_fail(err, e == EINTR ? CV_ERR_INTERRUPTED : CV_ERR_IO,
                           "%s: cannot lock: %s", dir, strerror(e));
        }
    return CV_OK;
}

cv_status cv_cache_build(cv_cache_entry *e, const cv_image_list *l, const cv_image_target *t,
                         const cv_image_options *o, const char *what, cv_err *err) {
    char dir[CV_PATH_MAX], made[CV_PATH_MAX] = "";
    snprintf(dir, sizeof dir, "%s", e->npy);
    *strrchr(dir, '/') = '\0';
    int fd = -1;
    cv_status st = cv_make_dirs(dir, made, err);
    if (!st) st = take_lock(dir, o->log, &fd, err);
    if (!st && e->state == CV_CACHE_STALE && o->log)
        fprintf(o->log, "cache: %s is stale (the %s images changed since it was made): decoding "
                "them again\n", e->npy, what);
    if (!st && (e->state = state_of(e)) != CV_CACHE_FRESH) { /* another process may have made it */
        decode_run d = {.l = l, .t = t, .what = what, .progress = o->progress};
        const double t0 = cv_now_seconds();
        st = decode_into_file(e, &d, err);
        if (!st) st = write_key(e, l, t, err);
        const double s = cv_now_seconds() - t0;
        if (!st && o->log)
            fprintf(o->log, "cache: decoded %d %s images in %.1f s (%.0f images/s, %d threads) "
                    "into %s\n", l->n, what, s, l->n / (s > 1e-9 ? s : 1e-9),
                    omp_get_max_threads(), e->npy);
        if (!st) e->state = CV_CACHE_FRESH;
    }
    if (fd >= 0) close(fd);
    if (st && made[0]) cv_unmake_dirs(dir, made); /* the folders it made, while still empty */
    return st;
}

cv_status cv_cache_map(const cv_cache_entry *e, const cv_image_target *t, int n, cv_split *s,
                       cv_err *err) {
    cv_npy_array a;
    cv_status st = cv_npy_map(e->npy, &a, err);
    const int64_t want[4] = {n, t->height, t->width, t->channels};
    bool shaped = !st && a.dtype == CV_NPY_U8 && a.ndims == (t->channels > 1 ? 4 : 3);
    for (int i = 0; shaped && i < a.ndims; i++) shaped = a.dims[i] == want[i];
    if (!st && !shaped) {
        cv_npy_free(&a);
        st = cv_fail(err, CV_ERR_FORMAT, "%s: not the %d images of %dx%dx%d its key file "
                     "promises", e->npy, n, t->height, t->width, t->channels);
    }
    if (st) {
        cv_err why = *err;
        return cv_fail(err, CV_ERR_FORMAT, "corrupt image cache: %s; remove it and %s to "
                       "decode the images again", why.msg, e->key_file);
    }
    *s = (cv_split){.pixels = a.data, .n = n, .h = t->height, .w = t->width,
                    .channels = t->channels, .mapping = a.mapping,
                    .mapping_bytes = a.mapping_bytes};
    return CV_OK;
}
