/* ref_model.h: the CVAE of docs/design.md section 1 in double precision, row by row, with
 * the condition as an explicit vector (a label's one-hot, or the row's condition vector),
 * for the gradient tests (test_model_grad.c, test_objective_grad.c) to take central finite
 * differences of. p is the parameter buffer in the layout's order, in double. */
#ifndef CVAE_TEST_REF_MODEL_H
#define CVAE_TEST_REF_MODEL_H

#include <stdint.h>

#include "cvae/model.h"

#define REF_MAX_K 16
#define REF_MAX_WIDTH 1024
#define REF_MAX_LATENT 64

typedef struct {
    const cv_layout *lo;
    int rows;
    const float *x, *eps;  /* x (rows, D); eps (rows, L), or draw by draw for the IWAE */
    const int32_t *labels; /* labels: each row's class */
    const float *cond;     /* condition vectors: (rows, K) */
    double beta;
} ref_ctx;

double ref_clamp(double s);
/* Row r's encoder output [mu | s] (2L), s before the clamp. */
void ref_encode(const ref_ctx *c, const double *p, int r, double *enc);
/* Row r's prior mean and log-variance (L each; r before the clamp): M c and R c, or 0. */
void ref_prior(const ref_ctx *c, const double *p, int r, double *m, double *rr);
/* One latent dimension's KL against its prior (s and rr before the clamp). */
double ref_kl(double mu, double s, double m, double rr);
/* log N(z; m, exp(clamp(rr))) of one dimension. */
double ref_log_normal(double z, double m, double rr);
/* Row r's reconstruction term, its image decoded from z (L). */
double ref_rec(const ref_ctx *c, const double *p, int r, const double *z);

#endif
