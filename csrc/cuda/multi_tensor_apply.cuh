/*
 * fusedoptim CUDA backend: apex-style multi-tensor apply, generic over a
 * per-element functor.
 *
 * A launch gets a chunk table in its kernel arguments: the pointer lists of up
 * to kMax tensors (param, grad, state..., and optionally a step counter each),
 * their sizes, and chunk_start (see chunk_plan.h). Each block finds its
 * (tensor, chunk) by binary search, thread 0 computes the step's scalars in
 * double from device memory (step counter, tensor lr) into shared memory, and
 * the block runs the functor over its chunk, ILP elements per thread, with
 * vector loads/stores when every pointer of the chunk is aligned.
 *
 * A functor Op provides:
 *   kLists        tensor lists: 0 param, 1 grad, 2.. state
 *   kStep         whether it keeps per-tensor float32 step counters
 *   kWrite        bit k set: list k is written back (the grad list is written
 *                 back only when grad_scale unscales it, as torch does)
 *   Scalars<M>    trivially constructible struct of per-step scalars
 *   prepare<M>(const fo_cuda_args&, double lr, double step, Scalars<M>&)
 *   elem<M>(M (&r)[kLists], const Scalars<M>&)   in-place on registers
 * with M the math type (float for fp32/fp16/bf16 storage, double for fp64).
 *
 * No torch header here: this compiles with nvcc alone.
 */
#pragma once
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdio.h>

#include "chunk_plan.h"
#include "fo_cuda.h"

