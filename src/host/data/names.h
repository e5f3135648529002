/* names.h: the names of a data set's or model's K conditions: its class names, or the
 * table columns its condition vectors come from (internal). */
#ifndef CVAE_DATA_NAMES_H
#define CVAE_DATA_NAMES_H

#include <stdbool.h>

#define CV_NAME_MAX 255

typedef struct {
    int count;
    char **names; /* (count) malloc'd strings */
} cv_names;

/* Whether a name can be a class folder, a png output folder and a checkpoint entry: 1 to
 * CV_NAME_MAX bytes, no '/', no control character, not "." or "..". NULL when it can,
 * else the reason. */
const char *cv_name_problem(const char *name);

/* The index of name among names[n], or -1. */
int cv_names_find(char *const *names, int n, const char *name);
/* Whether a and b (n each, either may be NULL: no names) are the same list. */
bool cv_names_equal(char *const *a, char *const *b, int n);
/* A malloc'd copy of names[n] (NULL when names is NULL); false when out of memory. */
bool cv_names_copy(char *const *names, int n, char ***out);
/* Frees names[n] and the array (NULL is fine). */
void cv_names_release(char **names, int n);
/* Appends a copy of name; false when out of memory. */
bool cv_names_add(cv_names *set, const char *name);
void cv_names_free(cv_names *set);

#endif
