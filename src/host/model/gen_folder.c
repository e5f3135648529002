/* gen_folder.c: a generated data set's folder, made whole or not at all (gen_folder.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gen_folder.h"

#define MANIFEST "manifest.json"

/* Refuses an output that holds anything, or is no folder. */
static cv_status check_empty(const char *dir, cv_err *err) {
    struct stat st;
    if (stat(dir, &st) != 0)
        return cv_fail(err, CV_ERR_IO, "%s: cannot read: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return cv_fail(err, CV_ERR_IO, "%s: exists and is not a folder", dir);
    DIR *d = opendir(dir);
    if (!d) return cv_fail(err, CV_ERR_IO, "%s: cannot read: %s", dir, strerror(errno));
    int entries = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        entries += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    if (entries)
        return cv_fail(err, CV_ERR_IO, "%s: exists and is not empty; choose a new output folder",
                       dir);
    return CV_OK;
}

static void sync_dir(const char *dir) {
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
}

cv_status gen_folder_open(gen_folder *f, const char *out, cv_err *err) {
    memset(f, 0, sizeof *f);
    cv_status st = cv_trim_path(f->out, out, err);
    if (st) return st;
    char copy[CV_PATH_MAX], parent[CV_PATH_MAX];
    snprintf(copy, sizeof copy, "%s", f->out);
    snprintf(parent, sizeof parent, "%s", dirname(copy));
    snprintf(copy, sizeof copy, "%s", f->out);
    cv_sweep_stale_temporaries(parent, basename(copy));
    f->in_place = cv_path_exists(f->out);
    if (f->in_place) {
        cv_sweep_stale_temporaries(f->out, "");
        st = check_empty(f->out, err);
        snprintf(f->tmp, sizeof f->tmp, "%s/.tmp.%ld", f->out, (long)getpid());
    } else {
        st = cv_make_dirs(parent, f->made, err);
        snprintf(f->tmp, sizeof f->tmp, "%s.tmp.%ld", f->out, (long)getpid());
    }
    if (!st && mkdir(f->tmp, 0777) != 0)
        st = cv_fail(err, CV_ERR_IO, "%s: cannot create the output folder: %s", f->tmp,
                     strerror(errno));
    if (st) {
        f->tmp[0] = '\0';
        gen_folder_abort(f);
    }
    return st;
}

/* Moves tmp/name into out, refusing to replace anything there. */
static cv_status move_in(const gen_folder *f, const char *name, cv_err *err) {
    char from[CV_PATH_MAX + 300], to[CV_PATH_MAX + 300];
    snprintf(from, sizeof from, "%s/%s", f->tmp, name);
    snprintf(to, sizeof to, "%s/%s", f->out, name);
    if (cv_path_exists(to))
        return cv_fail(err, CV_ERR_IO, "%s: appeared while the data set was written", to);
    if (rename(from, to) != 0)
        return cv_fail(err, CV_ERR_IO, "%s: cannot move the file into place: %s", to,
                       strerror(errno));
    return CV_OK;
}

static bool is_data_entry(const char *name) {
    return strcmp(name, ".") && strcmp(name, "..") && strcmp(name, MANIFEST);
}

/* The entries of tmp moved into out, the manifest last; on failure those moved are
 * removed again. */
static cv_status fill_in_place(gen_folder *f, cv_err *err) {
    struct dirent **names;
    int n = scandir(f->tmp, &names, NULL, alphasort);
    if (n < 0) return cv_fail(err, CV_ERR_IO, "%s: cannot read: %s", f->tmp, strerror(errno));
    cv_status st = CV_OK;
    int done = 0; /* the data entries of names[0, done) are in out */
    for (; done < n && !st; done++)
        if (is_data_entry(names[done]->d_name) && (st = move_in(f, names[done]->d_name, err)))
            break;
    if (!st) sync_dir(f->out); /* the data files are in place before the manifest says so */
    if (!st) st = move_in(f, MANIFEST, err);
    for (int i = 0; st && i < done; i++) {
        char path[CV_PATH_MAX + 300];
        snprintf(path, sizeof path, "%s/%s", f->out, names[i]->d_name);
        if (is_data_entry(names[i]->d_name)) cv_remove_tree(path);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    if (!st) rmdir(f->tmp);
    return st;
}

cv_status gen_folder_commit(gen_folder *f, cv_err *err) {
    char copy[CV_PATH_MAX];
    snprintf(copy, sizeof copy, "%s", f->out);
    if (f->in_place) {
        cv_status st = fill_in_place(f, err);
        if (!st) sync_dir(f->out);
        return st;
    }
    if (rename(f->tmp, f->out) != 0)
        return cv_fail(err, CV_ERR_IO, "%s: cannot rename the finished data set into place: %s",
                       f->out, strerror(errno));
    sync_dir(dirname(copy));
    return CV_OK;
}

void gen_folder_abort(gen_folder *f) {
    if (f->tmp[0]) cv_remove_tree(f->tmp);
    char copy[CV_PATH_MAX];
    snprintf(copy, sizeof copy, "%s", f->out);
    if (!f->in_place) cv_unmake_dirs(dirname(copy), f->made);
}
