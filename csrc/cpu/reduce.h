/*
 * fusedoptim CPU backend: multi-tensor norm and in-place scale (gradient
 * clipping), over a table of tensors of mixed dtypes.
 *
 * Determinism: every tensor is cut into blocks of FO_NORM_BLOCK elements
 * (blocks never span two tensors); each block's partial is computed by one
 * thread with a fixed lane structure (no FMA, no reassociation) and written
 * to the caller's scratch; the partials are then combined serially in table
 * order. The result therefore does not depend on the thread count, the
 * parallel grain or the instruction-set variant.
 *
 * Accumulation is in double for every dtype (bf16/fp16/fp32 inputs are
 * widened exactly). Threads: torch's pool via fo_get_parallel_for() (kernels.h),
 * inline when it is NULL or the work is below fo_get_grain().
 */
#ifndef FUSEDOPTIM_CPU_REDUCE_H
#define FUSEDOPTIM_CPU_REDUCE_H
#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* fo_rtensor (one dense tensor of the table): kernels.h */

/* Elements per partial sum (a multiple of the 16 accumulator lanes). */
#define FO_NORM_BLOCK 4096

/* Bytes of scratch fo_multi_norm / fo_multi_scale need for this table
 * (depends only on n and the tensors' numel; 8-byte aligned memory). */
size_t fo_norm_scratch_size(const fo_rtensor *t, int64_t n);

/* The norm of all the tensors' elements taken as one vector, computed in
 * double:
 *   p == 2        sqrt(sum x^2)
 *   p == 1        sum |x|
 *   p == +inf     max |x|          (NaN if any element is NaN)
 *   p == -inf     min |x|          (NaN if any element is NaN)
 *   p == 0        number of tensors that hold a non-zero (or NaN) element:
 *                 torch's clip_grad_norm_/get_total_norm semantics
 *                 (vector_norm(stack(per-tensor counts), 0))
 *   other p       (sum |x|^p)^(1/p)  (p < 0 included: a zero element gives 0)
 * Empty tensors contribute nothing (for +inf/-inf/p < 0 torch raises on them:
 * the caller checks that). An empty table gives 0 (p == -inf: +inf).
 * per_tensor: NULL, or n doubles that receive each tensor's own norm
 * (p == 0: its count of non-zero elements).
 * Thread-safe given distinct scratch; call it with the GIL released. */
double fo_multi_norm(const fo_rtensor *t, int64_t n, double p, void *scratch, double *per_tensor);

/* In place t[i] *= coef for every element, as torch's mul_ by a 0-d tensor:
 * fp64 in double; fp32, bf16 and fp16 in float ((float)coef), bf16/fp16
 * narrowed with round-to-nearest-even. The tensors must not overlap each
 * other (see fo_rtensors_overlap). */
void fo_multi_scale(const fo_rtensor *t, int64_t n, double coef, void *scratch);

/* 1 if the memory of two non-empty tensors of the table overlaps, else 0.
 * work: 2*n uintptr_t entries (used only when the table is not already
 * sorted by address). */
int fo_rtensors_overlap(const fo_rtensor *t, int64_t n, uintptr_t *work);

/* Element size of an FO_DT_* dtype (0 if unknown). */
int fo_dtype_size(int32_t dtype);

#ifdef __cplusplus
}
#endif
#endif
