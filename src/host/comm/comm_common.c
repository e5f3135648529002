/* comm_common.c: what the ranks of a run agree on, whatever carries their messages: how a
 * batch's rows are shared out, and one status for the run. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cvae/comm.h"

/* The first of the variables that is set, as a non-negative int; else fallback. */
static int env_int(const char *const *names, int fallback) {
    for (; *names; names++) {
        const char *v = getenv(*names);
        if (!v) continue;
        char *end;
        long x = strtol(v, &end, 10);
        if (end != v && !*end && x >= 0 && x <= INT_MAX) return (int)x;
    }
    return fallback;
}

/* Open MPI's, then MPICH's and Slurm's PMI, then PMIx's */
int cv_comm_launcher_rank(void) {
    static const char *const names[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", NULL};
    return env_int(names, 0);
}

int cv_comm_launcher_size(void) {
    static const char *const names[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", NULL};
    return env_int(names, 1);
}

cv_batch_part cv_batch_part_of(int total, int rank, int size) {
    const int base = total / size, extra = total % size;
    cv_batch_part p = {.rows = base + (rank < extra), .total = total, .ranks = size};
    p.offset = rank * base + (rank < extra ? rank : extra);
    return p;
}

void cv_batch_split_text(char *buf, size_t n, int total, int size) {
    const int most = cv_batch_part_of(total, 0, size).rows;
    const int least = cv_batch_part_of(total, size - 1, size).rows;
    if (most == least)
        snprintf(buf, n, "%d rows a rank", most);
    else
        snprintf(buf, n, "%d or %d rows a rank", most, least);
}

cv_status cv_comm_agree(cv_comm *comm, cv_status st, cv_err *err) {
    const int size = cv_comm_size(comm), rank = cv_comm_rank(comm);
    if (size == 1) return st;
    /* the lowest failed rank has the largest size - rank */
    const int first = size - cv_comm_max_int(comm, st ? size - rank : 0);
    if (first == size) return CV_OK;
    /* its status and message to every rank; rank 0 alone says why */
    int status = (int)st;
    cv_comm_broadcast(comm, &status, sizeof status, first);
    char why[sizeof err->msg];
    if (rank == first) snprintf(why, sizeof why, "%s", err->msg);
    cv_comm_broadcast(comm, why, sizeof why, first);
    if (rank != 0)
        err->msg[0] = '\0';
    else if (first != 0)
        snprintf(err->msg, sizeof err->msg, "rank %d of %d: %.700s", first, size, why);
    return (cv_status)status;
}
