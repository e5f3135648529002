/* precision.cu: the GEMM operand conversions of the bf16 and tf32x3 precisions
 * (docs/design.md 2.7), each a copy of a column-major float matrix into packed scratch
 * (leading dimension = its rows) through the cv_math.h function the CPU emulation uses,
 * so both devices feed the products the same bits.
 *
 * One launch converts both operands of a GEMM: blockIdx.z picks the matrix, blockIdx.y
 * walks its columns and the threads of blockIdx.x its rows, so reads and writes are
 * contiguous and no index needs a division.
 */
#include "cv_cuda.h"
#include "cv_math.h"

namespace {

struct pack_job {
    const float *src;
    int rows, cols, ld;
    void *hi;  /* uint16_t bf16 bits, or the float hi parts */
    float *lo; /* tf32x3: the lo parts */
};

template <bool Split>
__global__ void pack_kernel(pack_job j0, pack_job j1) {
    const pack_job j = blockIdx.z ? j1 : j0;
    for (int c = blockIdx.y; c < j.cols; c += gridDim.y) {
        const float *s = j.src + (size_t)c * j.ld;
        const size_t o = (size_t)c * j.rows;
        for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < j.rows;
             r += gridDim.x * blockDim.x) {
            if (Split) {
                float h, l;
                cv_split_tf32(s[r], &h, &l);
                static_cast<float *>(j.hi)[o + r] = h;
                j.lo[o + r] = l;
            } else {
                static_cast<uint16_t *>(j.hi)[o + r] = cv_bf16_bits(s[r]);
            }
        }
    }
}

template <bool Split>
void launch(const pack_job &a, const pack_job &b, cudaStream_t stream) {
    const int threads = 256;
    const int rows = a.rows > b.rows ? a.rows : b.rows;
    const int cols = a.cols > b.cols ? a.cols : b.cols;
    int bx = (rows + threads - 1) / threads;
    if (bx > 1024) bx = 1024; /* the row loop strides over the rest */
    const dim3 grid((unsigned)bx, (unsigned)(cols < 65535 ? cols : 65535), 2);
    pack_kernel<Split><<<grid, threads, 0, stream>>>(a, b);
    CV_CUDA_CHECK(cudaGetLastError());
}

} // namespace

extern "C" void cv_round_bf16_cuda(const float *a, int a_rows, int a_cols, int lda,
                                   uint16_t *a_out, const float *b, int b_rows, int b_cols,
                                   int ldb, uint16_t *b_out, cudaStream_t stream) {
    launch<false>(pack_job{a, a_rows, a_cols, lda, a_out, nullptr},
                  pack_job{b, b_rows, b_cols, ldb, b_out, nullptr}, stream);
}

extern "C" void cv_split_tf32_cuda(const float *a, int a_rows, int a_cols, int lda,
                                   float *a_hi, float *a_lo, const float *b, int b_rows,
                                   int b_cols, int ldb, float *b_hi, float *b_lo,
                                   cudaStream_t stream) {
    launch<true>(pack_job{a, a_rows, a_cols, lda, a_hi, a_lo},
                 pack_job{b, b_rows, b_cols, ldb, b_hi, b_lo}, stream);
}
