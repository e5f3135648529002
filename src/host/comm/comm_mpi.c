/* comm_mpi.c: the ranks of a data-parallel run over MPI (the build's `mpi` option).
 *
 * Only the main thread calls MPI (MPI_THREAD_FUNNELED): OpenMP's threads never do. The
 * communicator returns errors instead of aborting the job, so a failed collective is one
 * line of ours before the abort, not MPI's page of them. Sums go through MPI_Allreduce,
 * whose order of additions MPI fixes for a given size and message (Open MPI's algorithms
 * depend on neither timing nor arrival order), so the bits repeat from run to run.
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cvae/comm.h"
#include "cvae/status.h"

/* The largest element count one MPI call takes (its count is an int). */
#define MPI_CHUNK ((size_t)1 << 30)

struct cv_comm {
    bool joined;    /* MPI_Init was called: MPI_Finalize at the end */
    MPI_Comm world; /* a duplicate of MPI_COMM_WORLD, errors returned */
    int rank, size, local_rank;
};

bool cv_comm_mpi_built(void) { return true; }

static bool launched_by_mpi(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

/* One line naming the failed call, then abort: the launcher ends the other ranks. */
static void check(int rc, const char *call, const cv_comm *c) {
    if (rc == MPI_SUCCESS) return;
    char what[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, what, &len);
    fprintf(stderr, "cvae: rank %d of %d: %s failed: %.*s\n", c ? c->rank : -1,
            c ? c->size : -1, call, len, what);
    abort();
}

static cv_status join(int *argc, char ***argv, cv_comm *c, cv_err *err) {
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return cv_fail(err, CV_ERR_DEVICE, "MPI_Init_thread failed: cannot join the MPI job");
    c->joined = true;
    if (provided < MPI_THREAD_FUNNELED)
        return cv_fail(err, CV_ERR_DEVICE, "this MPI gives threads no support at all "
                       "(MPI_THREAD_FUNNELED is needed: OpenMP runs beside MPI)");
    check(MPI_Comm_dup(MPI_COMM_WORLD, &c->world), "MPI_Comm_dup", c);
    check(MPI_Comm_set_errhandler(c->world, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler", c);
    check(MPI_Comm_rank(c->world, &c->rank), "MPI_Comm_rank", c);
    check(MPI_Comm_size(c->world, &c->size), "MPI_Comm_size", c);
    /* the ranks that share this machine's memory: the local rank picks a GPU */
    MPI_Comm node;
    check(MPI_Comm_split_type(c->world, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node),
          "MPI_Comm_split_type", c);
    check(MPI_Comm_rank(node, &c->local_rank), "MPI_Comm_rank", c);
    check(MPI_Comm_free(&node), "MPI_Comm_free", c);
    return CV_OK;
}

cv_status cv_comm_open(int *argc, char ***argv, cv_comm **out, cv_err *err) {
    cv_comm *c = calloc(1, sizeof *c);
    *out = NULL;
    if (!c) return cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    c->size = 1;
    cv_status st = launched_by_mpi() ? join(argc, argv, c, err) : CV_OK;
    if (st) {
        if (c->joined) MPI_Finalize();
        free(c);
        return st;
    }
    *out = c;
    return CV_OK;
}

void cv_comm_close(cv_comm *c) {
    if (!c) return;
    if (c->joined) {
        MPI_Comm_free(&c->world);
        MPI_Finalize();
    }
    free(c);
}

int cv_comm_rank(const cv_comm *c) { return c ? c->rank : 0; }
int cv_comm_size(const cv_comm *c) { return c ? c->size : 1; }
int cv_comm_local_rank(const cv_comm *c) { return c ? c->local_rank : 0; }

static void sum(cv_comm *c, void *buf, size_t n, MPI_Datatype type, size_t item) {
    if (!c || c->size == 1) return;
    for (size_t done = 0; done < n; done += MPI_CHUNK) {
        const int count = (int)(n - done < MPI_CHUNK ? n - done : MPI_CHUNK);
        check(MPI_Allreduce(MPI_IN_PLACE, (char *)buf + done * item, count, type, MPI_SUM,
                            c->world),
              "MPI_Allreduce", c);
    }
}

void cv_comm_sum_f32(cv_comm *c, float *buf, size_t n) { sum(c, buf, n, MPI_FLOAT, 4); }
void cv_comm_sum_f64(cv_comm *c, double *buf, size_t n) { sum(c, buf, n, MPI_DOUBLE, 8); }

int cv_comm_max_int(cv_comm *c, int v) {
    if (!c || c->size == 1) return v;
    check(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MAX, c->world), "MPI_Allreduce", c);
    return v;
}

void cv_comm_broadcast(cv_comm *c, void *buf, size_t bytes, int root) {
    if (!c || c->size == 1) return;
    for (size_t done = 0; done < bytes; done += MPI_CHUNK) {
        const int count = (int)(bytes - done < MPI_CHUNK ? bytes - done : MPI_CHUNK);
        check(MPI_Bcast((char *)buf + done, count, MPI_BYTE, root, c->world), "MPI_Bcast", c);
    }
}

void cv_comm_gather(cv_comm *c, const void *mine, size_t bytes, void *all) {
    if (!c || c->size == 1) {
        memcpy(all, mine, bytes);
        return;
    }
    CV_ASSERT(bytes <= INT_MAX);
    check(MPI_Allgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, c->world),
          "MPI_Allgather", c);
}
