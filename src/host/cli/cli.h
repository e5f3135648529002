/* cli.h: helpers shared by the cvae commands (internal to the program).
 *
 * Exit codes: 0 success, 1 an error in data, files or training, 2 a bad command line or
 * an unusable device. Every error is one line on stderr.
 */
#ifndef CVAE_CLI_H
#define CVAE_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include "cvae/checkpoint.h"
#include "cvae/comm.h"
#include "cvae/data.h"
#include "cvae/generate.h"
#include "cvae/status.h"

#define CV_EXIT_FAIL 1
#define CV_EXIT_USAGE 2

/* Prints "cvae CMD: message" and returns CV_EXIT_USAGE. */
int cv_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "cvae CMD: err->msg" and returns the exit code for status; an empty message is
 * another rank's to print (cv_comm_agree), and this prints nothing. */
int cv_report(const char *cmd, cv_status status, const cv_err *err);

/* Parsers: false (after printing the error line) on anything but a clean value in range. */
bool cv_parse_int(const char *cmd, const char *flag, const char *s, long min, long max,
                  int *out);
bool cv_parse_u64(const char *cmd, const char *flag, const char *s, uint64_t *out);
bool cv_parse_positive_float(const char *cmd, const char *flag, const char *s, float *out);
bool cv_parse_int_list(const char *cmd, const char *flag, const char *s, long min, long max,
                       int max_count, int *out, int *count);
/* The index in names[count] of s; otherwise "FLAG must be a, b or c, got 's'". */
bool cv_parse_choice(const char *cmd, const char *flag, const char *s,
                     const char *const *names, int count, int *out);
bool cv_parse_device(const char *cmd, const char *s);

/* The next flag of argv, read with getopt_long (set optind = 1 and opterr = 0 first):
 * its code ('h' for -h or --help), or -1 after the last flag (a word that is no flag ends
 * them). A long flag must be spelled whole: getopt_long's abbreviations ("--epoch" for
 * --epochs) are refused. An unknown or abbreviated flag, or a missing value, prints one
 * line and returns 0 with *exit_code set. */
int cv_next_flag(const char *cmd, int argc, char **argv, const struct option *opts,
                 int *exit_code);

/* The data file flags of train, eval and data (--train-images FILE ... --test-conditions
 * FILE, and those of image files: --train-csv ... --cache), with codes of their own so
 * that a command's option table takes them whole. */
enum {
    CV_OPT_TRAIN_IMAGES = 1000,
    CV_OPT_TRAIN_LABELS,
    CV_OPT_TRAIN_CONDITIONS,
    CV_OPT_TEST_IMAGES,
    CV_OPT_TEST_LABELS,
    CV_OPT_TEST_CONDITIONS,
    CV_OPT_TRAIN_CSV,
    CV_OPT_TEST_CSV,
    CV_OPT_CONDITION_COLUMNS,
    CV_OPT_IMAGE_SIZE,
    CV_OPT_CROP,
    CV_OPT_CHANNELS,
    CV_OPT_CACHE,
};
#define CV_DATA_FILE_OPTIONS                                                  \
    {"train-images", required_argument, 0, CV_OPT_TRAIN_IMAGES},              \
        {"train-labels", required_argument, 0, CV_OPT_TRAIN_LABELS},          \
        {"train-conditions", required_argument, 0, CV_OPT_TRAIN_CONDITIONS},  \
        {"test-images", required_argument, 0, CV_OPT_TEST_IMAGES},            \
        {"test-labels", required_argument, 0, CV_OPT_TEST_LABELS},            \
        {"test-conditions", required_argument, 0, CV_OPT_TEST_CONDITIONS},    \
        {"train-csv", required_argument, 0, CV_OPT_TRAIN_CSV},                \
        {"test-csv", required_argument, 0, CV_OPT_TEST_CSV},                  \
        {"condition-columns", required_argument, 0, CV_OPT_CONDITION_COLUMNS}, \
        {"image-size", required_argument, 0, CV_OPT_IMAGE_SIZE},              \
        {"crop", required_argument, 0, CV_OPT_CROP},                          \
        {"channels", required_argument, 0, CV_OPT_CHANNELS},                  \
        {"cache", required_argument, 0, CV_OPT_CACHE}
