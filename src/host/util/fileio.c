/* fileio.c: temporary file, fsync, rename, folder sync; run folders' locks; stale
 * temporaries swept. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fileio.h"

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

/* Creates one folder whose parent exists; an existing folder is fine. */
static cv_status make_one_dir(const char *dir, const char *named, cv_err *err) {
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return cv_fail(err, CV_ERR_IO, "%s: cannot create folder: %s exists and is not a "
                           "folder", named, dir);
        return CV_OK;
    }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return cv_fail(err, CV_ERR_IO, "%s: cannot create folder: %s", named, strerror(errno));
    sync_parent_dir(dir);
    return CV_OK;
}

cv_status cv_trim_path(char out[CV_PATH_MAX], const char *path, cv_err *err) {
    if (!path[0]) return cv_fail(err, CV_ERR_USAGE, "an output path is empty");
    if (snprintf(out, CV_PATH_MAX, "%s", path) >= CV_PATH_MAX)
        return cv_fail(err, CV_ERR_USAGE, "%s: path too long", path);
    for (size_t len = strlen(out); len > 1 && out[len - 1] == '/'; len--) out[len - 1] = '\0';
    return CV_OK;
}

cv_status cv_make_dirs(const char *dir, char made[CV_PATH_MAX], cv_err *err) {
    made[0] = '\0';
    char path[CV_PATH_MAX];
    cv_status trimmed = cv_trim_path(path, dir, err);
    if (trimmed) return trimmed;
    /* each prefix that ends before a '/', then the whole path */
    size_t len = strlen(path);
    for (size_t i = 1; i <= len; i++) {
        if (i < len && (path[i] != '/' || path[i - 1] == '/')) continue;
        path[i] = '\0';
        bool existed = cv_path_exists(path);
        cv_status st = make_one_dir(path, dir, err);
        if (!st && !existed && !made[0]) snprintf(made, CV_PATH_MAX, "%s", path);
        if (i < len) path[i] = '/';
        if (st) return st;
    }
    return CV_OK;
}

void cv_unmake_dirs(const char *dir, const char *made) {
    char path[CV_PATH_MAX];
    if (!made[0] || cv_trim_path(path, dir, NULL)) return;
    size_t stop = strlen(made);
    for (size_t len = strlen(path); len >= stop; len--) {
        if (len < strlen(path) && path[len] != '/') continue;
        path[len] = '\0';
        if (rmdir(path) != 0) return; /* not empty, or already gone: leave the rest */
    }
}

cv_status cv_prepare_output_file(const char *path, char made[CV_PATH_MAX], cv_err *err) {
    made[0] = '\0';
    char parent[CV_PATH_MAX];
    struct stat sb;
    if (!path[0]) return cv_fail(err, CV_ERR_USAGE, "an output file's path is empty");
    if (path[strlen(path) - 1] == '/' || (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)))
        return cv_fail(err, CV_ERR_IO, "%s: is a folder; name a file", path);
    if (snprintf(parent, sizeof parent, "%s", path) >= (int)sizeof parent)
        return cv_fail(err, CV_ERR_USAGE, "%s: path too long", path);
    const char *folder = dirname(parent); /* "." for a bare name */
    cv_status st = cv_make_dirs(folder, made, err);
    if (st) return st;
    char name[CV_PATH_MAX];
    snprintf(name, sizeof name, "%s", path);
    cv_sweep_stale_temporaries(folder, basename(name));
    cv_outfile probe;
    st = cv_outfile_open(&probe, path, err);
    if (!st) cv_outfile_abort(&probe);
    return st;
}

/* Whether fd is still the file at path: a lock file a failed run removed, after this
 * process opened it and before it locked it, locks nothing. */