namespace fo_cuda {

/* Kernel-argument budget: CUDA >= 12.1 accepts up to 32764 bytes of kernel
 * parameters on Volta and newer (we build sm_80 / sm_90), older toolkits 4 KB. */
#if defined(CUDART_VERSION) && CUDART_VERSION >= 12010
constexpr int kParamBytes = 32764;
#else
constexpr int kParamBytes = 4096;
#endif
constexpr int kArgsReserve = 512;      /* fo_cuda_args and alignment slack   */
constexpr int kBlockSize = 512;
constexpr int kILP = 4;
constexpr int64_t kChunk = 65536;      /* elements per block                 */

template <int L, bool S>
struct TableCap {
    static constexpr int kPerTensor = L * 8 + (S ? 8 : 0) + 8 + 4;
    static constexpr int value = (kParamBytes - kArgsReserve - 16) / kPerTensor;
};

template <int L, bool S>
struct Table {
    static constexpr int kMax = TableCap<L, S>::value;
    void *ptr[L][kMax];
    float *step[S ? kMax : 1];
    int64_t numel[kMax];
    int32_t chunk_start[kMax + 1];
    int32_t count;
};

/* ---- storage <-> math conversions ---------------------------------------- */
template <typename T> struct MathType { typedef float type; };
template <> struct MathType<double> { typedef double type; };

template <typename M, typename T> __device__ __forceinline__ M to_math(T x) { return static_cast<M>(x); }
template <> __device__ __forceinline__ float to_math<float, __half>(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_math<float, __nv_bfloat16>(__nv_bfloat16 x)
{
    return __bfloat162float(x);
}

template <typename T, typename M> __device__ __forceinline__ T from_math(M x) { return static_cast<T>(x); }
template <> __device__ __forceinline__ __half from_math<__half, float>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_math<__nv_bfloat16, float>(float x)
{
    return __float2bfloat16_rn(x);  /* round to nearest even, as torch */
}

template <typename T>
struct alignas(sizeof(T) * kILP) Vec { T v[kILP]; };

__device__ __forceinline__ double read_lr(const fo_cuda_args &a)
{
    if (a.lr_ptr == nullptr)
        return a.hp.lr;
    return a.lr_dtype == FO_DT_F64 ? *static_cast<const double *>(a.lr_ptr)
                                     : static_cast<double>(*static_cast<const float *>(a.lr_ptr));
}

template <typename T, typename Op, int L, bool S>
__global__ void __launch_bounds__(kBlockSize)
mta_kernel(const __grid_constant__ Table<L, S> tab, const __grid_constant__ fo_cuda_args args)
{
    typedef typename MathType<T>::type M;
    typedef typename Op::template Scalars<M> Sc;
    static_assert(Op::kLists == L, "table depth must match the functor");

    if (args.found_inf != nullptr && *args.found_inf != 0.0f)
        return;  /* an overflowed step changes nothing */
    const int32_t blk = static_cast<int32_t>(blockIdx.x);
    const int32_t j = fo_cp_locate(tab.chunk_start, tab.count, blk);
    const int64_t base = static_cast<int64_t>(blk - tab.chunk_start[j]) * kChunk;
    const int64_t rem = tab.numel[j] - base;
    const int64_t len = rem < kChunk ? rem : kChunk;

    __shared__ Sc sc_shared;
    if (threadIdx.x == 0) {
        const double step = S ? static_cast<double>(*tab.step[S ? j : 0]) : 0.0;
        Op::template prepare<M>(args, read_lr(args), step, sc_shared);
    }
    __syncthreads();
    const Sc sc = sc_shared;
    const bool unscale = args.grad_scale != nullptr;
    const M gscale = unscale ? static_cast<M>(*args.grad_scale) : M(1);
    const unsigned write = Op::kWrite | (unscale ? 2u : 0u);

    T *p[L];
    bool aligned = (len % kILP) == 0;
#pragma unroll
    for (int k = 0; k < L; k++) {
        p[k] = static_cast<T *>(tab.ptr[k][j]) + base;
        aligned = aligned && (reinterpret_cast<uintptr_t>(p[k]) % sizeof(Vec<T>) == 0);
    }

    M r[kILP][L];
    if (aligned) {
        for (int64_t i = threadIdx.x; i * kILP < len; i += blockDim.x) {
#pragma unroll
            for (int k = 0; k < L; k++) {
                const Vec<T> v = reinterpret_cast<const Vec<T> *>(p[k])[i];
#pragma unroll
                for (int e = 0; e < kILP; e++)
                    r[e][k] = to_math<M>(v.v[e]);
            }
#pragma unroll
            for (int e = 0; e < kILP; e++) {
                if (unscale)
                    r[e][1] = r[e][1] / gscale;
                Op::template elem<M>(r[e], sc);
            }
#pragma unroll
            for (int k = 0; k < L; k++) {
                if (!((write >> k) & 1u))
                    continue;
                Vec<T> v;
#pragma unroll
                for (int e = 0; e < kILP; e++)
                    v.v[e] = from_math<T>(r[e][k]);
                reinterpret_cast<Vec<T> *>(p[k])[i] = v;
            }
        }
    } else {
        for (int64_t i0 = 0; i0 < len; i0 += static_cast<int64_t>(blockDim.x) * kILP) {
#pragma unroll
            for (int e = 0; e < kILP; e++) {
                const int64_t idx = i0 + threadIdx.x + static_cast<int64_t>(e) * blockDim.x;
#pragma unroll
                for (int k = 0; k < L; k++)
                    r[e][k] = idx < len ? to_math<M>(p[k][idx]) : M(0);
            }
#pragma unroll
            for (int e = 0; e < kILP; e++) {
                if (unscale)
                    r[e][1] = r[e][1] / gscale;
                Op::template elem<M>(r[e], sc);
            }
#pragma unroll
            for (int e = 0; e < kILP; e++) {
                const int64_t idx = i0 + threadIdx.x + static_cast<int64_t>(e) * blockDim.x;
                if (idx >= len)
                    continue;
#pragma unroll
                for (int k = 0; k < L; k++)
                    if ((write >> k) & 1u)
                        p[k][idx] = from_math<T>(r[e][k]);
            }
        }
    }
}

/* step += 1 for every tensor of the table, unless *found_inf != 0 (torch's
 * fused optimizers: step += 1, then step -= found_inf). Runs before the update
 * on the same stream, so the update reads the new count. */
template <int L>
__global__ void step_kernel(const __grid_constant__ Table<L, true> tab, const float *found_inf)
{
    const int j = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
    if (j < tab.count && (found_inf == nullptr || *found_inf == 0.0f))
        *tab.step[j] += 1.0f;
}

/* Host: build the chunk tables of a group and launch. */
template <typename T, typename Op>
int multi_tensor_apply(const fo_cuda_args &a, int32_t n, void *const *lists, float *const *steps,
                       const int64_t *numel, cudaStream_t stream, char *err, int32_t errlen)
{
    constexpr int L = Op::kLists;
    constexpr bool S = Op::kStep;
    typedef Table<L, S> Tab;
    static_assert(sizeof(Tab) + sizeof(fo_cuda_args) <= static_cast<size_t>(kParamBytes),
                  "chunk table exceeds the kernel-argument budget");
    Tab tab;
    int32_t start = 0;
    while (start < n) {
        fo_cp_launch plan;
        if (fo_cp_next(numel, n, start, Tab::kMax, kChunk, &plan) != 0) {
            snprintf(err, errlen, "fusedoptim CUDA: tensor %d is too large for one launch", start);
            return FO_CUDA_EARG;
        }
        int32_t acc = 0, c = 0;
        for (int32_t i = plan.first; i < plan.end; i++, c++) {
            for (int k = 0; k < L; k++)
                tab.ptr[k][c] = lists[static_cast<int64_t>(k) * n + i];
            if constexpr (S)
                tab.step[c] = steps[i];
            tab.numel[c] = numel[i];
            tab.chunk_start[c] = acc;
            acc += static_cast<int32_t>(numel[i] > 0 ? (numel[i] + kChunk - 1) / kChunk : 0);
        }
        tab.chunk_start[c] = acc;
        tab.count = c;
        if constexpr (S) {
            const int threads = 128;
            step_kernel<L><<<(c + threads - 1) / threads, threads, 0, stream>>>(tab, a.found_inf);
        }
        if (plan.blocks > 0)
            mta_kernel<T, Op, L, S><<<static_cast<unsigned>(plan.blocks), kBlockSize, 0, stream>>>(tab, a);
        const cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) {
            snprintf(err, errlen, "fusedoptim CUDA: launch failed: %s", cudaGetErrorString(e));
            return FO_CUDA_ELAUNCH;
        }
        start = plan.end;
    }
    return FO_CUDA_OK;
}

}  // namespace fo_cuda
