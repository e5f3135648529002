/* backend_cuda.c: the CUDA backend's host side: device selection, memory, GEMMs (through
 * cuBLASLt, in gemm_cuda.c), the kernel launchers of src/kernels, and CUDA graphs for
 * recorded steps.
 *
 * Everything runs on one non-blocking stream. GEMMs are row-major through column-major
 * cuBLASLt by swapping the operands: C^T = op(B)^T op(A)^T. The precision (fp32 unless
 * asked, see docs/design.md 2.7) is fixed when the backend is created; tests run at fp32
 * unless they ask for another.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "allreduce_cuda.h"
#include "cv_cuda.h"
#include "cvae/backend.h"
#include "gemm_cuda.h"

typedef struct {
    int device;
    cudaStream_t stream;
    cv_gemm *gemm;       /* cuBLASLt: handle, workspace, operand scratch, plans */
    cv_scratch *scratch; /* the kernels' flags, tickets and partial sums (cv_cuda.h) */
    cv_cuda_allreduce *allreduce; /* the sum over the ranks (NULL: one process) */
} cuda_ctx;

static cuda_ctx *ctx_of(cv_backend *be) { return (cuda_ctx *)be->impl; }

/* Releases whatever exists, also after a setup that failed part way. */
static void cuda_destroy(cv_backend *be) {
    cuda_ctx *c = ctx_of(be);
    if (c) {
        if (c->stream) cudaStreamSynchronize(c->stream);
        if (c->allreduce) c->allreduce->destroy(c->allreduce);
        cv_gemm_destroy(c->gemm);
        if (c->scratch) cudaFree(c->scratch);
        if (c->stream) cudaStreamDestroy(c->stream);
        free(c);
    }
    free(be);
}

static cv_status cuda_alloc(cv_backend *be, void **ptr, size_t bytes, const char *what,
                            cv_err *err) {
    (void)be;
    return cv_cuda_malloc(ptr, bytes, what, err);
}

static void cuda_release(cv_backend *be, void *ptr) {
    (void)be;
    CV_CUDA_CHECK(cudaFree(ptr));
}

static void cuda_upload(cv_backend *be, void *dst, const void *src, size_t bytes) {
    cuda_ctx *c = ctx_of(be);
    CV_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
    CV_CUDA_CHECK(cudaStreamSynchronize(c->stream));
}

static void cuda_download(cv_backend *be, void *dst, const void *src, size_t bytes) {
    cuda_ctx *c = ctx_of(be);
    CV_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    CV_CUDA_CHECK(cudaStreamSynchronize(c->stream));
}

static void cuda_zero(cv_backend *be, void *dst, size_t bytes) {
    CV_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, ctx_of(be)->stream));
}

