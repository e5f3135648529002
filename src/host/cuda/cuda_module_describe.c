/* cuda_module_describe.c: `cvae --version`'s line about the CUDA module: where it is, and
 * whether the CUDA libraries it needs can be found, without loading them (which costs
 * cuBLASLt's relocation, 0.27 s and 206 MiB on a 2-core EPYC: bench/results/startup-cpu.md).
 *
 * The dynamic loader answers the second question itself: `ld.so --list MODULE` (what ldd
 * runs) maps the module's dependencies by the same search as dlopen (its RUNPATH,
 * LD_LIBRARY_PATH, ld.so.cache) and runs none of their code, in a child process that exits
 * at once. No library offers "would dlopen succeed" without the dlopen.
 */
#include <elf.h>
#include <link.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cuda/cuda_module.h"

extern char **environ;

/* How the dynamic loader begins its reason for not loading a file. */
static const char loader_error[] = "error while loading shared libraries: ";

/* The program's dynamic loader (its PT_INTERP), for dl_iterate_phdr: the first object it
 * visits is the program. */
static int find_interpreter(struct dl_phdr_info *info, size_t size, void *out) {
    (void)size;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_INTERP) {
            snprintf(out, PATH_MAX, "%s",
                     (const char *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr));
            break;
        }
    return 1; /* the program only */
}

/* Runs `INTERPRETER --list module` with its stdout and stderr into out (size bytes, kept
 * NUL-terminated); its exit status, or -1 when it could not be run. */
static int list_dependencies(const char *module, char *out, size_t size) {
    char interp[PATH_MAX] = "";
    dl_iterate_phdr(find_interpreter, interp);
    int fds[2];
    if (!interp[0] || pipe(fds) != 0) return -1;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    char *argv[] = {interp, "--list", (char *)module, NULL};
    pid_t pid;
    const int rc = posix_spawn(&pid, interp, &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    size_t used = 0;
    ssize_t got = 1;
    while (got > 0) { /* read to the end, keeping what fits */
        char chunk[4096];
        got = read(fds[0], chunk, sizeof chunk);
        for (ssize_t i = 0; i < got && used + 1 < size; i++) out[used++] = chunk[i];
    }
    out[used] = '\0';
    close(fds[0]);
    int status = 0;
    if (rc != 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

/* The libraries the loader's listing marks "not found", comma-separated, into missing. */
static void not_found(const char *listing, char *missing, size_t size) {
    missing[0] = '\0';
    for (const char *line = listing; *line;) {
        const char *end = strchr(line, '\n');
        const size_t len = end ? (size_t)(end - line) : strlen(line);
        const char *mark = strstr(line, " => not found");
        if (mark && mark < line + len) {
            while (*line == '\t' || *line == ' ') line++;
            const size_t have = strlen(missing);
            snprintf(missing + have, size - have, "%s%.*s", have ? ", " : "", (int)(mark - line),
                     line);
        }
        line += len + (end != NULL);
    }
}

void cv_cuda_module_describe(char *out, size_t size) {
    char module[PATH_MAX + 32];
    if (!cv_cuda_module_find(module, sizeof module)) {
        char where[CV_CUDA_MODULE_FOLDERS * PATH_MAX];
        cv_cuda_module_where(where, sizeof where);
        snprintf(out, size, "CUDA module: %s is not in %s; --device cuda also looks on the "
                 "library path", CV_CUDA_MODULE_FILE, where);
        return;
    }
    char listing[8192], missing[512];
    const int rc = list_dependencies(module, listing, sizeof listing);
    not_found(listing, missing, sizeof missing);
    const char *why = strstr(listing, loader_error);
    why = why ? why + sizeof loader_error - 1 : listing;
    if (rc == 0 && !missing[0])
        snprintf(out, size, "CUDA module: %s (the CUDA runtime%s and cuBLASLt are found; they "
                 "load when a command first uses a GPU)", module, CV_BUILD_NCCL ? ", NCCL" : "");
    else if (rc < 0)
        snprintf(out, size, "CUDA module: %s (whether its libraries can be found was not "
                 "checked: the dynamic loader could not be run)", module);
    else if (missing[0])
        snprintf(out, size, "CUDA module: %s cannot load: not found: %s", module, missing);
    else
        snprintf(out, size, "CUDA module: %s cannot load: %.*s", module, (int)strcspn(why, "\n"),
                 why);
}