/* Sets what a data file flag's code says in f: true when code is one (*ok false after
 * printing the line for a bad value), false for any other code. */
bool cv_data_file_flag(const char *cmd, int code, const char *arg, cv_data_files *f, bool *ok);
/* The checks of the data file flags that need all of them. Returns 0, or the exit code
 * after the error line. */
int cv_check_data_file_flags(const char *cmd, const cv_data_files *f);
/* read set for data fed to the model ck holds (cli_model_data.c): image files keep to its
 * classes or condition columns, with a progress line on a terminal. */
void cv_data_files_for_model(cv_data_files *read, const cv_checkpoint *ck);
/* Data whose classes have names, for a model of numbered classes, or condition columns
 * the model has at other places (--condition-columns swapping them): refused. data names
 * the data in the message, model the checkpoint. */
cv_status cv_data_names_fit(const cv_data *d, const cv_checkpoint *ck, const char *data,
                            const char *model, cv_err *err);
/* help, then the help of the data file flags and of image files, on stdout; returns 0. */
int cv_print_help_with_data_flags(const char *help);

/* The commands; comm is the run's ranks (rank 0 of 1 without an MPI launcher). train, eval
 * and bench run data-parallel under one; generate and info refuse more than one rank. */
int cv_cmd_train(int argc, char **argv, cv_comm *comm);
int cv_cmd_eval(int argc, char **argv, cv_comm *comm);
int cv_cmd_info(int argc, char **argv);
int cv_cmd_generate(int argc, char **argv);
int cv_cmd_score(int argc, char **argv);
int cv_cmd_data(int argc, char **argv);
int cv_cmd_bench(int argc, char **argv, cv_comm *comm);
int cv_cmd_encode(int argc, char **argv);
int cv_cmd_decode(int argc, char **argv);
int cv_cmd_export(int argc, char **argv);
int cv_cmd_report(int argc, char **argv);

/* The rows of --labels FILE or --conditions FILE (whichever is not NULL) into c
 * (malloc'd: the caller frees them); neither: no rows. */
cv_status cv_read_condition_rows(const char *labels_file, const char *conditions_file,
                                 cv_gen_conditions *c, cv_err *err);

/* Generates o (its conditions set) from the loaded checkpoint ck: the request and its
 * output checked, the device opened, the model built, and the result line printed (cmd
 * names the command in messages). Returns the exit code; the caller frees ck and the
 * conditions. */
int cv_generate_from(const char *cmd, const char *model, const char *device,
                     cv_checkpoint *ck, cv_generate_options *o);

/* A picture of the latent space (cvae generate --format traversal or interpolate). */
typedef struct {
    bool interpolate;    /* else a traversal */
    int steps;           /* columns (interpolate: of the path, between the two images) */
    int units;           /* traversal: rows per condition; 0: every unit, at most 64 */
    int images[2];       /* interpolate: the two test images */
    const char *data;    /* interpolate: the data folder, or */
    cv_data_files files; /*   the test files */
} cv_picture_request;

/* Draws the picture q asks for (a traversal under o->cond) into the PNG file o->out, from
 * the loaded checkpoint ck. Returns the exit code. */
int cv_generate_picture(const char *device, cv_checkpoint *ck, cv_generate_options *o,
                        const cv_picture_request *q);

/* Prints the version, the CUDA codes built for and whether the CUDA module loads, the
 * OpenMP threads and the OpenBLAS core; coretype: the OpenBLAS kernels that the computing
 * commands ask for (OPENBLAS_CORETYPE), or NULL when they take OpenBLAS's choice. */
int cv_cmd_version(const char *coretype);

#endif
