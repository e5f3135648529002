/* cv_colsum.cuh: column sums over a batch's rows that use the whole GPU and give the same
 * bits on every run: the bias gradient (dbias += sum of dy over rows), the condition
 * table's gradient (dcond[labels[r]] += dy[r]), and the learned prior's table gradients.
 * bias_act.cu and reparam.cu build their kernels from these pieces.
 *
 * Split: a block owns a tile of columns and a slab of rows (cs_make_plan), so the grid is
 * tiles x slabs. Within the block the rows are summed in an order fixed by the shape and
 * the labels: per warp in row order, then the warps in warp order. With one slab the block
 * adds its sums straight into the gradient. With more, it writes them to scratch, takes a
 * ticket for its tile (an integer atomicAdd), and the tile's last block adds every slab's
 * sums in slab order (cs_finish). Which block comes last varies from run to run; the order
 * it adds in does not. No float is ever added atomically.
 *
 * Per-class sums (dcond, the prior tables), for any number of classes 1..256 (labels are
 * bytes, docs/design.md 1.1): the operation is not told how many classes there are, so
 * the per-class accumulators cover all 256 and only the classes present in a slab are
 * touched. Warp w owns the classes c with c % 8 == w: it scans its slab's labels 64 rows
 * at a time (two ballots), takes the rows it owns in row order, loads them 8 at a time
 * (8 independent loads in flight per lane), and adds each into acc[class][column] in
 * shared memory. A class has one owner, so its shared accumulators need no atomics and
 * their order is row order; every row has one owner, so each row is read and written
 * once. The cost: 32 KiB of shared memory per block (256 classes x 32 columns), and with
 * K = 10 warps 0 and 1 own two classes and the others one (work within 2x of even). A
 * slab's record keeps only its present classes (a 256-bit mask per block); the last block
 * adds only the classes present somewhere. Sorting rows by class first (a segmented sum)
 * would balance better for large K but needs a sort per call; the owner scheme is one pass
 * and reads each row once, which is what matters for the common K = 10.
 *
 * The slab count depends only on the shape (never on the GPU), so the bits do not change
 * between GPU models either: at least CS_MIN_SLAB_ROWS rows a slab, at most CS_MAX_SLABS
 * slabs, and fewer when the records would not fit the backend's fixed scratch (cv_scratch
 * in cv_cuda.h), which is allocated with the backend because the first training step is
 * recorded into a CUDA graph before any step runs eagerly (src/host/train/train.c run_step).
 */
#ifndef CV_COLSUM_CUH
#define CV_COLSUM_CUH

#include "cv_cuda.h"

#define CS_WARPS 8
#define CS_THREADS (32 * CS_WARPS)
#define CS_CLASSES 256     /* labels are in [0, 256) */
#define CS_MIN_SLAB_ROWS 64
#define CS_MAX_SLABS 32
#define CS_BATCH 8         /* rows a warp loads before it adds them (class sums) */
#define CS_UNROLL 4        /* rows a warp loads before it adds them (column sums) */
#define CS_FULL 0xffffffffu

/* A launch's split: `tiles` column tiles of tc columns, `slabs` slabs of rows_per_slab
 * rows (the last may be shorter; none is empty). */
typedef struct {
    int tiles, slabs, rows_per_slab;
} cs_plan;

/* rec_rows: the rows of one block's record in scratch, tc floats each: 1 for the bias,
 * plus 256 for each class table. */
static inline cs_plan cs_make_plan(int rows, int cols, int tc, int rec_rows) {
    cs_plan p;
    p.tiles = (cols + tc - 1) / tc;
    int slabs = (rows + CS_MIN_SLAB_ROWS - 1) / CS_MIN_SLAB_ROWS;
    if (slabs > CS_MAX_SLABS) slabs = CS_MAX_SLABS;
    if (p.tiles > CV_SCRATCH_TILES) slabs = 1;
    while (slabs > 1 && ((size_t)p.tiles * slabs * rec_rows * tc > CV_SCRATCH_FLOATS ||
                         (size_t)p.tiles * slabs > CV_SCRATCH_BLOCKS))
        slabs--;
    p.rows_per_slab = (rows + slabs - 1) / slabs;
    p.slabs = (rows + p.rows_per_slab - 1) / p.rows_per_slab;
    return p;
}

