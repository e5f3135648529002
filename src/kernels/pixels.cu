/* pixels.cu: generated images from decoder logits, on the device.
 *
 * pixels (rows, cols) = round(255 sigmoid(l)) for the mean image, or 0/255 Bernoulli
 * draws with the uniform of element j of stream first_stream + r, via cv_math.h, so the
 * CPU and the GPU write the same bytes up to float rounding of the sigmoid.
 */
#include "cv_cuda.h"
#include "cv_math.h"

static __global__ void pixels_kernel(bool gaussian, float sigma, const float *logits, int rows,
                                     int cols, bool mean, uint64_t seed, uint64_t first_stream,
                                     uint8_t *pixels) {
    size_t n = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / cols, j = i % cols;
        pixels[i] = mean ? cv_pixel_mean(logits[i])
                    : gaussian ? cv_pixel_gaussian(logits[i], sigma,
                                                   cv_philox_normal(seed, first_stream + r, j))
                               : cv_pixel_sample(logits[i],
                                                 cv_philox_uniform(seed, first_stream + r, j));
    }
}

extern "C" void cv_pixels_from_logits_cuda(cv_likelihood likelihood, float sigma,
                                           const float *logits, int rows, int cols, bool mean,
                                           uint64_t seed, uint64_t first_stream,
                                           uint8_t *pixels, cudaStream_t stream) {
    const int threads = 256;
    pixels_kernel<<<CV_BLOCKS((size_t)rows * cols, threads), threads, 0, stream>>>(
        likelihood == CV_LIKELIHOOD_GAUSSIAN, sigma, logits, rows, cols, mean, seed,
        first_stream, pixels);
    CV_CUDA_CHECK(cudaGetLastError());
}