static void cuda_gemm(cv_backend *be, bool ta, bool tb, int m, int n, int k, float alpha,
                      const float *a, int lda, const float *b, int ldb, float beta, float *c,
                      int ldc) {
    cv_gemm_run(ctx_of(be)->gemm, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

static cv_status cuda_gemm_reserve(cv_backend *be, size_t elems, cv_err *err) {
    return cv_gemm_reserve(ctx_of(be)->gemm, elems, err);
}

static void cuda_bias_act_forward(cv_backend *be, float *y, const float *bias,
                                  const float *cond, const int32_t *labels, int rows, int cols,
                                  bool relu) {
    cv_bias_act_forward_cuda(y, bias, cond, labels, rows, cols, relu, ctx_of(be)->stream);
}

static void cuda_bias_act_backward(cv_backend *be, float *dy, const float *y, float *dbias,
                                   float *dcond, const int32_t *labels, int rows, int cols,
                                   bool relu) {
    cv_bias_act_backward_cuda(dy, y, dbias, dcond, labels, rows, cols, relu,
                              ctx_of(be)->scratch, ctx_of(be)->stream);
}

static void cuda_reparam_forward(cv_backend *be, const float *enc, float *eps, bool draw_eps,
                                 uint64_t seed, uint64_t stream_base, const cv_step *st,
                                 int first_row, const cv_prior *prior, const int32_t *labels,
                                 float *z, float *kl, float *log_ratio, int rows, int latent) {
    cv_reparam_forward_cuda(enc, eps, draw_eps, seed, stream_base, st, first_row, prior, labels,
                            z, kl, log_ratio, rows, latent, ctx_of(be)->stream);
}

static void cuda_reparam_backward(cv_backend *be, const float *enc, const float *eps,
                                  const float *dz, float kl_scale, const float *unit_kl,
                                  float kl_floor, const cv_prior *prior, const int32_t *labels,
                                  cv_prior_grad *dprior, float *denc, int rows, int latent) {
    cv_reparam_backward_cuda(enc, eps, dz, kl_scale, unit_kl, kl_floor, prior, labels, dprior,
                             denc, rows, latent, ctx_of(be)->scratch, ctx_of(be)->stream);
}

static void cuda_prior_transform(cv_backend *be, const cv_prior *prior, const int32_t *labels,
                                 float *z, int rows, int latent) {
    cv_prior_transform_cuda(prior, labels, z, rows, latent, ctx_of(be)->stream);
}

static void cuda_reconstruction(cv_backend *be, cv_likelihood likelihood, float sigma,
                                const float *logits, const float *x, float *rec,
                                float *dlogits, float grad_scale, int rows, int cols) {
    cv_reconstruction_cuda(likelihood, sigma, logits, x, rec, dlogits, grad_scale, rows, cols,
                           ctx_of(be)->stream);
}

static void cuda_normal(cv_backend *be, float *out, int rows, int cols, uint64_t seed,
                        uint64_t first_stream) {
    cv_normal_cuda(out, rows, cols, seed, first_stream, ctx_of(be)->stream);
}

static void cuda_pixels_from_logits(cv_backend *be, cv_likelihood likelihood, float sigma,
                                    const float *logits, int rows, int cols, bool mean,
                                    uint64_t seed, uint64_t first_stream, uint8_t *pixels) {
    cv_pixels_from_logits_cuda(likelihood, sigma, logits, rows, cols, mean, seed, first_stream,
                               pixels, ctx_of(be)->stream);
}

static void cuda_adam(cv_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                      const cv_adam_config *cfg, const cv_step *st) {
    cv_adam_cuda(p, g, m, v, n, cfg, st, ctx_of(be)->stream);
}

static void cuda_accumulate_loss(cv_backend *be, cv_loss_sums *sums, const float *rec,
                                 const float *kl, int rows, const cv_step *st) {
    cv_accumulate_loss_cuda(sums, rec, kl, rows, st, ctx_of(be)->stream);
}

static void cuda_check_finite(cv_backend *be, const float *rec, const float *kl, int rows,
                              const float *grads, size_t n, cv_step *st) {
    cv_check_finite_cuda(rec, kl, rows, grads, n, st, ctx_of(be)->scratch, ctx_of(be)->stream);
}

static void cuda_gather_batch(cv_backend *be, const cv_device_split *src, const cv_step *st,
                              int first, int rows, bool binarize, uint64_t seed, float *x,
                              int32_t *labels_out, float *cond_out) {
    cv_gather_batch_cuda(src, st, first, rows, binarize, seed, x, labels_out, cond_out,
                         ctx_of(be)->stream);
}

static void cuda_allreduce(cv_backend *be, float *buf, size_t n) {
    cv_cuda_allreduce *a = ctx_of(be)->allreduce;
    if (a) a->run(a, buf, n);
}

static void cuda_loss_flag(cv_backend *be, const float *rec, const float *kl, int rows,
                           float *flag) {
    cv_loss_flag_cuda(rec, kl, rows, flag, ctx_of(be)->stream);
}

static void cuda_advance_step(cv_backend *be, cv_step *st, int rows) {
    cv_advance_step_cuda(st, rows, ctx_of(be)->stream);
}

static bool cuda_capture_begin(cv_backend *be) {
    const cuda_ctx *c = ctx_of(be);
    if (c->allreduce && !c->allreduce->recordable) return false;
    CV_CUDA_CHECK(cudaStreamBeginCapture(ctx_of(be)->stream, cudaStreamCaptureModeThreadLocal));
    cv_gemm_set_recording(ctx_of(be)->gemm, true);
    return true;
}

static void *cuda_capture_end(cv_backend *be) {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    cv_gemm_set_recording(ctx_of(be)->gemm, false);
    CV_CUDA_CHECK(cudaStreamEndCapture(ctx_of(be)->stream, &graph));
    CV_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    CV_CUDA_CHECK(cudaGraphDestroy(graph));
    return exec;
}

static void cuda_replay(cv_backend *be, void *recording) {
    CV_CUDA_CHECK(cudaGraphLaunch((cudaGraphExec_t)recording, ctx_of(be)->stream));
}

static void cuda_recording_free(cv_backend *be, void *recording) {
    (void)be;
    CV_CUDA_CHECK(cudaGraphExecDestroy((cudaGraphExec_t)recording));
}

static void cuda_copy_within(cv_backend *be, void *dst, const void *src, size_t bytes) {
    CV_CUDA_CHECK(
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx_of(be)->stream));
}

/* Timing events on our stream (cudaEvent_t is a pointer, so it travels as void *). */
static cv_status cuda_event_create(cv_backend *be, void **event, cv_err *err) {
    (void)be;
    cudaEvent_t e = NULL;
    cudaError_t rc = cudaEventCreate(&e);
    if (rc == cudaSuccess) {
        *event = e;
        return CV_OK;
    }
    cudaGetLastError(); /* clear it, so no later check reports it again */
    *event = NULL;
    return cv_fail(err, CV_ERR_DEVICE, "creating a CUDA timing event failed: %s",
                   cudaGetErrorString(rc));
}

static void cuda_event_record(cv_backend *be, void *event) {
    CV_CUDA_CHECK(cudaEventRecord((cudaEvent_t)event, ctx_of(be)->stream));
}

static double cuda_event_elapsed_ms(cv_backend *be, void *start, void *end) {
    (void)be;
    float ms = 0.0f;
    CV_CUDA_CHECK(cudaEventSynchronize((cudaEvent_t)end));
    CV_CUDA_CHECK(cudaEventElapsedTime(&ms, (cudaEvent_t)start, (cudaEvent_t)end));
    return ms;
}

static void cuda_event_destroy(cv_backend *be, void *event) {
    (void)be;
    CV_CUDA_CHECK(cudaEventDestroy((cudaEvent_t)event));
}

static void cuda_logsumexp_accumulate(cv_backend *be, double *lse_max, double *lse_sum,
                                      const float *rec, const float *log_ratio, int rows,
                                      bool reset) {
    cv_logsumexp_accumulate_cuda(lse_max, lse_sum, rec, log_ratio, rows, reset,
                                 ctx_of(be)->stream);
}

static void cuda_logsumexp_merge(cv_backend *be, double *dst_max, double *dst_sum,
                                 const double *src_max, const double *src_sum,
                                 double log_count, double log_prior, int rows, bool reset) {
    cv_logsumexp_merge_cuda(dst_max, dst_sum, src_max, src_sum, log_count, log_prior, rows,
                            reset, ctx_of(be)->stream);
}

static void cuda_kl_unit_sums(cv_backend *be, const float *enc, const cv_prior *prior,
                              const int32_t *labels, int rows, int latent, float *out) {
    cv_kl_unit_sums_cuda(enc, prior, labels, rows, latent, out, ctx_of(be)->stream);
}

static void cuda_iwae_weights(cv_backend *be, const float *rec, const float *log_ratio,
                              float beta, int rows, int samples, float *w, float *loss) {
    cv_iwae_weights_cuda(rec, log_ratio, beta, rows, samples, w, loss, ctx_of(be)->stream);
}

static void cuda_scale_rows(cv_backend *be, float *x, const float *w, int rows, int cols) {
    cv_scale_rows_cuda(x, w, rows, cols, ctx_of(be)->stream);
}

static void cuda_iwae_backward(cv_backend *be, const float *enc, const float *eps,
                               const float *dz, const float *w, int samples, float kl_scale,
                               const cv_prior *prior, const int32_t *labels,
                               cv_prior_grad *dprior, float *denc, int rows, int latent) {
    cv_iwae_backward_cuda(enc, eps, dz, w, samples, kl_scale, prior, labels, dprior, denc, rows,
                          latent, ctx_of(be)->scratch, ctx_of(be)->stream);
}

static void cuda_reconstruction_learned(cv_backend *be, const float *log_sigma,
                                        const float *logits, const float *x, float *rec,
                                        float *dlogits, float *dsigma, float grad_scale,
                                        int rows, int cols) {
    cv_reconstruction_learned_cuda(log_sigma, logits, x, rec, dlogits, dsigma, grad_scale, rows,
                                   cols, ctx_of(be)->stream);
}

static void cuda_softmax_xent(cv_backend *be, const float *logits, const int32_t *labels,
                              float *loss, float *dlogits, float grad_scale, int rows,
                              int classes) {
    cv_softmax_xent_cuda(logits, labels, loss, dlogits, grad_scale, rows, classes,
                         ctx_of(be)->stream);
}

static void cuda_squared_error(cv_backend *be, const float *out, const float *target,
                               float *loss, float *dout, float grad_scale, int rows, int cols) {
    cv_squared_error_cuda(out, target, loss, dout, grad_scale, rows, cols, ctx_of(be)->stream);
}

/* What cudaMalloc may still take on the backend's device, and its whole memory. */
static void cuda_memory_info(cv_backend *be, size_t *free_bytes, size_t *total_bytes) {
    (void)be;
    CV_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

bool cv_backend_cuda_available(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    return n > 0;
}

/* CV_OK, or one CV_ERR_DEVICE line naming the device, the setup step that failed and why. */
static cv_status cuda_step(cudaError_t e, int device, const char *step, cv_err *err) {
    if (e == cudaSuccess) return CV_OK;
    cudaGetLastError(); /* clear it, so no later check reports it again */
    return cv_fail(err, CV_ERR_DEVICE, "CUDA device %d is unusable: %s failed: %s", device,
                   step, cudaGetErrorString(e));
}

/* Brings up device c->device into c, step by step; what a failed step leaves created stays in c
 * for cuda_destroy. A handle is stored only once created: a failed create may leave its
 * output undefined. */
static cv_status cuda_setup(cv_backend *be, cuda_ctx *c, cv_precision precision,
                            struct cudaDeviceProp *prop, cv_err *err) {
    cudaStream_t stream = NULL;
    cv_gemm *gemm = NULL;
    cv_status st = cuda_step(cudaSetDevice(c->device), c->device, "selecting it", err);
    if (!st)
        st = cuda_step(cudaGetDeviceProperties(prop, c->device), c->device,
                       "reading its properties", err);
    if (!st)
        st = cuda_step(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), c->device,
                       "creating a stream", err);
    if (!st) c->stream = stream;
    /* cuBLASLt and its workspace, allocated once: no allocation during a graph capture */
    if (!st) st = cv_gemm_create(precision, c->stream, &gemm, err);
    if (!st) c->gemm = gemm;
    if (!st)
        st = cuda_alloc(be, (void **)&c->scratch, sizeof(cv_scratch), "the kernels' scratch",
                        err);
    /* the kernels expect their flags and tickets at 0 between calls; the memset goes on
     * our stream, which does not wait for the legacy default stream */
    if (!st)
        st = cuda_step(cudaMemsetAsync(c->scratch, 0, CV_SCRATCH_ZEROED, c->stream), c->device,
                       "clearing the kernels' scratch", err);
    if (!st)
        st = cuda_step(cudaStreamSynchronize(c->stream), c->device, "synchronizing the stream",
                       err);
    return st;
}

/* The device of this process: the one the options name, else the rank's local rank
 * modulo the devices (one GPU a rank on a machine of many). */
static int pick_device(const cv_backend_options *opt, int count) {
    if (opt && opt->device_chosen) return opt->device;
    return cv_comm_local_rank(opt ? opt->comm : NULL) % count;
}

/* Why cudaGetDeviceCount found no device, in a user's words: without the NVIDIA kernel
 * driver the runtime reports an "insufficient" driver, which reads as "upgrade it". */
static const char *why_no_device(cudaError_t e) {
    if (e == cudaSuccess || e == cudaErrorNoDevice) return "no NVIDIA GPU found";
    if (e == cudaErrorInsufficientDriver && access("/proc/driver/nvidia/version", F_OK) != 0)
        return "no NVIDIA driver is loaded on this machine";
    return cudaGetErrorString(e);
}

/* The backend's device brought up into c: CV_OK, or one line saying what failed. */
static cv_status bring_up(cv_backend *be, cuda_ctx *c, const cv_backend_options *opt,
                          struct cudaDeviceProp *prop, cv_err *err) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError();
        return cv_fail(err, CV_ERR_DEVICE, "no usable CUDA device (%s)", why_no_device(e));
    }
    c->device = pick_device(opt, n);
    if (c->device >= n)
        return cv_fail(err, CV_ERR_DEVICE, "--device cuda:%d: there %s only %d CUDA device%s "
                       "(0..%d)", c->device, n == 1 ? "is" : "are", n, n == 1 ? "" : "s", n - 1);
    const cv_precision precision = cv_backend_options_precision(opt);
    if ((unsigned)precision >= CV_PRECISION_COUNT)
        return cv_fail(err, CV_ERR_USAGE, "unknown precision %d", (int)precision);
    return cuda_setup(be, c, precision, prop, err);
}

