/* fileio.c: temporary file, fsync, rename, folder sync. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cvae/fileio.h"

cv_status cv_outfile_open(cv_outfile *f, const char *path, cv_err *err) {
    memset(f, 0, sizeof *f);
    if (strlen(path) >= sizeof f->path)
        return cv_fail(err, CV_ERR_USAGE, "%s: path too long", path);
    snprintf(f->path, sizeof f->path, "%s", path);
    snprintf(f->tmp_path, sizeof f->tmp_path, "%s.tmp.%ld", path, (long)getpid());
    f->fp = fopen(f->tmp_path, "wb");
    if (!f->fp)
        return cv_fail(err, CV_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    return CV_OK;
}

cv_status cv_outfile_write(cv_outfile *f, const void *data, size_t bytes, cv_err *err) {
    if (bytes && fwrite(data, 1, bytes, f->fp) != bytes)
        return cv_fail(err, CV_ERR_IO, "%s: write failed: %s", f->path, strerror(errno));
    return CV_OK;
}

static void sync_parent_dir(const char *path) {
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path);
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
}

cv_status cv_outfile_commit(cv_outfile *f, cv_err *err) {
    int e = 0;
    if (fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0) e = errno;
    if (fclose(f->fp) != 0 && !e) e = errno;
    f->fp = NULL;
    if (!e && rename(f->tmp_path, f->path) != 0) e = errno;
    if (e) {
        unlink(f->tmp_path);
        return cv_fail(err, CV_ERR_IO, "%s: write failed: %s", f->path, strerror(e));
    }
    sync_parent_dir(f->path);
    return CV_OK;
}

void cv_outfile_abort(cv_outfile *f) {
    if (f->fp) fclose(f->fp);
    f->fp = NULL;
    if (f->tmp_path[0]) unlink(f->tmp_path);
}

cv_status cv_ensure_dir(const char *dir, cv_err *err) {
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return cv_fail(err, CV_ERR_IO, "%s: exists and is not a folder", dir);
        return CV_OK;
    }
    if (mkdir(dir, 0777) != 0)
        return cv_fail(err, CV_ERR_IO, "%s: cannot create folder: %s", dir, strerror(errno));
    sync_parent_dir(dir);
    return CV_OK;
}

bool cv_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}
