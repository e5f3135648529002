/* batch.cu: the batch from the device-resident data set, the loss sums, and the step
 * state.
 *
 * gather:     x (rows, dim) = the values of image perm[st->start + r] (pixel / 255 or the
 *             float; a Bernoulli draw of it with --binarize), one thread per element, and
 *             its label or condition row (rows, K), one thread per element.
 * accumulate: the loss sums += (sum of rec, sum of kl, rows, and for a training step its
 *             gradient norm and 1), one block, double partial sums reduced in a fixed
 *             tree order (deterministic); nothing for a skipped step.
 * check:      the squared gradient norm, and flags a step whose loss holds a NaN or Inf
 *             or whose gradient an element Adam cannot take (NaN, Inf, or |g| >= 2^63,
 *             cv_grad_usable), in one kernel: the first bad index by an integer atomicMax
 *             (found whatever the thread order), the norm by per-block fixed trees that
 *             the last block to finish adds in a fixed tree; that block then updates the
 *             step state (deterministic, no float atomics).
 * advance:    st->step += 1, st->start += rows, st->skip = 0, after the step's work.
 */
#include "cv_cuda.h"
#include "cv_math.h"
#include "cvae/rng.h"

#define SUM_THREADS 256
#define CHECK_THREADS 256

static __global__ void gather_batch_kernel(cv_device_split s, const cv_step *st, int first_row,
                                           int rows, bool binarize, uint64_t seed, float *x,
                                           int32_t *labels_out, float *cond_out) {
    const int start = st->start + first_row, dim = s.dim, K = s.cond_width;
    const uint64_t element0 = (uint64_t)first_row * dim; /* the rank's rows' draws */
    const uint64_t stream = CV_STREAM_BINARIZE(st->step);
    const size_t first = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t n = (size_t)rows * dim;
    for (size_t i = first; i < n; i += stride) {
        int r = (int)(i / dim), j = (int)(i % dim);
        size_t src = (size_t)s.perm[start + r];
        float v = cv_pixel_value(s.pixels, s.fpixels, src * dim + j);
        if (binarize) v = cv_bernoulli(cv_philox_uniform(seed, stream, element0 + i), v);
        x[i] = v;
        if (j == 0 && s.labels) labels_out[r] = s.labels[src];
    }
    if (!s.conditions) return;
    for (size_t i = first; i < (size_t)rows * K; i += stride) {
        size_t r = i / K;
        cond_out[i] = s.conditions[(size_t)s.perm[start + r] * K + i % K];
    }
}

static __global__ void accumulate_loss_kernel(cv_loss_sums *sums, const float *rec, const float *kl,
                                              int rows, const cv_step *st) {
    __shared__ double pa[SUM_THREADS], pb[SUM_THREADS];
    if (st && st->skip) return; /* uniform across the block */
    double a = 0.0, b = 0.0;
    for (int i = threadIdx.x; i < rows; i += SUM_THREADS) {
        a += rec[i];
        b += kl[i];
    }
    pa[threadIdx.x] = a;
    pb[threadIdx.x] = b;
    __syncthreads();
    for (int half = SUM_THREADS / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) {
            pa[threadIdx.x] += pa[threadIdx.x + half];
            pb[threadIdx.x] += pb[threadIdx.x + half];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        sums->rec += pa[0];
        sums->kl += pb[0];
        sums->rows += rows;
        if (st) {
            sums->grad_norm += sqrt(st->grad_sq);
            sums->steps += 1.0;
        }
    }
}

/* One kernel: every block scans its grid-stride share, atomicMax'es the complement of
 * the code of each bad element it sees (0 the loss, 1 + i gradient element i), so
 * scratch->bad ends as ~(the smallest code) whatever the thread order, and writes its sum
 * of squares (a fixed tree in shared memory) to scratch->partial[block]. The block that
 * takes the last ticket then adds the partials in a fixed tree over block order (each
 * thread its blocks t, t + 256, ..., then a tree of the threads), so the norm is the same
 * bits on every run, flags the step, and leaves the ticket and `bad` at 0 for the next
 * call. */
