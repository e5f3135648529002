/* comm.h: the processes of one data-parallel run, and what they share.
 *
 * A run of N processes (ranks) is started by an MPI launcher (`mpirun -np N cvae ...`):
 * every rank holds the whole model and data, takes its part of each batch, and the ranks
 * sum their gradients before every rank takes the same optimiser step (docs/design.md 7).
 * A process started without a launcher, or by a cvae built without MPI, is rank 0 of 1 and
 * needs no MPI at all. Every collective below must be called by all ranks in the same order;
 * a failed one prints one line and aborts (a dead rank makes the launcher end the job).
 */
#ifndef CVAE_COMM_H
#define CVAE_COMM_H

#include <stdbool.h>
#include <stddef.h>

#include "cvae/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cv_comm cv_comm;

/* Joins the MPI job when the process was started by an MPI launcher (it sets
 * OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK); otherwise a communicator of one rank. */
cv_status cv_comm_open(int *argc, char ***argv, cv_comm **out, cv_err *err);
/* Leaves the job (MPI_Finalize) and frees the communicator; NULL is fine. */
void cv_comm_close(cv_comm *comm);

/* Whether this build can join an MPI job at all. */
bool cv_comm_mpi_built(void);

/* What an MPI launcher told this process in its environment, before MPI starts: its rank
 * (0 without a launcher) and the job's size (1 without one, or when the launcher does not
 * say). Every rank parses the same command line, and rank 0 alone reports its errors. */
int cv_comm_launcher_rank(void);
int cv_comm_launcher_size(void);

/* This rank, of size ranks; and its index among the ranks on its own machine, which picks
 * its GPU. A NULL comm is rank 0 of 1. */
int cv_comm_rank(const cv_comm *comm);
int cv_comm_size(const cv_comm *comm);
int cv_comm_local_rank(const cv_comm *comm);

/* buf (n values, host memory) = its sum over the ranks, in place; every rank gets the same
 * bits, and for a fixed size the same bits on every run. */
void cv_comm_sum_f32(cv_comm *comm, float *buf, size_t n);
void cv_comm_sum_f64(cv_comm *comm, double *buf, size_t n);
/* The largest v of any rank. */
int cv_comm_max_int(cv_comm *comm, int v);
/* bytes of buf from rank root to every rank. */
void cv_comm_broadcast(cv_comm *comm, void *buf, size_t bytes, int root);
/* all (size x bytes) = every rank's `mine`, in rank order, on every rank. */
void cv_comm_gather(cv_comm *comm, const void *mine, size_t bytes, void *all);

/* The rows of a batch of `total` rows that rank `rank` of `ranks` takes: `rows` of them
 * (possibly 0) from `offset`, the remainder spread over the first ranks (total 10 over 3
 * ranks: 4, 3, 3). */
typedef struct {
    int rows, offset, total, ranks;
} cv_batch_part;

cv_batch_part cv_batch_part_of(int total, int rank, int size);

/* buf = how a batch of total rows splits over size ranks, for the logs: "64 rows a rank"
 * or "43 or 42 rows a rank". */
void cv_batch_split_text(char *buf, size_t n, int total, int size);

/* One status for the run from every rank's st (all ranks call it): CV_OK when all are
 * CV_OK, else the status of the lowest rank that failed, whose message stays in err
 * (prefixed with its rank unless it is rank 0); every other rank's err is emptied, so
 * that the run prints one line. */
cv_status cv_comm_agree(cv_comm *comm, cv_status st, cv_err *err);

#ifdef __cplusplus
}
#endif

#endif
