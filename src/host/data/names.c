/* names.c: lists of class or column names (names.h). */
#include <stdlib.h>
#include <string.h>

#include "data/names.h"

const char *cv_name_problem(const char *name) {
    const size_t len = strlen(name);
    if (len == 0) return "it is empty";
    if (len > CV_NAME_MAX) return "it is longer than 255 bytes";
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) return "it is . or ..";
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p == '/') return "it holds a '/'";
        if (*p < 0x20 || *p == 0x7f) return "it holds a control character";
    }
    return NULL;
}

int cv_names_find(char *const *names, int n, const char *name) {
    for (int i = 0; names && i < n; i++)
        if (strcmp(names[i], name) == 0) return i;
    return -1;
}

bool cv_names_equal(char *const *a, char *const *b, int n) {
    if (!a || !b) return !a && !b;
    for (int i = 0; i < n; i++)
        if (strcmp(a[i], b[i]) != 0) return false;
    return true;
}

bool cv_names_copy(char *const *names, int n, char ***out) {
    *out = NULL;
    if (!names) return true;
    char **copy = calloc((size_t)n + 1, sizeof *copy);
    for (int i = 0; copy && i < n; i++)
        if (!(copy[i] = strdup(names[i]))) {
            cv_names_release(copy, i);
            return false;
        }
    *out = copy;
    return copy != NULL;
}

void cv_names_release(char **names, int n) {
    for (int i = 0; names && i < n; i++) free(names[i]);
    free(names);
}

bool cv_names_add(cv_names *set, const char *name) {
    char **grown = realloc(set->names, ((size_t)set->count + 1) * sizeof *grown);
    if (!grown) return false;
    set->names = grown;
    if (!(grown[set->count] = strdup(name))) return false;
    set->count++;
    return true;
}

void cv_names_free(cv_names *set) {
    cv_names_release(set->names, set->count);
    set->names = NULL;
    set->count = 0;
}
