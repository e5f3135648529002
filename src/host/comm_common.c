/* comm_common.c: what the ranks of a run agree on, whatever carries their messages: how a
 * batch's rows are shared out, and one status for the run. */
#include <stdio.h>
#include <string.h>

#include "cvae/comm.h"

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
    int status = (int)st;
    cv_comm_broadcast(comm, &status, sizeof status, first);
    if (rank != first) {
        err->msg[0] = '\0'; /* the first failed rank says why */
    } else if (rank != 0) {
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err->msg);
        snprintf(err->msg, sizeof err->msg, "rank %d of %d: %.700s", rank, size, why);
    }
    return (cv_status)status;
}
