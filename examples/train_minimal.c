/* train_minimal.c: train a CVAE through the C API and save it.
 *
 *   train_minimal DATA_DIR RUNDIR
 *
 * DATA_DIR holds IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte and the
 * t10k-* pair for the test -ELBO); RUNDIR/model.ckpt is written. Exits 0 on success,
 * or 1 with one line on stderr. README.md beside this file says how to build it.
 */
#include <stdio.h>

#include <cvae/cvae.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: train_minimal DATA_DIR RUNDIR\n");
        return 1;
    }
    cv_train_options opt = cv_train_defaults(); /* the defaults of `cvae train` */
    opt.data_dir = argv[1];
    opt.out_dir = argv[2];
    opt.epochs = 3;
    opt.device = "cpu";

    cv_train_result res;
    cv_err err;
    if (cv_train_run(&opt, &res, &err) != CV_OK) {
        fprintf(stderr, "train_minimal: %s\n", err.msg);
        return 1;
    }
    if (res.has_test)
        printf("final test -ELBO %.4f nats after %d epochs\n", res.test.neg_elbo,
               res.epochs_done);
    else
        printf("final train loss %.4f nats (no t10k test files)\n", res.train_loss);
    return 0;
}
