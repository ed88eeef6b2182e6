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

/* Optimizer kinds: the CPU backend's FO_KIND_* numbers (csrc/cpu/kernels.h).
 * The value is also the `kind` argument of the torch op fusedoptim::fused_step_.
 * Tensor lists per kind (0 param, 1 grad, then state; "step": per-tensor float32
 * step counters, advanced in place):
 *   SGD       [momentum_buffer if momentum != 0]
 *   ADAM      exp_avg, exp_avg_sq [, max_exp_avg_sq if amsgrad]; step
 *   ADAGRAD   sum; step
 *   RMSPROP   square_avg [, grad_avg if centered] [, momentum_buffer if momentum > 0]; step
 *   ADAMAX    exp_avg, exp_inf; step
 *   RADAM     exp_avg, exp_avg_sq; step
 *   ADADELTA  square_avg, acc_delta; step
 *   LION      exp_avg
 * NADAM (per-param mu_product) and LAMB (per-tensor norms between two passes)
 * are not served on CUDA yet: fo_cuda_nlists returns -1 for them. */
enum {
    FO_CUDA_SGD = 0, FO_CUDA_ADAM = 1, FO_CUDA_ADAGRAD = 2, FO_CUDA_RMSPROP = 3,
    FO_CUDA_ADAMAX = 4, FO_CUDA_NADAM = 5, FO_CUDA_RADAM = 6, FO_CUDA_ADADELTA = 7,
    FO_CUDA_LION = 8, FO_CUDA_LAMB = 9
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

/* Hyper-parameters of one step: the CPU backend's fo_hparams fields, plus the
 * device-resident scalars. */
typedef struct {
    int32_t kind;          /* FO_CUDA_*                                         */
    int32_t dtype;         /* FO_CUDA_F32 ...                                   */
    int32_t wd_mode;       /* FO_WD_* (fusedoptim/optim_math.h)                 */
    int32_t amsgrad, nesterov, maximize, centered, bias_correction;
    int32_t momentum_mode; /* SGD: FO_MOM_FIRST on the step creating buffers    */
    int32_t lr_dtype;      /* lr_ptr's dtype: FO_CUDA_F32 or FO_CUDA_F64        */
    double lr;             /* used when lr_ptr is NULL                          */
    double beta1, beta2, eps, weight_decay, momentum, dampening;
    double alpha;          /* RMSprop alpha, Adadelta rho                       */
    double lr_decay, momentum_decay;
    double l1;             /* L1 weight decay (proximal), 0 = off               */
    double grad_mul;       /* grads are multiplied by it (max_grad_norm's clip
                              coefficient; 1 = none); maximize negates it      */
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
