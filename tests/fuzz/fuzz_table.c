/* fuzz_table.c: libFuzzer target for the table reader (CSV and whitespace fields, quotes,
 * CelebA's count line) and for what a table's rows become (the image column, labels by
 * number or name, condition columns). Run by tests/fuzz/run.sh with ASan, UBSan and a
 * malloc limit. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "data/image_set.h"
#include "data/table.h"

/* Every cell of an accepted table is a string inside the text. */
static void touch(const cv_table *t) {
    volatile size_t sum = 0;
    for (int c = 0; c < t->n_cols; c++) sum += strlen(t->names[c]);
    for (int r = 0; r < t->n_rows; r++)
        for (int c = 0; c < t->n_cols; c++) {
            float v;
            sum += strlen(cv_table_cell(t, r, c)) + cv_table_number(cv_table_cell(t, r, c), &v);
        }
    (void)sum;
}

static void as_images(const char *path, const char *columns) {
    cv_names names = {0};
    cv_table_request req = {columns, &names, CV_COND_LABELS, false};
    cv_image_list list, test;
    cv_err err;
    if (cv_table_images(path, &req, &list, &test, &err) == CV_OK) {
        if (list.n < 1 || (req.kind == CV_COND_LABELS) != (list.labels != NULL)) abort();
        cv_image_list_free(&list);
        cv_image_list_free(&test);
    }
    cv_names_free(&names);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) abort();
    memcpy(text, data, size);
    cv_table t;
    cv_err err;
    if (cv_table_parse("fuzz", text, size, &t, &err) == CV_OK) {
        touch(&t);
        cv_table_free(&t);
    }
    int fd = memfd_create("table", 0);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size) abort();
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    as_images(path, NULL);
    as_images(path, "b,a");
    close(fd);
    return 0;
}
