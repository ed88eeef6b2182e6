/*
 * fusedoptim CUDA backend: the plain C ABI of the fused multi-tensor kernels.
 *
 * No torch and no CUDA header is needed to include this file: the launcher
 * takes raw device pointers and a cudaStream_t passed as void*. The torch
 * binding (binding.cpp) is the only unit that sees tensors.
 *
 * Everything a step reads that may change between CUDA-graph replays (the step
 * counters, a tensor learning rate, grad_scale, found_inf) is read from device
 * memory inside the kernels: a step never synchronizes with the host and can
 * be captured in a CUDA graph.
 */
#ifndef FUSEDOPTIM_CUDA_FO_CUDA_H
#define FUSEDOPTIM_CUDA_FO_CUDA_H
#include <stdint.h>

#include "fusedoptim/declarations.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Optimizer kinds and storage dtypes: the declarations' FO_KIND_* and FO_DT_*
 * (fusedoptim/declarations.h; fp32 math for float32/float16/bfloat16, double
 * math for float64). The kind is also the `kind` argument of the torch op
 * fusedoptim::fused_step_. Tensor lists per kind: 0 param, 1 grad, then the
 * state slots of its declaration that its options use, in slot order;
 * "step": per-tensor float32 step counters, advanced in place. Kinds whose
 * declaration has cuda = 0 (NAdam: per-param mu_product; LAMB: per-tensor
 * norms between two passes) are not served: fo_cuda_nlists returns -1. */

/* Error codes of fo_cuda_step (a message is written to `err` as well). */
enum {
    FO_CUDA_OK = 0,
    FO_CUDA_EARG = 1,      /* bad kind / dtype / list count / flags             */
    FO_CUDA_ELAUNCH = 2    /* the CUDA runtime reported an error                */
};

/* One step's arguments: the group's fo_hparams (as the CPU backend's;
 * hp.grad_mul multiplies the grads: max_grad_norm's clip coefficient, 1 =
 * none; maximize negates it) plus the device-resident scalars. */
typedef struct {
    fo_hparams hp;
    int32_t dtype;         /* FO_DT_*                                           */
    int32_t momentum_mode; /* SGD: FO_MOM_FIRST on the step creating buffers    */
    int32_t lr_dtype;      /* lr_ptr's dtype: FO_DT_F32 or FO_DT_F64            */
    int32_t pad_;
    const void *lr_ptr;    /* device scalar learning rate, or NULL (hp.lr)      */
    const float *grad_scale; /* device scalar: grads are divided by it (and the
                                unscaled grads written back), or NULL           */
    const float *found_inf;  /* device scalar: when != 0 the step changes
                                nothing (params, state, steps), or NULL         */
} fo_cuda_args;

/* Number of tensor lists (param, grad, state...) a kind uses with these flags,
 * not counting step counters; and whether it keeps step counters. -1 if the
 * kind is unknown. */
int fo_cuda_nlists(const fo_cuda_args *a);
int fo_cuda_uses_step(const fo_cuda_args *a);

/* One optimizer step over n tensors of one dtype on one device.
 *   lists:  nlists * n device pointers, list-major: lists[k*n + i] is list k of
 *           tensor i (k = 0 param, 1 grad, 2.. state in the kind's order)
 *   steps:  n device pointers to float32 step counters (kinds that use them),
 *           incremented in place unless *found_inf != 0
 *   numel:  n element counts (tensors are dense, all lists of tensor i share
 *           one layout and are read flat)
 *   stream: a cudaStream_t
 * Returns FO_CUDA_OK or an error code with a message in err[0..errlen). */
int fo_cuda_step(const fo_cuda_args *a, int32_t n, void *const *lists, int32_t nlists,
                 float *const *steps, const int64_t *numel, void *stream, char *err,
                 int32_t errlen);

/* Tensors per launch and elements per block of the chunk table for this
 * kind and flags (for tests and the benchmark's launch count). */
int32_t fo_cuda_max_tensors(const fo_cuda_args *a);
int64_t fo_cuda_chunk_size(void);

#ifdef __cplusplus
}
#endif
#endif