/* Whether two ranks of the run use one GPU (the same PCI address on the same machine):
 * every rank gathers every rank's and so answers alike. */
static bool ranks_share_a_gpu(cv_comm *comm, int device) {
    typedef struct {
        char host[64], bus[32];
    } gpu_key;
    gpu_key mine = {{0}, {0}};
    gethostname(mine.host, sizeof mine.host - 1);
    if (cudaDeviceGetPCIBusId(mine.bus, sizeof mine.bus, device) != cudaSuccess) {
        cudaGetLastError();
        snprintf(mine.bus, sizeof mine.bus, "device %d", device);
    }
    const int n = cv_comm_size(comm);
    gpu_key *all = malloc((size_t)n * sizeof *all);
    CV_ASSERT(all); /* a few kilobytes */
    cv_comm_gather(comm, &mine, sizeof mine, all);
    bool shared = false;
    for (int i = 0; i < n && !shared; i++)
        for (int j = i + 1; j < n && !shared; j++)
            shared = memcmp(&all[i], &all[j], sizeof mine) == 0;
    free(all);
    return shared;
}

/* The sum over the ranks: NCCL when the build has it and no two ranks share a GPU (NCCL
 * refuses that), else through host memory. */
static cv_status create_allreduce(cuda_ctx *c, cv_comm *comm, cv_err *err) {
    const bool shared = ranks_share_a_gpu(comm, c->device);
#if CV_BUILD_NCCL
    if (!shared) return cv_nccl_allreduce_create(comm, c->stream, &c->allreduce, err);
    const char *why = "ranks share a GPU, which NCCL does not allow";
#else
    const char *why = shared ? "ranks share a GPU; no NCCL in this build"
                             : "no NCCL in this build";
#endif
    return cv_host_allreduce_create(comm, c->stream, why, &c->allreduce, err);
}

