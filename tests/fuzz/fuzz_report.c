/* fuzz_report.c: libFuzzer target for what `cvae report` reads from outside: a run's
 * report page (cv_report_read) and a metrics file, whose lines become the charts
 * (cv_report_charts, which parses each line's figures). Run by tests/fuzz/run.sh with
 * ASan, UBSan and a malloc limit: a crash, a leak, a hang or an allocation larger than the
 * input justifies fails the run. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "report/report.h"

/* The charts of one run whose metrics are text, drawn into memory. */
static void draw(const char *text) {
    char *page = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&page, &len);
    if (!fp) abort();
    const cv_report_run run = {"fuzz", text, NULL};
    cv_err err;
    if (cv_report_charts(fp, &run, 1, &err) != CV_OK) abort();
    fclose(fp);
    free(page);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) abort();
    memcpy(text, data, size);
    text[size] = '\0';
    draw(text); /* as a metrics file */
    free(text);
    int fd = memfd_create("report", 0);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size) abort();
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    char *metrics, *command;
    cv_err err;
    if (cv_report_read(path, &metrics, &command, &err) == CV_OK) {
        if (strlen(metrics) > size) abort(); /* nothing made up */
        draw(metrics);
        free(metrics);
        free(command);
    } else if (metrics || command) {
        abort(); /* a refused page leaves nothing to free */
    }
    close(fd);
    return 0;
}
