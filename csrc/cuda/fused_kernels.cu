/*
 * fusedoptim CUDA backend: one functor per optimizer over the shared
 * per-element math (fusedoptim/optim_math_spec.h), run by the multi-tensor
 * apply of multi_tensor_apply.cuh, behind the C ABI of fo_cuda.h.
 *
 * Build with --fmad=false: FMAs appear only where the spec writes FO_FMA, as
 * in the CPU kernels' FMA (AVX2/AVX-512) variants; with IEEE division and
 * sqrt (nvcc's default) a float32 CUDA step is then meant to equal the CPU
 * AVX2 step bit for bit on every element the CPU computes in its vector form
 * (tests/test_cuda.py checks it on a GPU; the spec's `tail` is a CPU-only
 * detail: here it is always 0).
 * Scalars (bias corrections, step sizes) are computed in double from the
 * device-resident step counter and learning rate, then rounded once, as on the
 * CPU.
 *
 * Adding an optimizer: FO_CUDA_ELEM(<name>) binds the spec's fo_<name>_elem,
 * a functor (see AdagradOp: ~15 lines) sets its step-dependent scalars and
 * calls it, and with_op maps its kind (and options) to the functor.
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

/* The spec's scalars struct and its functions for math type M. */
template <typename M> struct Spec;
template <> struct Spec<float> {
    typedef fo_scalars_f32_cuda S;
    static __device__ __forceinline__ float prox_l1(float w, float thr) { return fo_prox_l1_f32_cuda(w, thr); }
    static __device__ void common(S *s, const fo_hparams *hp, double lr) { fo_common_scalars_f32_cuda(s, hp, lr); }
    static __device__ void round_step(S *s, int k, const fo_step_scalars *d) { fo_round_step_f32_cuda(s, k, d); }
};
template <> struct Spec<double> {
    typedef fo_scalars_f64_cuda S;
    static __device__ __forceinline__ double prox_l1(double w, double thr) { return fo_prox_l1_f64_cuda(w, thr); }
    static __device__ void common(S *s, const fo_hparams *hp, double lr) { fo_common_scalars_f64_cuda(s, hp, lr); }
    static __device__ void round_step(S *s, int k, const fo_step_scalars *d) { fo_round_step_f64_cuda(s, k, d); }
};

/* elem_<name><M>(...) forwards to the spec's fo_<name>_elem for math type M. */
#define FO_CUDA_ELEM(name)                                                            \
    template <typename M, typename... A>                                              \
    __device__ __forceinline__ void elem_##name(A... a)                               \
    {                                                                                 \
        if constexpr (sizeof(M) == sizeof(float))                                     \
            fo_##name##_elem_f32_cuda(a...);                                          \
        else                                                                          \
            fo_##name##_elem_f64_cuda(a...);                                          \
    }

FO_CUDA_ELEM(sgd)
FO_CUDA_ELEM(adam)
FO_CUDA_ELEM(adagrad)
FO_CUDA_ELEM(rmsprop)
FO_CUDA_ELEM(adamax)
FO_CUDA_ELEM(radam)
FO_CUDA_ELEM(adadelta)
FO_CUDA_ELEM(lion)

/* What every functor's block computes once per step (thread 0, in double,
 * rounded once), as the CPU's make_scalars: the spec scalars, the grad
 * multiplier (-1 for maximize), and the options as ints. */
template <typename M>
struct StepScalars {
    typename Spec<M>::S s;
    M gmul;
    int wd, o1, o2;
};

/* The spec's scalars for kind `kind` at step t (both in double, rounded
 * once: fo_common_scalars and fo_<name>_scalars, shared with the CPU). */
template <typename M>
__device__ void fill_common(const fo_cuda_args &a, double lr, double t, StepScalars<M> &o)
{
    fo_hparams hp = a.hp;
    hp.lr = lr;
    Spec<M>::common(&o.s, &hp, lr);
    const fo_step_scalars d = fo_step_scalars_of(hp.kind, t, &hp);
    Spec<M>::round_step(&o.s, hp.kind, &d);
    o.gmul = static_cast<M>(a.hp.maximize ? -a.hp.grad_mul : a.hp.grad_mul);
    o.wd = a.hp.weight_decay == 0.0 ? FO_WD_NONE : a.hp.wd_mode;
    o.o1 = o.o2 = 0;
}

