/*
 * fusedoptim CUDA backend: one functor per optimizer over the shared
 * per-element math (fusedoptim/optim_math_spec.h), run by the multi-tensor
 * apply of multi_tensor_apply.cuh, behind the C ABI of fo_cuda.h.
 *
 * Build with --fmad=false: FMAs appear only where the spec writes FO_FMA, as
 * in the CPU kernels' FMA (AVX2/AVX-512) variants, so a float32 CUDA step
 * equals the CPU AVX2 step bit for bit on every element the CPU computes in its
 * vector form (the spec's `tail` is a CPU-only detail: here it is always 0).
 * Scalars (bias corrections, step sizes) are computed in double from the
 * device-resident step counter and learning rate, then rounded once, as on the
 * CPU.
 *
 * Adding an optimizer: FO_CUDA_SPEC(<name>) below binds the spec's
 * fo_<name>_scalars / fo_<name>_elem pair, a functor (see SgdOp) fills the
 * scalars and calls elem, and fo_cuda_step dispatches its kind.
 *
 * No torch header here: `nvcc -c` compile-checks this file on its own.
 */
#include <math.h>
#include <stdio.h>

#include "fusedoptim/optim_math.h"

#define FO_T float
#define FO_NAME(x) x##_f32_cuda
#define FO_FMA(a, b, c) fmaf((a), (b), (c))
#define FO_SQRT sqrtf
#include "fusedoptim/optim_math_spec.h"
#undef FO_T
#undef FO_NAME
#undef FO_FMA
#undef FO_SQRT

#define FO_T double
#define FO_NAME(x) x##_f64_cuda
#define FO_FMA(a, b, c) fma((a), (b), (c))
#define FO_SQRT sqrt
#include "fusedoptim/optim_math_spec.h"
#undef FO_T
#undef FO_NAME
#undef FO_FMA
#undef FO_SQRT

#include "fo_cuda.h"
#include "multi_tensor_apply.cuh"

namespace fo_cuda {

/* spec_<name><M>::S is the spec's scalars struct for math type M and
 * spec_<name><M>::elem(...) its per-element function. */
#define FO_CUDA_SPEC(name)                                                            \
    template <typename M> struct spec_##name;                                         \
    template <> struct spec_##name<float> {                                           \
        typedef fo_##name##_scalars_f32_cuda S;                                       \
        template <typename... A> static __device__ __forceinline__ void elem(A... a)  \
        {                                                                             \
            fo_##name##_elem_f32_cuda(a...);                                          \
        }                                                                             \
    };                                                                                \
    template <> struct spec_##name<double> {                                          \
        typedef fo_##name##_scalars_f64_cuda S;                                       \
        template <typename... A> static __device__ __forceinline__ void elem(A... a)  \
        {                                                                             \
            fo_##name##_elem_f64_cuda(a...);                                          \
        }                                                                             \
    };

FO_CUDA_SPEC(sgd)
FO_CUDA_SPEC(adam)

/* ------------------------------------------------------------------ SGD ---
 * reads: lr, weight_decay, momentum, dampening, nesterov, maximize,
 *        momentum_mode (FIRST on the step that creates the buffers)
 * lists: param, grad [, momentum_buffer when Mom]                           */
template <bool Mom>
struct SgdOp {
    static constexpr int kLists = Mom ? 3 : 2;
    static constexpr bool kStep = false;
    static constexpr unsigned kWrite = Mom ? 0x5u : 0x1u;
    template <typename M> struct Scalars {
        typename spec_sgd<M>::S s;
        int has_wd, mode, nesterov;
    };
    template <typename M>
    static __device__ void prepare(const fo_cuda_args &a, double lr, double, Scalars<M> &o)
    {
        o.s.gsign = a.maximize ? M(-1) : M(1);
        o.s.weight_decay = static_cast<M>(a.weight_decay);
        o.s.momentum = static_cast<M>(a.momentum);
        o.s.one_minus_damp = static_cast<M>(1.0 - a.dampening);
        o.s.neg_lr = static_cast<M>(-lr);
        o.has_wd = a.weight_decay != 0.0;
        o.mode = Mom ? (a.momentum_mode == FO_MOM_FIRST ? FO_MOM_FIRST : FO_MOM_UPDATE) : FO_MOM_NONE;
        o.nesterov = Mom && a.nesterov;
    }
    template <typename M>
    static __device__ __forceinline__ void elem(M (&r)[kLists], const Scalars<M> &o)
    {
        M dummy = M(0);
        spec_sgd<M>::elem(&r[0], Mom ? &r[kLists - 1] : &dummy, r[1], &o.s, o.has_wd, o.mode,
                          o.nesterov, 0);
    }
};

/* ----------------------------------------------------------- Adam/AdamW ---
 * reads: lr, beta1, beta2, eps, weight_decay, wd_mode (coupled: Adam;
 *        decoupled: AdamW / decoupled_weight_decay), amsgrad, maximize
 * lists: param, grad, exp_avg, exp_avg_sq [, max_exp_avg_sq when Ams]; step */