static __global__ void __launch_bounds__(CHECK_THREADS)
    check_finite_kernel(const float *rec, const float *kl, int rows, const float *grads,
                        size_t n, cv_step *st, cv_scratch *scratch) {
    __shared__ double sq[CHECK_THREADS];
    __shared__ int last;
    const int t = threadIdx.x;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + t; i < (size_t)rows; i += stride)
        if (!isfinite(rec[i]) || !isfinite(kl[i])) atomicMax(&scratch->bad, ~0ull);
    double s = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + t; i < n; i += stride) {
        float g = grads[i];
        if (!cv_grad_usable(g)) atomicMax(&scratch->bad, ~(1ull + i));
        s += (double)g * g;
    }
    sq[t] = s;
    __syncthreads();
    for (int half = CHECK_THREADS / 2; half > 0; half >>= 1) {
        if (t < half) sq[t] += sq[t + half];
        __syncthreads();
    }
    if (t == 0) scratch->partial[blockIdx.x] = sq[0];
    __threadfence(); /* this thread's atomics and partial before the ticket */
    __syncthreads();
    if (t == 0) last = atomicAdd(&scratch->check_ticket, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    s = 0.0;
    for (unsigned b = t; b < gridDim.x; b += CHECK_THREADS) s += __ldcg(&scratch->partial[b]);
    sq[t] = s;
    __syncthreads();
    for (int half = CHECK_THREADS / 2; half > 0; half >>= 1) {
        if (t < half) sq[t] += sq[t + half];
        __syncthreads();
    }
    if (t != 0) return;
    st->grad_sq = sq[0];
    const unsigned long long bad = atomicAdd(&scratch->bad, 0ull);
    if (st->halted) {
        st->skip = 1;
    } else if (bad != 0ull) {
        st->skip = 1;
        st->nonfinite_steps++;
        if (st->first_bad_step < 0) {
            st->first_bad_step = st->step;
            st->first_bad_index = (int64_t)~bad - 1;
        }
        if (st->nonfinite_steps > st->allowed_nonfinite) st->halted = 1;
    }
    scratch->bad = 0ull; /* ready for the next call */
    scratch->check_ticket = 0u;
}

/* *flag = 0 when every rec and kl is finite, else NaN; one block, a fixed tree. */
static __global__ void loss_flag_kernel(const float *rec, const float *kl, int rows,
                                        float *flag) {
    __shared__ int bad[SUM_THREADS];
    int b = 0;
    for (int i = threadIdx.x; i < rows; i += SUM_THREADS)
        b |= !isfinite(rec[i]) || !isfinite(kl[i]);
    bad[threadIdx.x] = b;
    __syncthreads();
    for (int half = SUM_THREADS / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) bad[threadIdx.x] |= bad[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) *flag = bad[0] ? nanf("") : 0.0f;
}

static __global__ void advance_step_kernel(cv_step *st, int rows) {
    st->step += 1;
    st->start += rows;
    st->skip = 0;
}

extern "C" void cv_gather_batch_cuda(const cv_device_split *src, const cv_step *st, int first,
                                     int rows, bool binarize, uint64_t seed, float *x,
                                     int32_t *labels_out, float *cond_out, cudaStream_t stream) {
    const int threads = 256;
    size_t items = (size_t)rows * src->dim;
    if (src->conditions && (size_t)rows * src->cond_width > items)
        items = (size_t)rows * src->cond_width;
    gather_batch_kernel<<<CV_BLOCKS(items, threads), threads, 0, stream>>>(
        *src, st, first, rows, binarize, seed, x, labels_out, cond_out);
    CV_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cv_accumulate_loss_cuda(cv_loss_sums *sums, const float *rec, const float *kl,
                                        int rows, const cv_step *st, cudaStream_t stream) {
    accumulate_loss_kernel<<<1, SUM_THREADS, 0, stream>>>(sums, rec, kl, rows, st);
    CV_CUDA_CHECK(cudaGetLastError());
}

static void launch_check_finite(const float *rec, const float *kl, int rows,
                                const float *grads, size_t n, cv_step *st, cv_scratch *scratch,
                                cudaStream_t stream) {
    size_t items = n > (size_t)rows ? n : (size_t)rows;
    size_t blocks = (items + CHECK_THREADS - 1) / CHECK_THREADS;
    if (blocks > CV_CHECK_MAX_BLOCKS) blocks = CV_CHECK_MAX_BLOCKS;
    if (blocks < 1) blocks = 1; /* the last block flags the step even with nothing to scan */
    check_finite_kernel<<<(unsigned)blocks, CHECK_THREADS, 0, stream>>>(rec, kl, rows, grads, n,
                                                                        st, scratch);
    CV_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cv_check_finite_cuda(const float *rec, const float *kl, int rows,
                                     const float *grads, size_t n, cv_step *st,
                                     cv_scratch *scratch, cudaStream_t stream) {
    launch_check_finite(rec, kl, rows, grads, n, st, scratch, stream);
}

extern "C" void cv_loss_flag_cuda(const float *rec, const float *kl, int rows, float *flag,
                                  cudaStream_t stream) {
    loss_flag_kernel<<<1, SUM_THREADS, 0, stream>>>(rec, kl, rows, flag);
    CV_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cv_advance_step_cuda(cv_step *st, int rows, cudaStream_t stream) {
    advance_step_kernel<<<1, 1, 0, stream>>>(st, rows);
    CV_CUDA_CHECK(cudaGetLastError());
}