/* Where the rows of a record go, for columns tile * TC .. tile * TC + TC - 1: row 0 is
 * the bias (when bias is not NULL), then 256 rows per table, class c of table v at
 * table[v] + c * cols. */
typedef struct {
    float *bias;
    float *table[2];
    int ntables, cols;
} cs_dest;

__device__ __forceinline__ bool cs_has(const unsigned *mask, int c) {
    return (mask[c >> 5] >> (c & 31)) & 1u;
}

/* Called by every thread of a block once its record is in scratch: true in every thread
 * of the tile's last block. Each thread fences its own record writes before the barrier,
 * so the ticket is taken after all of them. */
__device__ __forceinline__ bool cs_last_of_tile(cv_scratch *sc, int tile, int slabs) {
    __shared__ int last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&sc->tickets[tile], 1u) == (unsigned)slabs - 1;
    __syncthreads();
    if (!last) return false;
    __threadfence();
    return true;
}

/* The tile's last block: adds every slab's record in slab order into the destinations
 * and leaves the tile's ticket at 0 for the next call. Records are read with __ldcg (from
 * L2, where the other blocks' writes are), never from this SM's L1. */
template <int TC>
__device__ void cs_finish(const cs_dest &d, cv_scratch *sc, int tile, int slabs) {
    __shared__ unsigned present[CS_MAX_SLABS][8], any[8];
    const int has_bias = d.bias != NULL;
    const int rec_rows = has_bias + CS_CLASSES * d.ntables;
    if (d.ntables) {
        for (int i = threadIdx.x; i < slabs * 8; i += blockDim.x)
            present[i / 8][i % 8] = __ldcg(&sc->present[(size_t)tile * slabs + i / 8][i % 8]);
        __syncthreads();
        if (threadIdx.x < 8) {
            unsigned a = 0;
            for (int s = 0; s < slabs; s++) a |= present[s][threadIdx.x];
            any[threadIdx.x] = a;
        }
        __syncthreads();
    }
    const size_t base = (size_t)tile * slabs * rec_rows * TC;
    for (int i = threadIdx.x; i < rec_rows * TC; i += blockDim.x) {
        const int q = i / TC, c = i % TC, col = tile * TC + c;
        if (col >= d.cols) continue;
        int cls = -1;
        float *dst;
        if (q < has_bias) {
            dst = d.bias + col;
        } else {
            cls = (q - has_bias) % CS_CLASSES;
            if (!cs_has(any, cls)) continue;
            dst = ((q - has_bias) < CS_CLASSES ? d.table[0] : d.table[1]) + (size_t)cls * d.cols +
                  col;
        }
        float s = -0.0f; /* -0 + x == x for every x */
        for (int sl = 0; sl < slabs; sl++)
            if (cls < 0 || cs_has(present[sl], cls))
                s += __ldcg(&sc->part[base + ((size_t)sl * rec_rows + q) * TC + c]);
        *dst += s;
    }
    if (threadIdx.x == 0) sc->tickets[tile] = 0;
}

template <int V>
__device__ __forceinline__ void cs_load(float (&v)[V], const float *p) {
    if constexpr (V == 4) {
        const float4 t = *reinterpret_cast<const float4 *>(p);
        v[0] = t.x;
        v[1] = t.y;
        v[2] = t.z;
        v[3] = t.w;
    } else {
        v[0] = *p;
    }
}

template <int V>
__device__ __forceinline__ void cs_store(float *p, const float (&v)[V]) {
    if constexpr (V == 4)
        *reinterpret_cast<float4 *>(p) = make_float4(v[0], v[1], v[2], v[3]);
    else
        *p = v[0];
}

