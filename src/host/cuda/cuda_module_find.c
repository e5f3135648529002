/* cuda_module_find.c: where the CUDA module may lie, and whether the NVIDIA driver is
 * installed (cuda_module.h). Neither loads the CUDA libraries. */
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cuda/cuda_module.h"

/* An address inside libcvae, for dladdr: the shared library's, or the program's when it
 * links libcvae statically. */
static const char inside_libcvae = 0;

/* folder = the folder of file, made canonical; false when it does not exist. */
static bool folder_of(const char *file, char folder[PATH_MAX]) {
    char copy[PATH_MAX];
    if (snprintf(copy, sizeof copy, "%s", file) >= (int)sizeof copy) return false;
    return realpath(dirname(copy), folder) != NULL;
}

/* Appends folder to the list unless it is there already. */
static int add_folder(char folders[CV_CUDA_MODULE_FOLDERS][PATH_MAX], int n, const char *folder) {
    for (int i = 0; i < n; i++)
        if (strcmp(folders[i], folder) == 0) return n;
    snprintf(folders[n], PATH_MAX, "%s", folder);
    return n + 1;
}

int cv_cuda_module_folders(char folders[CV_CUDA_MODULE_FOLDERS][PATH_MAX]) {
    int n = 0;
    char folder[PATH_MAX];
    /* beside the shared libcvae (dladdr names it as loaded); for a program that links
     * libcvae statically it names the program as started, which the next one covers */
    Dl_info info;
    if (dladdr(&inside_libcvae, &info) && info.dli_fname && strchr(info.dli_fname, '/') &&
        folder_of(info.dli_fname, folder))
        n = add_folder(folders, n, folder);
    char self[PATH_MAX];
    const ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0 || len >= (ssize_t)sizeof self - 1) return n;
    self[len] = '\0';
    if (!folder_of(self, folder)) return n;
    n = add_folder(folders, n, folder);
    /* the library folder of an installed program (bin/../lib/<arch>), wherever the
     * installed tree was moved or staged (DESTDIR); absolute when the libdir is */
    char installed[PATH_MAX + sizeof CV_BUILD_MODULE_FROM_BINDIR + 1];
    if (CV_BUILD_MODULE_FROM_BINDIR[0] == '/')
        snprintf(installed, sizeof installed, "%s", CV_BUILD_MODULE_FROM_BINDIR);
    else
        snprintf(installed, sizeof installed, "%s/%s", folder, CV_BUILD_MODULE_FROM_BINDIR);
    if (realpath(installed, folder)) n = add_folder(folders, n, folder);
    return n;
}

void cv_cuda_module_where(char *out, size_t size) {
    char folders[CV_CUDA_MODULE_FOLDERS][PATH_MAX];
    const int n = cv_cuda_module_folders(folders);
    snprintf(out, size, "%s", n ? "" : "no folder of the program's");
    for (int i = 0; i < n; i++) {
        const size_t used = strlen(out);
        snprintf(out + used, size - used, "%s%s", i == 0 ? "" : i == n - 1 ? " or " : ", ",
                 folders[i]);
    }
}

bool cv_cuda_module_find(char *path, size_t size) {
    char folders[CV_CUDA_MODULE_FOLDERS][PATH_MAX];
    const int n = cv_cuda_module_folders(folders);
    for (int i = 0; i < n; i++)
        if ((size_t)snprintf(path, size, "%s/%s", folders[i], CV_CUDA_MODULE_FILE) < size &&
            access(path, F_OK) == 0)
            return true;
    return false;
}

cv_status cv_cuda_driver_check(cv_err *err) {
    /* the name the CUDA runtime itself loads; kept loaded, since the runtime loads it next */
    if (dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL)) return CV_OK;
    return cv_fail(err, CV_ERR_DEVICE, "no NVIDIA driver on this machine (%s)", dlerror());
}