/* Functors. Each: kLists, kStep, kWrite (see multi_tensor_apply.cuh),
 * set(a, lr, step, o) for its step-dependent scalars and options, and
 * update(r, g, o) with g the unscaled grad times gmul. The L1 proximal step
 * follows every update (a no-op at l1 = 0), as in the CPU loops. */
#define FO_CUDA_FUNCTOR_COMMON                                                        \
    template <typename M> using Scalars = StepScalars<M>;                             \
    template <typename M>                                                             \
    static __device__ void prepare(const fo_cuda_args &a, double lr, double step,     \
                                   Scalars<M> &o)                                     \
    {                                                                                 \
        fill_common<M>(a, lr, step, o);                                               \
        set<M>(a, lr, step, o);                                                       \
    }                                                                                 \
    template <typename M>                                                             \
    static __device__ __forceinline__ void elem(M (&r)[kLists], const Scalars<M> &o)  \
    {                                                                                 \
        update<M>(r, r[1] * o.gmul, o);                                               \
        r[0] = Spec<M>::prox_l1(r[0], o.s.l1_thr);                                    \
    }

/* SGD: param, grad [, momentum_buffer]. o1 = momentum mode, o2 = nesterov. */
template <bool Mom>
struct SgdOp {
    static constexpr int kLists = Mom ? 3 : 2;
    static constexpr bool kStep = false;
    static constexpr unsigned kWrite = Mom ? 0x5u : 0x1u;
    template <typename M>
    static __device__ void set(const fo_cuda_args &a, double, double, StepScalars<M> &o)
    {
        o.o1 = Mom ? (a.momentum_mode == FO_MOM_FIRST ? FO_MOM_FIRST : FO_MOM_UPDATE) : FO_MOM_NONE;
        o.o2 = Mom && a.hp.nesterov;
    }
    template <typename M>
    static __device__ __forceinline__ void update(M (&r)[kLists], M g, const StepScalars<M> &o)
    {
        M dummy = M(0);
        elem_sgd<M>(&r[0], Mom ? &r[kLists - 1] : &dummy, &dummy, &dummy, g, &o.s, o.wd, o.o1, o.o2, 0);
    }
    FO_CUDA_FUNCTOR_COMMON
};

/* Adam / AdamW: param, grad, exp_avg, exp_avg_sq [, max_exp_avg_sq]; step. */
template <bool Ams>
struct AdamOp {
    static constexpr int kLists = Ams ? 5 : 4;
    static constexpr bool kStep = true;
    static constexpr unsigned kWrite = Ams ? 0x1du : 0xdu;
    template <typename M>
    static __device__ void set(const fo_cuda_args &, double, double, StepScalars<M> &o)
    {
        o.o1 = Ams;
    }
    template <typename M>
    static __device__ __forceinline__ void update(M (&r)[kLists], M g, const StepScalars<M> &o)
    {
        M dummy = M(0);
        elem_adam<M>(&r[0], &r[2], &r[3], Ams ? &r[kLists - 1] : &dummy, g, &o.s, o.wd,
                     static_cast<int>(Ams), 0, 0);
    }
    FO_CUDA_FUNCTOR_COMMON
};

/* Adagrad: param, grad, sum; step. */
struct AdagradOp {
    static constexpr int kLists = 3;
    static constexpr bool kStep = true;
    static constexpr unsigned kWrite = 0x5u;
    template <typename M>
    static __device__ void set(const fo_cuda_args &, double, double, StepScalars<M> &)
    {
    }
    template <typename M>
    static __device__ __forceinline__ void update(M (&r)[kLists], M g, const StepScalars<M> &o)
    {
        M d = M(0);
        elem_adagrad<M>(&r[0], &r[2], &d, &d, g, &o.s, o.wd, 0, 0, 0);
    }
    FO_CUDA_FUNCTOR_COMMON
};

/* RMSprop: param, grad, square_avg [, grad_avg] [, momentum_buffer]; step. */
template <bool Centered, bool Mom>
struct RmspropOp {
    static constexpr int kLists = 3 + Centered + Mom;
    static constexpr bool kStep = true;
    static constexpr unsigned kWrite = (1u << kLists) - 1u - 2u;
    template <typename M>
    static __device__ void set(const fo_cuda_args &, double, double, StepScalars<M> &o)
    {
        o.o1 = Centered;
        o.o2 = Mom;
    }
    template <typename M>
    static __device__ __forceinline__ void update(M (&r)[kLists], M g, const StepScalars<M> &o)
    {
        M d1 = M(0), d2 = M(0);
        elem_rmsprop<M>(&r[0], &r[2], Centered ? &r[3] : &d1, Mom ? &r[kLists - 1] : &d2, g, &o.s,
                        o.wd, static_cast<int>(Centered), static_cast<int>(Mom), 0);
    }
    FO_CUDA_FUNCTOR_COMMON
};

