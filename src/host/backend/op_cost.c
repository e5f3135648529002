/* op_cost.c: what each backend operation costs, counted from its shapes.
 *
 * Bytes are those an ideal kernel moves: every element it must read, once, plus every
 * element it writes; an output it adds into (+=) is read and written. Floats and int32
 * are 4 bytes, pixels and uint8 labels 1. A vector every row shares (a bias, and its
 * gradient) counts once; a row gathered by label (a condition row, a prior row) counts
 * once per row that uses it. The per-step records (cv_step, the loss sums) are a few
 * bytes and left out. FLOPs are counted for GEMMs only, 2 m n k: the other operations
 * are bound by memory, and their rate is given in bytes.
 */
#include "cvae/bench.h"

#define F 4.0 /* bytes of a float or an int32 */
#define D 8.0 /* bytes of a double */

static cv_op_cost bytes_only(double bytes) { return (cv_op_cost){bytes, 0.0}; }

const char *cv_op_family_name(cv_op_family family) {
    static const char *const names[CV_FAMILY_COUNT] = {
        "gemm",   "bias_act_forward", "bias_act_backward", "reparam_forward",
        "reparam_backward", "reconstruction", "adam", "check_accumulate", "gather", "allreduce",
        "other"};
    CV_ASSERT(family >= 0 && family < CV_FAMILY_COUNT);
    return names[family];
}

bool cv_op_family_is_flops(cv_op_family family) { return family == CV_FAMILY_GEMM; }

cv_op_cost cv_cost_gemm(int m, int n, int k, bool reads_c) {
    double a = (double)m * k, b = (double)k * n, c = (double)m * n;
    return (cv_op_cost){F * (a + b + (reads_c ? 2.0 : 1.0) * c), 2.0 * m * (double)n * k};
}

/* y read and written, the bias once, a condition row and a label per row */
cv_op_cost cv_cost_bias_act_forward(int rows, int cols, bool cond) {
    double y = (double)rows * cols;
    return bytes_only(F * (2.0 * y + cols + (cond ? y + rows : 0.0)));
}

/* dy read (and written back through the ReLU, which reads y); dbias read and written;
 * dcond's row of each label read and written */
cv_op_cost cv_cost_bias_act_backward(int rows, int cols, bool relu, bool dcond) {
    double y = (double)rows * cols;
    return bytes_only(F * ((relu ? 3.0 : 1.0) * y + 2.0 * cols + (dcond ? 2.0 * y + rows : 0.0)));
}

/* enc (2L) read; eps written when drawn, read otherwise; z written; kl and log_ratio per
 * row; with a prior, its m and r rows and the label */
cv_op_cost cv_cost_reparam_forward(int rows, int latent, bool draw_eps, bool prior,
                                   bool log_ratio) {
    (void)draw_eps; /* eps moves once either way */
    double z = (double)rows * latent;
    return bytes_only(F * (4.0 * z + rows + (log_ratio ? rows : 0.0) +
                           (prior ? 2.0 * z + rows : 0.0)));
}

/* enc (2L), eps and dz read, denc (2L) written; with a prior, its m and r rows read and
 * their gradients read and written, and the label */
cv_op_cost cv_cost_reparam_backward(int rows, int latent, bool prior) {
    double z = (double)rows * latent;
    return bytes_only(F * (6.0 * z + (prior ? 6.0 * z + rows : 0.0)));
}

/* z read and written, the prior's m and r rows and the label; nothing without a prior */
cv_op_cost cv_cost_prior_transform(int rows, int latent, bool prior) {
    double z = (double)rows * latent;
    return bytes_only(prior ? F * (4.0 * z + rows) : 0.0);
}

/* logits and x read, rec per row, the logit gradient written */
cv_op_cost cv_cost_reconstruction(int rows, int cols, bool grad) {
    double l = (double)rows * cols;
    return bytes_only(F * ((grad ? 3.0 : 2.0) * l + rows));
}

cv_op_cost cv_cost_normal(int rows, int cols) { return bytes_only(F * rows * (double)cols); }

/* logits read, pixels written */
cv_op_cost cv_cost_pixels_from_logits(int rows, int cols) {
    return bytes_only((F + 1.0) * rows * (double)cols);
}

/* rec, kl and the gradients read */
cv_op_cost cv_cost_check_finite(int rows, size_t n) {
    return bytes_only(F * (2.0 * rows + (double)n));
}

cv_op_cost cv_cost_accumulate_loss(int rows) { return bytes_only(F * 2.0 * rows); }

/* params, grads, m and v read; params, m and v written (as if the step is not skipped) */
cv_op_cost cv_cost_adam(size_t n) { return bytes_only(F * 7.0 * (double)n); }

/* the pixels (bytes or floats) and the order read, x written; and the uint8 label read
 * and the int32 label written, or the condition row (cond_width floats) read and written */
cv_op_cost cv_cost_gather_batch(int rows, int dim, bool float_pixels, int cond_width) {
    const double px = (double)rows * dim, in = float_pixels ? F * px : px;
    const double cond = cond_width ? 2.0 * F * rows * cond_width : (double)rows + F * rows;
    return bytes_only(in + F * rows + F * px + cond);
}

cv_op_cost cv_cost_allreduce(size_t n) { return bytes_only(F * 2.0 * (double)n); }

cv_op_cost cv_cost_zero(size_t bytes) { return bytes_only((double)bytes); }

cv_op_cost cv_cost_copy(size_t bytes) { return bytes_only(2.0 * (double)bytes); }

/* rec and log_ratio read; the (max, sum) state per row read and written, or only written
 * when reset */
cv_op_cost cv_cost_logsumexp_accumulate(int rows, bool reset) {
    return bytes_only(rows * (2.0 * F + (reset ? 2.0 : 4.0) * D));
}

/* the source's (max, sum) read; the destination's read and written, or only written when
 * reset */
cv_op_cost cv_cost_logsumexp_merge(int rows, bool reset) {
    return bytes_only(rows * (2.0 * D + (reset ? 2.0 : 4.0) * D));
}
