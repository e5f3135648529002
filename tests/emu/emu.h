// emu.h: just enough of CUDA's device side to run this project's kernels on the CPU: one
// fiber per CUDA thread, blocks one after another (in a shuffled order), all on one OS
// thread. Included (g++ -include) before each kernel source that transform.py rewrote.
// What it cannot see: memory ordering (it is sequentially consistent), races (a fiber only
// yields at a barrier or warp operation), FMA contraction and CUDA's own expf/logf (g++
// compiles the kernels). What it finds: indexing, missing or extra work, barriers and warp
// operations that not every thread reaches (a deadlock, reported), and host-side logic.
#pragma once
#include <cuda_runtime_api.h>
#include <vector_functions.h>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <tuple>
#include <vector>
#include <utility>
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

void emu_syncthreads();
void emu_warp_exchange(uint64_t v, uint64_t *all); // all 32 lanes' values
inline void __syncthreads() { emu_syncthreads(); }
inline void __threadfence() {}
inline void __syncwarp(unsigned m = 0xffffffffu) { uint64_t a[32]; if (m != 0xffffffffu) abort(); emu_warp_exchange(0, a); }
inline unsigned __ballot_sync(unsigned m, int p) {
    if (m != 0xffffffffu) { fprintf(stderr, "emu: partial mask\n"); abort(); }
    uint64_t a[32]; emu_warp_exchange(p != 0, a);
    unsigned r = 0; for (int i = 0; i < 32; i++) r |= (a[i] ? 1u : 0u) << i; return r;
}
template <class T> inline T __shfl_sync(unsigned m, T v, int src, int w = 32) {
    if (m != 0xffffffffu || w != 32) { fprintf(stderr, "emu: partial shfl\n"); abort(); }
    static_assert(sizeof(T) <= 8, "");
    uint64_t x = 0; memcpy(&x, &v, sizeof v); uint64_t a[32]; emu_warp_exchange(x, a);
    T r; memcpy(&r, &a[src & 31], sizeof r); return r;
}
template <class T> inline T __shfl_xor_sync(unsigned m, T v, int lm, int w = 32) {
    return __shfl_sync(m, v, (int)((threadIdx.x & 31) ^ (unsigned)lm), w);
}
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
template <class T> inline T __ldcg(const T *p) { return *p; }
template <class T, class U> inline T atomicAdd(T *p, U v) { T o = *p; *p = o + (T)v; return o; }
template <class T, class U> inline T atomicMax(T *p, U v) { T o = *p; if ((T)v > o) *p = (T)v; return o; }
template <class T, class U> inline T atomicMin(T *p, U v) { T o = *p; if ((T)v < o) *p = (T)v; return o; }
template <class T, class U> inline T atomicOr(T *p, U v) { T o = *p; *p = o | (T)v; return o; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
using std::isfinite;

// cuRAND's pieces reparam.cu uses, from cv_math.h's host versions
#include "cv_math.h"
inline uint4 curand_Philox4x32_10(uint4 c, uint2 k) {
    cv_u32x4 in = {{c.x, c.y, c.z, c.w}};
    cv_u32x4 o = cv_philox4x32_10(in, k.x, k.y);
    return make_uint4(o.v[0], o.v[1], o.v[2], o.v[3]);
}
inline float2 _curand_box_muller(unsigned a, unsigned b) { float2 r; cv_box_muller(a, b, &r.x, &r.y); return r; }

// launches
void emu_run(const std::function<void()> &thread_body, dim3 g, dim3 b, const char *name);
void emu_submit(std::function<void()> work); // now, or into the graph being captured
template <class... P, class... A>
void emu_launch(const char *name, void (*k)(P...), dim3 g, dim3 b, size_t smem, cudaStream_t s, A &&...a) {
    (void)smem; (void)s;
    std::tuple<std::decay_t<P>...> args(std::forward<A>(a)...); // converted as at a launch
    emu_submit([=]() { emu_run([&]() { std::apply(k, args); }, g, b, name); });
}
