/* backend_cpu_objectives.c: the CPU backend's operations of the training objectives
 * beyond the ELBO (docs/design.md 1.6): the per-unit KL sums of free bits, the IWAE
 * objective's weights and latent gradient, the Gaussian likelihood with a learned sigma,
 * and the heads of cvae score's classifier and regression.
 *
 * Loops over rows (per-row work) or over columns (sums over rows, each in row order), as
 * in backend_cpu.c, so the bits do not depend on the thread count. Per-element math is
 * cv_math.h's, shared with the CUDA kernels (src/kernels/objectives.cu).
 */
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend_cpu.h"
#include "cv_math.h"

#define PAR_MIN 16384

/* The prior row of batch row r: its label's (tables), or its own (per row). */
static size_t prior_row(const cv_prior *prior, const int32_t *labels, int r) {
    return prior && !prior->per_row ? (size_t)labels[r] : (size_t)r;
}

static void cpu_kl_unit_sums(cv_backend *be, const float *enc, const cv_prior *prior,
                             const int32_t *labels, int rows, int latent, float *out) {
    (void)be;
    const float *pm = prior ? prior->m : NULL, *pr = prior ? prior->r : NULL;
#pragma omp parallel for if ((long)rows * latent > PAR_MIN) schedule(static)
    for (int j = 0; j < latent; j++) {
        float s = 0.0f;
        for (int r = 0; r < rows; r++) {
            const float *mu = enc + (size_t)r * 2 * latent;
            s += cv_kl_unit(mu[j], mu[latent + j], pm, pr,
                            prior_row(prior, labels, r) * latent + j);
        }
        out[j] = s;
    }
}

static void cpu_iwae_weights(cv_backend *be, const float *rec, const float *log_ratio,
                             float beta, int rows, int samples, float *w, float *loss) {
    (void)be;
#pragma omp parallel for if ((long)rows * samples > PAR_MIN) schedule(static)
    for (int b = 0; b < rows; b++)
        loss[b] = cv_iwae_weights(rec + b, log_ratio + b, beta, samples, (size_t)rows, w + b);
}

static void cpu_scale_rows(cv_backend *be, float *x, const float *w, int rows, int cols) {
    (void)be;
#pragma omp parallel for if ((long)rows * cols > PAR_MIN) schedule(static)
    for (int r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * cols;
        for (int j = 0; j < cols; j++) xr[j] *= w[r];
    }
}

/* One image's IWAE latent gradient: row b of denc, and of the prior's gradients (t: the
 * first element of its prior row; added into tables, written per row). */
static void iwae_row(const float *enc, const float *eps, const float *dz, const float *w,
                     int samples, float ks, const cv_prior *prior, cv_prior_grad *dprior,
                     size_t t, int b, int rows, int latent, float *denc) {
    const float *mu = enc + (size_t)b * 2 * latent, *s = mu + latent;
    float *dmu = denc + (size_t)b * 2 * latent, *ds = dmu + latent;
    for (int j = 0; j < latent; j++) {
        const float sj = cv_clamp_logvar(s[j]);
        const float m = prior ? prior->m[t + j] : 0.0f, rr = prior ? prior->r[t + j] : 0.0f;
        const float inv_var = prior ? expf(-cv_clamp_logvar(rr)) : 1.0f;
        float g_mu = 0.0f, g_eps = 0.0f, w_sum = 0.0f, g_m = 0.0f, g_r = 0.0f;
        for (int k = 0; k < samples; k++) {
            const size_t i = ((size_t)k * rows + b) * latent + j;
            const float z = cv_reparam_z(mu[j], sj, eps[i]);
            cv_iwae_latent_add(z, eps[i], w[(size_t)k * rows + b], dz[i], ks, m, inv_var, &g_mu,
                               &g_eps, &w_sum, &g_m, &g_r);
        }
        dmu[j] = g_mu;
        ds[j] = cv_iwae_grad_s(sj, g_eps, w_sum, ks) * cv_clamp_logvar_grad(s[j]);
        if (!prior) continue;
        g_r *= cv_clamp_logvar_grad(rr);
        if (dprior->per_row) {
            dprior->m[t + j] = g_m;
            dprior->r[t + j] = g_r;
        } else {
            dprior->m[t + j] += g_m;
            dprior->r[t + j] += g_r;
        }
    }
}