/* In a data-parallel run every rank agrees on its setup (so that a rank whose GPU failed
 * stops them all, here rather than in a collective later), then joins the sum. */
static cv_status join_ranks(cuda_ctx *c, cv_comm *comm, cv_status st, cv_err *err) {
    if (cv_comm_size(comm) == 1) return st;
    st = cv_comm_agree(comm, st, err);
    if (!st) st = cv_comm_agree(comm, create_allreduce(c, comm, err), err);
    return st;
}

cv_status cv_backend_cuda_create(const cv_backend_options *opt, cv_backend **out, cv_err *err) {
    *out = NULL;
    cv_backend *be = calloc(1, sizeof *be);
    cuda_ctx *c = calloc(1, sizeof *c);
    cv_status st = be && c ? CV_OK : cv_fail(err, CV_ERR_NOMEM, "out of host memory");
    if (be) be->impl = c;
    struct cudaDeviceProp prop;
    if (!st) st = bring_up(be, c, opt, &prop, err);
    st = join_ranks(c, opt ? opt->comm : NULL, st, err);
    if (st) {
        if (be && c) cuda_destroy(be);
        else {
            free(be);
            free(c);
        }
        return st;
    }
    const cv_precision precision = cv_backend_options_precision(opt);

    be->name = "cuda";
    be->precision = precision;
    snprintf(be->description, sizeof be->description,
             "%.60s (device %d: %d SMs, %.1f GiB, compute %d.%d)%s%s", prop.name, c->device,
             prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0, prop.major,
             prop.minor, c->allreduce ? "; gradients summed through " : "",
             c->allreduce ? c->allreduce->transport : "");
    be->destroy = cuda_destroy;
    be->alloc = cuda_alloc;
    be->release = cuda_release;
    be->upload = cuda_upload;
    be->download = cuda_download;
    be->zero = cuda_zero;
    be->gemm = cuda_gemm;
    be->gemm_reserve = cuda_gemm_reserve;
    be->bias_act_forward = cuda_bias_act_forward;
    be->bias_act_backward = cuda_bias_act_backward;
    be->reparam_forward = cuda_reparam_forward;
    be->reparam_backward = cuda_reparam_backward;
    be->reconstruction = cuda_reconstruction;
    be->prior_transform = cuda_prior_transform;
    be->normal = cuda_normal;
    be->pixels_from_logits = cuda_pixels_from_logits;
    be->adam = cuda_adam;
    be->accumulate_loss = cuda_accumulate_loss;
    be->check_finite = cuda_check_finite;
    be->gather_batch = cuda_gather_batch;
    be->advance_step = cuda_advance_step;
    be->allreduce = cuda_allreduce;
    be->loss_flag = cuda_loss_flag;
    be->capture_begin = cuda_capture_begin;
    be->capture_end = cuda_capture_end;
    be->replay = cuda_replay;
    be->recording_free = cuda_recording_free;
    be->copy = cuda_copy_within;
    be->event_create = cuda_event_create;
    be->event_record = cuda_event_record;
    be->event_elapsed_ms = cuda_event_elapsed_ms;
    be->event_destroy = cuda_event_destroy;
    be->logsumexp_accumulate = cuda_logsumexp_accumulate;
    be->logsumexp_merge = cuda_logsumexp_merge;
    be->kl_unit_sums = cuda_kl_unit_sums;
    be->iwae_weights = cuda_iwae_weights;
    be->scale_rows = cuda_scale_rows;
    be->iwae_backward = cuda_iwae_backward;
    be->reconstruction_learned = cuda_reconstruction_learned;
    be->softmax_xent = cuda_softmax_xent;
    be->squared_error = cuda_squared_error;
    be->memory_info = cuda_memory_info;
    *out = be;
    return CV_OK;
}