/* Adamax: param, grad, exp_avg, exp_inf; step. */
struct AdamaxOp {
    static constexpr int kLists = 4;
    static constexpr bool kStep = true;
    static constexpr unsigned kWrite = 0xdu;
    template <typename M>
    static __device__ void set(const fo_cuda_args &, double, double, StepScalars<M> &)
    {
    }
    template <typename M>
    static __device__ __forceinline__ void update(M (&r)[kLists], M g, const StepScalars<M> &o)
    {
        M d = M(0);
        elem_adamax<M>(&r[0], &r[2], &r[3], &d, g, &o.s, o.wd, 0, 0, 0);
    }
    FO_CUDA_FUNCTOR_COMMON
};

/* RAdam: param, grad, exp_avg, exp_avg_sq; step. o1 = rectified (rho_t > 5). */
struct RadamOp {
    static constexpr int kLists = 4;
    static constexpr bool kStep = true;
    static constexpr unsigned kWrite = 0xdu;
    template <typename M>
    static __device__ void set(const fo_cuda_args &, double, double, StepScalars<M> &o)
    {
        o.o1 = o.s.step.radam.rectified != M(0);  /* (fo_radam_scalars) */
    }
    template <typename M>
    static __device__ __forceinline__ void update(M (&r)[kLists], M g, const StepScalars<M> &o)
    {
        M d = M(0);
        elem_radam<M>(&r[0], &r[2], &r[3], &d, g, &o.s, o.wd, o.o1, 0, 0);
    }
    FO_CUDA_FUNCTOR_COMMON
};

/* Adadelta: param, grad, square_avg, acc_delta; step (rho in `alpha`). */
struct AdadeltaOp {
    static constexpr int kLists = 4;
    static constexpr bool kStep = true;
    static constexpr unsigned kWrite = 0xdu;
    template <typename M>
    static __device__ void set(const fo_cuda_args &, double, double, StepScalars<M> &)
    {
    }
    template <typename M>
    static __device__ __forceinline__ void update(M (&r)[kLists], M g, const StepScalars<M> &o)
    {
        M d = M(0);
        elem_adadelta<M>(&r[0], &r[2], &r[3], &d, g, &o.s, o.wd, 0, 0, 0);
    }
    FO_CUDA_FUNCTOR_COMMON
};

/* Lion: param, grad, exp_avg. */
struct LionOp {
    static constexpr int kLists = 3;
    static constexpr bool kStep = false;
    static constexpr unsigned kWrite = 0x5u;
    template <typename M>
    static __device__ void set(const fo_cuda_args &, double, double, StepScalars<M> &)
    {
    }
    template <typename M>
    static __device__ __forceinline__ void update(M (&r)[kLists], M g, const StepScalars<M> &o)
    {
        M d = M(0);
        elem_lion<M>(&r[0], &r[2], &d, &d, g, &o.s, o.wd, 0, 0, 0);
    }
    FO_CUDA_FUNCTOR_COMMON
};

/* ------------------------------------------------------------ dispatch --- */
template <typename Op>
static int run_dtype(const fo_cuda_args &a, int32_t n, void *const *lists, float *const *steps,
                     const int64_t *numel, cudaStream_t s, char *err, int32_t errlen)
{
    switch (a.dtype) {
    case FO_DT_F32:
        return multi_tensor_apply<float, Op>(a, n, lists, steps, numel, s, err, errlen);
    case FO_DT_F64:
        return multi_tensor_apply<double, Op>(a, n, lists, steps, numel, s, err, errlen);
    case FO_DT_F16:
        return multi_tensor_apply<__half, Op>(a, n, lists, steps, numel, s, err, errlen);
    case FO_DT_BF16:
        return multi_tensor_apply<__nv_bfloat16, Op>(a, n, lists, steps, numel, s, err, errlen);
    default:
        snprintf(err, errlen, "fusedoptim CUDA: unknown dtype code %d", a.dtype);
        return FO_CUDA_EARG;
    }
}

