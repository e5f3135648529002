/* bias_act.cu: bias + condition column + ReLU, forward and backward.
 *
 * forward:  y (rows, cols) = act(y + bias + cond[labels[r]]), one thread per element.
 * backward: dy *= relu'(y) (written back: the GEMMs read dy next), dbias += the column
 *           sums of dy, and dcond[labels[r]] += dy[r]. The sums are cv_colsum.cuh's: a
 *           grid of column tiles x row slabs, fixed-order sums within a block, and the
 *           slabs added in slab order by each tile's last block, so the bits are the same
 *           on every run, without float atomics.
 *           - no condition table (every layer but the first of each network): lanes own
 *             columns (4 adjacent ones with 16-byte loads when cols % 4 == 0 and dy, y are
 *             16-byte aligned, one otherwise), warps take interleaved rows, CS_UNROLL rows'
 *             loads in flight before their adds.
 *           - with a condition table: tiles of 32 columns, and per-class sums in shared
 *             memory by owner warps (warp w owns the classes c % 8 == w and takes their
 *             rows in order), correct for any 1..256 classes, since the operation is not
 *             told how many there are; the bias sum rides along in the same pass. Why
 *             owner warps and not a sort by class: see cv_colsum.cuh.
 *           The CPU backend sums each column in row order; the two differ by rounding.
 */
#include "cv_colsum.cuh"
#include "cv_cuda.h"
#include "cv_math.h"

static __global__ void bias_act_forward_kernel(float *y, const float *bias, const float *cond,
                                               const int32_t *labels, int rows, int cols,
                                               bool relu) {
    size_t n = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int r = (int)(i / cols), j = (int)(i % cols);
        float v = y[i] + bias[j];
        if (cond) v += cond[(size_t)labels[r] * cols + j];
        y[i] = relu ? cv_relu(v) : v;
    }
}

/* A row of the backward with a condition table: dy masked by relu'(y). */
struct bias_act_op {
    float *dy;
    const float *y;
    int cols;
    bool relu;
    static constexpr int TC = 32, NV = 1;
    static constexpr bool BIAS = true;
    struct raw {
        float g, a;
    };
    __device__ raw load(int r, int col, int cls) const {
        (void)cls;
        const size_t i = (size_t)r * cols + col;
        return raw{dy[i], relu ? y[i] : 1.0f};
    }
    __device__ void finish(int r, int col, const raw &x, float *v) const {
        float g = x.g;
        if (relu && !(x.a > 0.0f)) {
            g = 0.0f;
            dy[(size_t)r * cols + col] = 0.0f;
        }
        v[0] = g;
    }
};

static void launch_bias_act_forward(float *y, const float *bias, const float *cond,
                                    const int32_t *labels, int rows, int cols, bool relu,
                                    cudaStream_t stream) {
    const int threads = 256;
    bias_act_forward_kernel<<<CV_BLOCKS((size_t)rows * cols, threads), threads, 0, stream>>>(
        y, bias, cond, labels, rows, cols, relu);
    CV_CUDA_CHECK(cudaGetLastError());
}

static void launch_bias_act_backward(float *dy, const float *y, float *dbias, float *dcond,
                                     const int32_t *labels, int rows, int cols, bool relu,
                                     cv_scratch *sc, cudaStream_t stream) {
    if (rows <= 0 || cols <= 0) return;
    if (dcond) {
        const cs_plan p = cs_make_plan(rows, cols, bias_act_op::TC, 1 + CS_CLASSES);
        const bias_act_op op = {dy, y, cols, relu};
        const cs_dest d = {dbias, {dcond, NULL}, 1, cols};
        cs_class_kernel<bias_act_op><<<dim3(p.tiles, p.slabs), CS_THREADS, 0, stream>>>(
            op, labels, rows, cols, p.rows_per_slab, p.slabs, d, sc);
    } else if (cols % 4 == 0 && ((uintptr_t)dy | (uintptr_t)(relu ? y : dy)) % 16 == 0) {
        const cs_plan p = cs_make_plan(rows, cols, 128, 1);
        cs_bias_kernel<4><<<dim3(p.tiles, p.slabs), CS_THREADS, 0, stream>>>(
            dy, y, dbias, rows, cols, relu, p.rows_per_slab, p.slabs, sc);
    } else {
        const cs_plan p = cs_make_plan(rows, cols, 32, 1);
        cs_bias_kernel<1><<<dim3(p.tiles, p.slabs), CS_THREADS, 0, stream>>>(
            dy, y, dbias, rows, cols, relu, p.rows_per_slab, p.slabs, sc);
    }
    CV_CUDA_CHECK(cudaGetLastError());
}

extern "C" void cv_bias_act_forward_cuda(float *y, const float *bias, const float *cond,
                                         const int32_t *labels, int rows, int cols, bool relu,
                                         cudaStream_t stream) {
    launch_bias_act_forward(y, bias, cond, labels, rows, cols, relu, stream);
}

extern "C" void cv_bias_act_backward_cuda(float *dy, const float *y, float *dbias, float *dcond,
                                          const int32_t *labels, int rows, int cols, bool relu,
                                          cv_scratch *scratch, cudaStream_t stream) {
    launch_bias_act_backward(dy, y, dbias, dcond, labels, rows, cols, relu, scratch, stream);
}