static void cpu_iwae_backward(cv_backend *be, const float *enc, const float *eps,
                              const float *dz, const float *w, int samples, float kl_scale,
                              const cv_prior *prior, const int32_t *labels,
                              cv_prior_grad *dprior, float *denc, int rows, int latent) {
    (void)be;
    /* the table gradients are sums over rows: then one thread takes the rows in order */
    const bool tables = prior && !prior->per_row;
#pragma omp parallel for if (!tables && (long)rows * latent * samples > PAR_MIN) schedule(static)
    for (int b = 0; b < rows; b++)
        iwae_row(enc, eps, dz, w, samples, kl_scale, prior, dprior,
                 prior_row(prior, labels, b) * latent, b, rows, latent, denc);
}

static void cpu_reconstruction_learned(cv_backend *be, const float *log_sigma,
                                       const float *logits, const float *x, float *rec,
                                       float *dlogits, float *dsigma, float grad_scale,
                                       int rows, int cols) {
    (void)be;
    const float raw = 2.0f * log_sigma[0], v = cv_clamp_logvar(raw);
    const float through_clamp = 2.0f * cv_clamp_logvar_grad(raw); /* d v / d log sigma */
#pragma omp parallel for if ((long)rows * cols > PAR_MIN) schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *l = logits + (size_t)r * cols, *xr = x + (size_t)r * cols;
        float *d = dlogits ? dlogits + (size_t)r * cols : NULL;
        float s = 0.0f, gv = 0.0f;
        for (int j = 0; j < cols; j++) {
            float gl, g;
            s += cv_gaussian_nll_logvar(l[j], xr[j], v, &gl, &g);
            gv += g;
            if (d) d[j] = grad_scale * gl;
        }
        rec[r] = s;
        if (d) dsigma[r] = grad_scale * gv * through_clamp;
    }
}

static void cpu_softmax_xent(cv_backend *be, const float *logits, const int32_t *labels,
                             float *loss, float *dlogits, float grad_scale, int rows,
                             int classes) {
    (void)be;
#pragma omp parallel for if ((long)rows * classes > PAR_MIN) schedule(static)
    for (int r = 0; r < rows; r++)
        loss[r] = cv_softmax_xent(logits + (size_t)r * classes, classes, labels[r], grad_scale,
                                  dlogits ? dlogits + (size_t)r * classes : NULL);
}

static void cpu_squared_error(cv_backend *be, const float *out, const float *target,
                              float *loss, float *dout, float grad_scale, int rows, int cols) {
    (void)be;
#pragma omp parallel for if ((long)rows * cols > PAR_MIN) schedule(static)
    for (int r = 0; r < rows; r++) {
        const size_t o = (size_t)r * cols;
        loss[r] = cv_squared_error(out + o, target + o, cols, grad_scale, dout ? dout + o : NULL);
    }
}

/* MemAvailable and MemTotal of /proc/meminfo; without it, the free and all physical pages. */
static void cpu_memory_info(cv_backend *be, size_t *free_bytes, size_t *total_bytes) {
    (void)be;
    const long page = sysconf(_SC_PAGESIZE);
    *free_bytes = (size_t)sysconf(_SC_AVPHYS_PAGES) * (size_t)page;
    *total_bytes = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)page;
    FILE *fp = fopen("/proc/meminfo", "r");
    if (!fp) return;
    char line[256];
    unsigned long long kib;
    while (fgets(line, sizeof line, fp)) {
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) *free_bytes = (size_t)kib << 10;
        if (sscanf(line, "MemTotal: %llu kB", &kib) == 1) *total_bytes = (size_t)kib << 10;
    }
    fclose(fp);
}

void cv_backend_cpu_objectives(cv_backend *be) {
    be->kl_unit_sums = cpu_kl_unit_sums;
    be->iwae_weights = cpu_iwae_weights;
    be->scale_rows = cpu_scale_rows;
    be->iwae_backward = cpu_iwae_backward;
    be->reconstruction_learned = cpu_reconstruction_learned;
    be->softmax_xent = cpu_softmax_xent;
    be->squared_error = cpu_squared_error;
    be->memory_info = cpu_memory_info;
}