/* The functor serving (kind, options): calls f.template operator()<Op>(). */
template <typename F>
static int with_op(const fo_cuda_args &a, F &&f)
{
    const bool mom = a.hp.momentum != 0.0;
    switch (a.hp.kind) {
    case FO_KIND_SGD: return mom ? f.template run<SgdOp<true>>() : f.template run<SgdOp<false>>();
    case FO_KIND_ADAM: return a.hp.amsgrad ? f.template run<AdamOp<true>>() : f.template run<AdamOp<false>>();
    case FO_KIND_ADAGRAD: return f.template run<AdagradOp>();
    case FO_KIND_RMSPROP: {
        const bool m = a.hp.momentum > 0.0;
        if (a.hp.centered) return m ? f.template run<RmspropOp<true, true>>() : f.template run<RmspropOp<true, false>>();
        return m ? f.template run<RmspropOp<false, true>>() : f.template run<RmspropOp<false, false>>();
    }
    case FO_KIND_ADAMAX: return f.template run<AdamaxOp>();
    case FO_KIND_RADAM: return f.template run<RadamOp>();
    case FO_KIND_ADADELTA: return f.template run<AdadeltaOp>();
    case FO_KIND_LION: return f.template run<LionOp>();
    default: return f.unknown();
    }
}

struct NLists {
    template <typename Op> int run() { return Op::kLists; }
    int unknown() { return -1; }
};
struct UsesStep {
    template <typename Op> int run() { return Op::kStep ? 1 : 0; }
    int unknown() { return -1; }
};
struct MaxTensors {
    template <typename Op> int run() { return Table<Op::kLists, Op::kStep>::kMax; }
    int unknown() { return -1; }
};
struct Launch {
    const fo_cuda_args &a;
    int32_t n;
    void *const *lists;
    float *const *steps;
    const int64_t *numel;
    cudaStream_t s;
    char *err;
    int32_t errlen;
    template <typename Op> int run() { return run_dtype<Op>(a, n, lists, steps, numel, s, err, errlen); }
    int unknown()
    {
        snprintf(err, errlen, "fusedoptim CUDA: optimizer kind %d is not served on CUDA", a.hp.kind);
        return FO_CUDA_EARG;
    }
};

}  // namespace fo_cuda

using namespace fo_cuda;

extern "C" int fo_cuda_nlists(const fo_cuda_args *a) { return with_op(*a, NLists{}); }
extern "C" int fo_cuda_uses_step(const fo_cuda_args *a) { return with_op(*a, UsesStep{}); }
extern "C" int32_t fo_cuda_max_tensors(const fo_cuda_args *a) { return with_op(*a, MaxTensors{}); }
extern "C" int64_t fo_cuda_chunk_size(void) { return kChunk; }

extern "C" int fo_cuda_step(const fo_cuda_args *a, int32_t n, void *const *lists, int32_t nlists,
                            float *const *steps, const int64_t *numel, void *stream, char *err,
                            int32_t errlen)
{
    const int want = fo_cuda_nlists(a);
    if (want < 0) {
        snprintf(err, errlen, "fusedoptim CUDA: optimizer kind %d is not served on CUDA", a->hp.kind);
        return FO_CUDA_EARG;
    }
    if (nlists != want) {
        snprintf(err, errlen, "fusedoptim CUDA: kind %d with these flags takes %d tensor lists, got %d",
                 a->hp.kind, want, nlists);
        return FO_CUDA_EARG;
    }
    if (fo_cuda_uses_step(a) == 1 && n > 0 && steps == nullptr) {
        snprintf(err, errlen, "fusedoptim CUDA: kind %d needs step counters", a->hp.kind);
        return FO_CUDA_EARG;
    }
    if (a->hp.kind == FO_KIND_SGD && a->hp.momentum != 0.0 && a->momentum_mode != FO_MOM_FIRST &&
        a->momentum_mode != FO_MOM_UPDATE) {
        snprintf(err, errlen, "fusedoptim CUDA: SGD with momentum needs momentum_mode FIRST or UPDATE");
        return FO_CUDA_EARG;
    }
    if (n <= 0)
        return FO_CUDA_OK;
    return with_op(*a, Launch{*a, n, lists, steps, numel, static_cast<cudaStream_t>(stream), err, errlen});
}