template <bool Ams>
struct AdamOp {
    static constexpr int kLists = Ams ? 5 : 4;
    static constexpr bool kStep = true;
    static constexpr unsigned kWrite = Ams ? 0x1du : 0xdu;
    template <typename M> struct Scalars {
        typename spec_adam<M>::S s;
        int wd_mode;
    };
    template <typename M>
    static __device__ void prepare(const fo_cuda_args &a, double lr, double step, Scalars<M> &o)
    {
        const double step_size = lr / (1.0 - pow(a.beta1, step));
        const double bc2_sqrt = sqrt(1.0 - pow(a.beta2, step));
        o.s.gsign = a.maximize ? M(-1) : M(1);
        o.s.weight_decay = static_cast<M>(a.weight_decay);
        o.s.decay = static_cast<M>(1.0 - lr * a.weight_decay);
        o.s.w1 = static_cast<M>(1.0 - a.beta1);
        o.s.w1_minus_1 = o.s.w1 - M(1);
        o.s.one_minus_w1 = M(1) - o.s.w1;
        o.s.beta2 = static_cast<M>(a.beta2);
        o.s.one_minus_beta2 = static_cast<M>(1.0 - a.beta2);
        o.s.neg_step_size = static_cast<M>(-step_size);
        o.s.bc2_sqrt = static_cast<M>(bc2_sqrt);
        o.s.eps = static_cast<M>(a.eps);
        o.wd_mode = a.weight_decay == 0.0 ? FO_WD_NONE : a.wd_mode;
    }
    template <typename M>
    static __device__ __forceinline__ void elem(M (&r)[kLists], const Scalars<M> &o)
    {
        M dummy = M(0);
        spec_adam<M>::elem(&r[0], &r[2], &r[3], Ams ? &r[kLists - 1] : &dummy, r[1], &o.s,
                           o.wd_mode, static_cast<int>(Ams), 0);
    }
};

/* ------------------------------------------------------------ dispatch --- */
template <typename Op>
static int run_dtype(const fo_cuda_args &a, int32_t n, void *const *lists, float *const *steps,
                     const int64_t *numel, cudaStream_t s, char *err, int32_t errlen)
{
    switch (a.dtype) {
    case FO_CUDA_F32:
        return multi_tensor_apply<float, Op>(a, n, lists, steps, numel, s, err, errlen);
    case FO_CUDA_F64:
        return multi_tensor_apply<double, Op>(a, n, lists, steps, numel, s, err, errlen);
    case FO_CUDA_F16:
        return multi_tensor_apply<__half, Op>(a, n, lists, steps, numel, s, err, errlen);
    case FO_CUDA_BF16:
        return multi_tensor_apply<__nv_bfloat16, Op>(a, n, lists, steps, numel, s, err, errlen);
    default:
        snprintf(err, errlen, "fusedoptim CUDA: unknown dtype code %d", a.dtype);
        return FO_CUDA_EARG;
    }
}

static int lists_of(const fo_cuda_args &a)
{
    switch (a.kind) {
    case FO_CUDA_SGD: return a.momentum != 0.0 ? SgdOp<true>::kLists : SgdOp<false>::kLists;
    case FO_CUDA_ADAM: return a.amsgrad ? AdamOp<true>::kLists : AdamOp<false>::kLists;
    default: return -1;
    }
}

}  // namespace fo_cuda

using namespace fo_cuda;

extern "C" int fo_cuda_nlists(const fo_cuda_args *a) { return lists_of(*a); }

extern "C" int fo_cuda_uses_step(const fo_cuda_args *a)
{
    switch (a->kind) {
    case FO_CUDA_SGD: return 0;
    case FO_CUDA_ADAM: return 1;
    default: return -1;
    }
}

extern "C" int32_t fo_cuda_max_tensors(const fo_cuda_args *a)
{
    switch (a->kind) {
    case FO_CUDA_SGD: return a->momentum != 0.0 ? Table<3, false>::kMax : Table<2, false>::kMax;
    case FO_CUDA_ADAM: return a->amsgrad ? Table<5, true>::kMax : Table<4, true>::kMax;
    default: return -1;
    }
}

extern "C" int64_t fo_cuda_chunk_size(void) { return kChunk; }

extern "C" int fo_cuda_step(const fo_cuda_args *a, int32_t n, void *const *lists, int32_t nlists,
                            float *const *steps, const int64_t *numel, void *stream, char *err,
                            int32_t errlen)
{
    const int want = lists_of(*a);
    if (want < 0) {
        snprintf(err, errlen, "fusedoptim CUDA: unknown optimizer kind %d", a->kind);
        return FO_CUDA_EARG;
    }
    if (nlists != want) {
        snprintf(err, errlen, "fusedoptim CUDA: kind %d with these flags takes %d tensor lists, got %d",
                 a->kind, want, nlists);
        return FO_CUDA_EARG;
    }
    if (fo_cuda_uses_step(a) && n > 0 && steps == nullptr) {
        snprintf(err, errlen, "fusedoptim CUDA: kind %d needs step counters", a->kind);
        return FO_CUDA_EARG;
    }
    if (a->kind == FO_CUDA_SGD && a->momentum != 0.0 && a->momentum_mode != FO_MOM_FIRST &&
        a->momentum_mode != FO_MOM_UPDATE) {
        snprintf(err, errlen, "fusedoptim CUDA: SGD with momentum needs momentum_mode FIRST or UPDATE");
        return FO_CUDA_EARG;
    }
    if (n <= 0)
        return FO_CUDA_OK;
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    switch (a->kind) {
    case FO_CUDA_SGD:
        return a->momentum != 0.0 ? run_dtype<SgdOp<true>>(*a, n, lists, steps, numel, s, err, errlen)
                                  : run_dtype<SgdOp<false>>(*a, n, lists, steps, numel, s, err, errlen);
    case FO_CUDA_ADAM:
        return a->amsgrad ? run_dtype<AdamOp<true>>(*a, n, lists, steps, numel, s, err, errlen)
                          : run_dtype<AdamOp<false>>(*a, n, lists, steps, numel, s, err, errlen);
    default:
        return FO_CUDA_EARG;
    }
}
