/* helpers.h: what the tests share: fresh random inputs (the seed is logged so a failure
 * can be replayed with CVAE_TEST_SEED), temporary folders, small synthetic IDX data sets,
 * and running the cvae program. */
#ifndef CVAE_TEST_HELPERS_H
#define CVAE_TEST_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cvae/comm.h"
#include "cvae/npy.h"

typedef struct {
    uint64_t s;
} test_rng;

/* A new seed per call (time, pid, counter), or CVAE_TEST_SEED; logged with the test. */
test_rng test_rng_new(const char *what);
double test_uniform(test_rng *r, double lo, double hi);
double test_normal(test_rng *r);
void test_fill(test_rng *r, float *x, size_t n, double lo, double hi);

/* mkdtemp under TMPDIR; test_rmtree removes it whole. */
char *test_tmpdir(void);
void test_rmtree(const char *dir);

/* DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]: images of `classes` classes,
 * each class a bright band of rows plus noise, so a model can learn them. n_test 0
 * writes no test files. */
void test_write_dataset(const char *dir, int n_train, int n_test, int h, int w, int classes,
                        bool gz, uint64_t seed);

/* Trains a small model (CPU, one hidden layer) on data into out/model.ckpt. */
void test_train_small(const char *data, const char *out, int hidden, int latent, int epochs,
                      uint64_t seed);

/* Runs the cvae program (CVAE_BIN) with args (NULL-terminated); stdout and stderr land in
 * out/err (malloc'd, NUL-terminated). Returns the exit status, or -signal. */
int test_run_cvae(char **out, char **err, const char *const *args);

/* test_run_cvae under an address-space limit of as_bytes (RLIMIT_AS), with OpenBLAS and
 * OpenMP on one thread, so that what they reserve at start-up does not grow with the
 * machine's cores, without MALLOC_PERTURB_ (allocations stay untouched), no core dump,
 * and killed by SIGALRM after 60 s: OpenBLAS retries a buffer it cannot allocate forever. */
int test_run_cvae_limited(char **out, char **err, const char *const *args, size_t as_bytes);

/* A whole batch of `rows` rows for cv_train_step, as one process takes it. */
#define TEST_WHOLE_BATCH(rows) (&(cv_batch_part){(rows), 0, (rows), 1})

/* Asserts |got - ref| <= atol + rtol |ref| for element i of `what`. */
void assert_close(const char *what, int i, double got, double ref, double atol, double rtol);

/* fork(), with the child killed (SIGKILL) when the test's process ends: a test that fails
 * an assertion, or is killed at its timeout, leaves no cvae it started running (a trainer
 * of --epochs 1000000 would run on forever). */
pid_t test_fork(void);

/* The pid of a process that has ended (forked, exited and reaped). */
pid_t test_dead_pid(void);

/* How many lines s holds. */
int test_count_lines(const char *s);

/* folder/name, in one of 8 static buffers used in turn (so it lasts 7 more calls). */
char *test_path_in(const char *folder, const char *name);

/* cv_npy_write, asserting that it succeeds. */
void test_write_npy(const char *path, cv_npy_dtype t, int ndims, const int64_t *dims,
                    const void *values);

/* A whole file's bytes (malloc'd, with a NUL after them), or NULL; *size gets the length. */
uint8_t *test_read_file(const char *path, size_t *size);
void test_write_file(const char *path, const void *data, size_t size);

#endif