/* Sums of dy over rows, per column, into dbias: warp w takes rows lo + w, lo + w + 8, ...
 * (CS_UNROLL at a time: all loads first, then the adds in row order); then the warps'
 * sums in warp order. V = 4: each lane owns 4 adjacent columns and moves 16 bytes at a
 * time (cols % 4 == 0 and 16-byte aligned dy and y); V = 1 otherwise. With relu, dy is
 * first masked by relu'(y) = (y > 0) and the masked value written back. */
template <int V>
static __global__ void __launch_bounds__(CS_THREADS)
    cs_bias_kernel(float *dy, const float *y, float *dbias, int rows, int cols, bool relu,
                   int rows_per_slab, int slabs, cv_scratch *sc) {
    constexpr int TC = 32 * V;
    __shared__ float wsum[CS_WARPS][TC];
    const int tile = blockIdx.x, slab = blockIdx.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int lo = slab * rows_per_slab, hi = min(rows, lo + rows_per_slab);
    const int col = tile * TC + lane * V;
    float acc[V];
#pragma unroll
    for (int v = 0; v < V; v++) acc[v] = 0.0f;
    if (col < cols) { /* with V = 4, cols % 4 == 0: the lane's 4 columns are all in range */
        for (int r0 = lo + warp; r0 < hi; r0 += CS_UNROLL * CS_WARPS) {
            float g[CS_UNROLL][V], a[CS_UNROLL][V];
#pragma unroll
            for (int k = 0; k < CS_UNROLL; k++) {
                const int r = r0 + k * CS_WARPS;
                if (r < hi) {
                    cs_load<V>(g[k], dy + (size_t)r * cols + col);
                    if (relu) cs_load<V>(a[k], y + (size_t)r * cols + col);
                }
            }
#pragma unroll
            for (int k = 0; k < CS_UNROLL; k++) {
                const int r = r0 + k * CS_WARPS;
                if (r >= hi) continue;
                if (relu) {
                    bool masked = false;
#pragma unroll
                    for (int v = 0; v < V; v++)
                        if (!(a[k][v] > 0.0f)) {
                            g[k][v] = 0.0f;
                            masked = true;
                        }
                    if (masked) cs_store<V>(dy + (size_t)r * cols + col, g[k]);
                }
#pragma unroll
                for (int v = 0; v < V; v++) acc[v] += g[k][v];
            }
        }
    }
#pragma unroll
    for (int v = 0; v < V; v++) wsum[warp][lane * V + v] = acc[v];
    __syncthreads();
    const int t = threadIdx.x, colt = tile * TC + t;
    float s = 0.0f;
    if (t < TC) {
        s = wsum[0][t];
        for (int w = 1; w < CS_WARPS; w++) s += wsum[w][t];
    }
    if (slabs == 1) {
        if (t < TC && colt < cols) dbias[colt] += s;
        return;
    }
    if (t < TC) sc->part[((size_t)tile * slabs + slab) * TC + t] = s;
    if (!cs_last_of_tile(sc, tile, slabs)) return;
    cs_dest d = {dbias, {NULL, NULL}, 0, cols};
    cs_finish<TC>(d, sc, tile, slabs);
}

/* Per-class sums by owner warps (see the top of this file). Op says what a row adds:
 *   Op::TC      columns per tile (<= 32; lanes from TC on only vote and shuffle)
 *   Op::NV      values per element, one class table each (d.ntables == NV)
 *   Op::BIAS    value 0 is also summed over all rows into d.bias
 *   Op::raw     what op.load(row, col, cls) reads; op.finish(row, col, raw, v) turns it
 *               into the NV values (and may write the element back, as the ReLU mask does)
 */
