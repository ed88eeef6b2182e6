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

#ifdef __cplusplus
extern "C" {
#endif

/* Optimizer kinds served on CUDA. The value is also the `kind` argument of the
 * torch op fusedoptim::fused_step_. */
enum {
    FO_CUDA_SGD = 0,       /* lists: param, grad [, momentum_buffer]           */
    FO_CUDA_ADAM = 1,      /* lists: param, grad, exp_avg, exp_avg_sq
                              [, max_exp_avg_sq]; plus step counters          */
    FO_CUDA_NKINDS = 2
};

/* Storage dtypes (same codes as the CPU backend's FO_DT_*). fp32 math for
 * float32/float16/bfloat16, double math for float64. */
enum { FO_CUDA_F32 = 0, FO_CUDA_F64 = 1, FO_CUDA_BF16 = 2, FO_CUDA_F16 = 3 };

/* Error codes of fo_cuda_step (a message is written to `err` as well). */
enum {
    FO_CUDA_OK = 0,
    FO_CUDA_EARG = 1,      /* bad kind / dtype / list count / flags             */
    FO_CUDA_ELAUNCH = 2    /* the CUDA runtime reported an error                */
};

/* Hyper-parameters of one step. Names cover the torch.optim family; a kind
 * reads only the fields its functor documents (fused_kernels.cu). */
typedef struct {
    int32_t kind;          /* FO_CUDA_*                                         */
    int32_t dtype;         /* FO_CUDA_F32 ...                                   */
    int32_t wd_mode;       /* FO_WD_* (fusedoptim/optim_math.h)                 */
    int32_t amsgrad;
    int32_t nesterov;
    int32_t maximize;
    int32_t momentum_mode; /* SGD: FO_MOM_NONE / FO_MOM_FIRST / FO_MOM_UPDATE   */
    int32_t lr_dtype;      /* lr_ptr's dtype: FO_CUDA_F32 or FO_CUDA_F64        */
    double lr;             /* used when lr_ptr is NULL                          */
    double beta1, beta2, eps, weight_decay, momentum, dampening;
    double extra[6];       /* further kinds' hyper-parameters                   */
    int32_t iextra[4];
    const void *lr_ptr;    /* device scalar learning rate, or NULL              */
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
