/*
 * fusedoptim CUDA backend: the host/device logic of the chunk table, in plain
 * C99 (no CUDA needed) so that tests compile it with the host C compiler and
 * check it on a machine without a GPU (tests/test_cuda_host.py).
 *
 * A launch covers a run of whole tensors of the group (at most `max_tensors`
 * non-empty ones, the kernel-argument struct's capacity). Tensor j of a launch
 * owns blocks [chunk_start[j], chunk_start[j+1]), one block per `chunk`
 * elements; a block finds its (tensor, chunk) by binary search over
 * chunk_start, so a launch has no block limit and a group of any size takes
 * ceil(tensors / max_tensors) launches. An empty tensor takes a slot with no
 * blocks (chunk_start repeats), so its step counter is still advanced.
 */
#ifndef FUSEDOPTIM_CUDA_CHUNK_PLAN_H
#define FUSEDOPTIM_CUDA_CHUNK_PLAN_H
#include <stdint.h>

#ifndef FO_CP_HD
#ifdef __CUDACC__
#define FO_CP_HD __host__ __device__ __forceinline__
#else
#define FO_CP_HD static inline
#endif
#endif

/* Largest block count of one launch (gridDim.x limit, and chunk_start is int32). */
#define FO_CP_MAX_BLOCKS ((int64_t)2147483647)

/* One launch of a plan: tensors [first, end) of the group in `blocks` blocks. */
typedef struct {
    int32_t first, end;
    int64_t blocks;
} fo_cp_launch;

/* The next launch starting at tensor `start` (< n). Returns 0, or -1 if one
 * tensor alone needs more than FO_CP_MAX_BLOCKS blocks. */
FO_CP_HD int fo_cp_next(const int64_t *numel, int32_t n, int32_t start, int32_t max_tensors,
                        int64_t chunk, fo_cp_launch *out)
{
    int32_t i = start;
    int64_t blocks = 0;
    for (; i < n && i - start < max_tensors; i++) {
        int64_t c = numel[i] > 0 ? (numel[i] + chunk - 1) / chunk : 0;
        if (c > FO_CP_MAX_BLOCKS)
            return -1;
        if (blocks + c > FO_CP_MAX_BLOCKS)
            break;
        blocks += c;
    }
    out->first = start;
    out->end = i;
    out->blocks = blocks;
    return 0;
}

/* The slot j (0 <= j < count) owning `block` (< chunk_start[count]), given
 * chunk_start[0..count] (chunk_start[0] = 0, non-decreasing, chunk_start[count]
 * = blocks): the largest j with chunk_start[j] <= block, which is never an
 * empty slot since then chunk_start[j+1] = chunk_start[j] <= block. */
FO_CP_HD int32_t fo_cp_locate(const int32_t *chunk_start, int32_t count, int32_t block)
{
    int32_t lo = 0, hi = count - 1;
    while (lo < hi) {
        int32_t mid = (lo + hi + 1) >> 1;
        if (chunk_start[mid] <= block)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

#endif