template <class Op>
static __global__ void __launch_bounds__(CS_THREADS)
    cs_class_kernel(Op op, const int32_t *labels, int rows, int cols, int rows_per_slab,
                    int slabs, cs_dest d, cv_scratch *sc) {
    constexpr int TC = Op::TC, NV = Op::NV;
    constexpr bool BIAS = Op::BIAS;
    __shared__ float acc[NV][CS_CLASSES][TC];
    __shared__ float wsum[CS_WARPS][TC];
    __shared__ unsigned present[8];
    const int tile = blockIdx.x, slab = blockIdx.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, t = threadIdx.x;
    const int lo = slab * rows_per_slab, hi = min(rows, lo + rows_per_slab);
    const int col = tile * TC + lane;
    const bool active = lane < TC && col < cols;

    /* the classes present in the slab, and their accumulators zeroed */
    if (t < 8) present[t] = 0;
    __syncthreads();
    for (int r = lo + t; r < hi; r += CS_THREADS) {
        const int c = labels[r] & (CS_CLASSES - 1);
        atomicOr(&present[c >> 5], 1u << (c & 31));
    }
    __syncthreads();
    float *flat = &acc[0][0][0];
    for (int i = t; i < NV * CS_CLASSES * TC; i += CS_THREADS)
        if (cs_has(present, i / TC % CS_CLASSES)) flat[i] = 0.0f;
    __syncthreads();

    float bsum = 0.0f;
    for (int base = lo; base < hi; base += 64) {
        const int r0 = base + lane, r1 = base + 32 + lane;
        const int c0 = r0 < hi ? labels[r0] & (CS_CLASSES - 1) : -1;
        const int c1 = r1 < hi ? labels[r1] & (CS_CLASSES - 1) : -1;
        unsigned long long own =
            (unsigned long long)__ballot_sync(CS_FULL, c0 >= 0 && c0 % CS_WARPS == warp) |
            (unsigned long long)__ballot_sync(CS_FULL, c1 >= 0 && c1 % CS_WARPS == warp) << 32;
        while (own) { /* own is the same in every lane */
            int rr[CS_BATCH] = {0}, cc[CS_BATCH] = {0}, n = 0;
#pragma unroll
            for (int k = 0; k < CS_BATCH; k++)
                if (own) {
                    const int b = __ffsll((long long)own) - 1;
                    own &= own - 1;
                    rr[k] = base + b;
                    cc[k] = __shfl_sync(CS_FULL, b < 32 ? c0 : c1, b & 31);
                    n = k + 1;
                }
            typename Op::raw raw[CS_BATCH];
#pragma unroll
            for (int k = 0; k < CS_BATCH; k++)
                if (k < n && active) raw[k] = op.load(rr[k], col, cc[k]);
#pragma unroll
            for (int k = 0; k < CS_BATCH; k++)
                if (k < n && active) {
                    float v[NV];
                    op.finish(rr[k], col, raw[k], v);
#pragma unroll
                    for (int j = 0; j < NV; j++) acc[j][cc[k]][lane] += v[j];
                    if (BIAS) bsum += v[0];
                }
        }
    }
    if (BIAS && lane < TC) wsum[warp][lane] = bsum;
    __syncthreads();

    float s = 0.0f; /* the slab's bias sum of column tile * TC + t */
    if (BIAS && t < TC) {
        s = wsum[0][t];
        for (int w = 1; w < CS_WARPS; w++) s += wsum[w][t];
    }
    if (slabs == 1) {
        if (BIAS && t < TC && tile * TC + t < cols) d.bias[tile * TC + t] += s;
        for (int i = t; i < NV * CS_CLASSES * TC; i += CS_THREADS) {
            const int c = i % TC, cls = i / TC % CS_CLASSES, colc = tile * TC + c;
            if (colc < cols && cs_has(present, cls))
                (i < TC * CS_CLASSES ? d.table[0] : d.table[1])[(size_t)cls * cols + colc] += flat[i];
        }
        return;
    }
    const int rec_rows = (BIAS ? 1 : 0) + NV * CS_CLASSES;
    float *rec = sc->part + ((size_t)tile * slabs + slab) * rec_rows * TC;
    if (BIAS && t < TC) rec[t] = s;
    for (int i = t; i < NV * CS_CLASSES * TC; i += CS_THREADS)
        if (cs_has(present, i / TC % CS_CLASSES)) rec[(BIAS ? TC : 0) + i] = flat[i];
    if (t < 8) sc->present[(size_t)tile * slabs + slab][t] = present[t];
    if (!cs_last_of_tile(sc, tile, slabs)) return;
    cs_finish<TC>(d, sc, tile, slabs);
}

#endif