static bool still_linked(int fd, const char *path) {
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

/* Opens and locks DIR's lock file: the locked descriptor, or -1 with err filled. */
static int lock_file(const char *dir, const char *path, cv_err *err) {
    for (int attempt = 0; attempt < 8; attempt++) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
        if (fd < 0) {
            cv_fail(err, CV_ERR_IO, "%s: cannot write in this folder: %s", dir, strerror(errno));
            return -1;
        }
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        if (fcntl(fd, F_SETLK, &fl) == 0) {
            if (still_linked(fd, path)) return fd;
            close(fd);
            continue;
        }
        int e = errno;
        struct flock holder = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        bool known = (e == EACCES || e == EAGAIN) && fcntl(fd, F_GETLK, &holder) == 0 &&
                     holder.l_type != F_UNLCK;
        close(fd);
        if (known)
            cv_fail(err, CV_ERR_IO, "%s: in use by another cvae train (pid %ld); wait for it "
                    "to end or choose another --out", dir, (long)holder.l_pid);
        else
            cv_fail(err, CV_ERR_IO, "%s: cannot lock %s: %s", dir, CV_LOCK_FILE, strerror(e));
        return -1;
    }
    cv_fail(err, CV_ERR_IO, "%s: its lock file keeps being replaced", dir);
    return -1;
}

cv_status cv_dir_lock_take(const char *dir, cv_dir_lock *lock, cv_err *err) {
    lock->fd = -1;
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, CV_LOCK_FILE);
    int fd = lock_file(dir, path, err);
    if (fd < 0) return CV_ERR_IO;
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        int e = errno;
        close(fd);
        return cv_fail(err, CV_ERR_IO, "%s: cannot write in this folder: %s", dir,
                       strerror(e));
    }
    lock->fd = fd;
    return CV_OK;
}

void cv_dir_lock_release(cv_dir_lock *lock) {
    if (lock->fd >= 0) close(lock->fd); /* closing drops the lock */
    lock->fd = -1;
}

bool cv_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void cv_remove_tree(const char *path) { nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* The pid of a temporary name PREFIX.tmp.PID (any PREFIX when prefix is NULL), or 0. */
static long temporary_pid(const char *name, const char *prefix) {
    const char *tag = NULL;
    for (const char *p = strstr(name, ".tmp."); p; p = strstr(p + 1, ".tmp.")) tag = p;
    if (!tag || (prefix && ((size_t)(tag - name) != strlen(prefix) ||
                            strncmp(name, prefix, strlen(prefix)) != 0)))
        return 0;
    const char *digits = tag + 5;
    size_t n = strspn(digits, "0123456789");
    if (n == 0 || n > 9 || digits[n] != '\0') return 0;
    return strtol(digits, NULL, 10);
}

/* A pid whose process is gone (ESRCH: EPERM means it runs, as another user), or ours. */
static bool left_by_the_dead(long pid) {
    return pid == (long)getpid() || (kill((pid_t)pid, 0) != 0 && errno == ESRCH);
}

void cv_sweep_stale_temporaries(const char *folder, const char *prefix) {
    DIR *d = opendir(folder);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        long pid = temporary_pid(e->d_name, prefix);
        if (pid <= 0 || !left_by_the_dead(pid)) continue;
        char path[CV_PATH_MAX + 256];
        snprintf(path, sizeof path, "%s/%s", folder, e->d_name);
        cv_remove_tree(path);
    }
    closedir(d);
}

cv_status cv_open_regular(const char *path, const char *what, int *fd, uint64_t *size,
                          cv_err *err) {
    /* O_NONBLOCK: opening a FIFO does not wait for a writer; nothing changes for a file */
    *fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (*fd < 0) return cv_fail(err, CV_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    cv_status st = CV_OK;
    if (fstat(*fd, &sb) != 0)
        st = cv_fail(err, CV_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    else if (S_ISDIR(sb.st_mode))
        st = cv_fail(err, CV_ERR_IO, "%s: is a folder, not %s", path, what);
    else if (!S_ISREG(sb.st_mode))
        st = cv_fail(err, CV_ERR_IO, "%s: is not a regular file", path);
    if (st) {
        close(*fd);
        *fd = -1;
        return st;
    }
    *size = (uint64_t)sb.st_size;
    return CV_OK;
}
