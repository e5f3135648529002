/* cuda_loader.c: cv_backend_cuda_create and cv_backend_cuda_available of a CUDA build,
 * through the CUDA module (cuda_module.h), which is loaded by the first call and stays
 * loaded: the backends it makes run its code, and the CUDA runtime is not made to be
 * unloaded. Each call opens it again (the dynamic loader hands back the loaded one), so
 * nothing is kept here. */
#include <dlfcn.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "cuda/cuda_module.h"

typedef struct {
    cv_status (*create)(const cv_backend_options *opt, cv_backend **out, cv_err *err);
    bool (*available)(void);
    void (*abi)(char *out, size_t size);
} cuda_module;

/* *fn = the module's function name (fn: a pointer to a function pointer); false if none. */
static bool symbol(void *handle, const char *name, void *fn) {
    void *address = dlsym(handle, name);
    memcpy(fn, &address, sizeof address); /* ISO C has no cast from void * to a function */
    return address != NULL;
}

/* The module at path (by name on the dynamic loader's path when path has no slash) into m:
 * CV_OK; CV_ERR_DEVICE with the dynamic loader's words when it, or a library it needs,
 * cannot be loaded; CV_ERR_FORMAT when it is the module of another build (closed again). */
static cv_status open_module(const char *path, cuda_module *m, cv_err *err) {
    /* RTLD_NOW: a missing symbol fails here, not in the middle of a run; RTLD_LOCAL: its
     * names stay its own (it holds copies of the few libcvae functions it calls) */
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle)
        return cv_fail(err, CV_ERR_DEVICE, "the CUDA backend cannot be loaded: %s", dlerror());
    char want[256], have[256] = "no build mark";
    cv_cuda_module_abi_string(want, sizeof want);
    if (symbol(handle, "cv_cuda_module_abi", &m->abi)) m->abi(have, sizeof have);
    if (strcmp(have, want) != 0) {
        dlclose(handle); /* nothing of it was used */
        return cv_fail(err, CV_ERR_FORMAT, "%s belongs to another build of cvae (%s; this "
                       "one is %s)", path, have, want);
    }
    if (symbol(handle, "cv_backend_cuda_create", &m->create) &&
        symbol(handle, "cv_backend_cuda_available", &m->available))
        return CV_OK;
    dlclose(handle);
    return cv_fail(err, CV_ERR_DEVICE, "%s lacks the CUDA backend's entry points", path);
}

/* The first module of this build: in the folders of cv_cuda_module_folders, then by name.
 * A module that cannot load ends the search with the reason; one of another build is
 * passed over. */
static cv_status load(cuda_module *m, cv_err *err) {
    char folders[CV_CUDA_MODULE_FOLDERS][PATH_MAX];
    const int n = cv_cuda_module_folders(folders);
    cv_err other = {{0}}; /* why the first module found was passed over */
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX + sizeof CV_CUDA_MODULE_FILE + 1];
        snprintf(path, sizeof path, "%.*s/%s", PATH_MAX - 1, folders[i], CV_CUDA_MODULE_FILE);
        if (access(path, F_OK) != 0) continue;
        cv_err why;
        const cv_status st = open_module(path, m, &why);
        if (st == CV_OK) return CV_OK;
        if (st != CV_ERR_FORMAT) return cv_fail(err, st, "%s", why.msg);
        if (!other.msg[0]) other = why;
    }
    cv_err by_name;
    cv_status st = open_module(CV_CUDA_MODULE_FILE, m, &by_name);
    if (st == CV_OK) return CV_OK;
    /* the dynamic loader names the file it could not open first: this module itself when
     * it is nowhere on its path */
    const bool nowhere = strstr(by_name.msg, ": " CV_CUDA_MODULE_FILE ": ") != NULL;
    if (!nowhere) return cv_fail(err, CV_ERR_DEVICE, "%s", by_name.msg);
    if (other.msg[0]) return cv_fail(err, CV_ERR_DEVICE, "%s", other.msg);
    char where[CV_CUDA_MODULE_FOLDERS * PATH_MAX];
    cv_cuda_module_where(where, sizeof where);
    return cv_fail(err, CV_ERR_DEVICE, "the CUDA backend cannot be loaded: its module %s is "
                   "not in %s nor on the library path", CV_CUDA_MODULE_FILE, where);
}

cv_status cv_backend_cuda_create(const cv_backend_options *opt, cv_backend **out, cv_err *err) {
    *out = NULL;
    cuda_module m;
    const cv_status st = load(&m, err);
    return st ? st : m.create(opt, out, err);
}

bool cv_backend_cuda_available(void) {
    cuda_module m;
    cv_err ignored;
    return cv_cuda_driver_check(&ignored) == CV_OK && load(&m, &ignored) == CV_OK &&
           m.available();
}
