/*
 * fusedoptim: the per-element math of every optimizer, written once.
 *
 * Part 1 (included once) holds each optimizer's step-dependent scalars in
 * double. Part 2 is a template: included once per instantiation (scalar type
 * x FMA mode x instruction set) with FO_T defined. It is plain C99 that nvcc
 * also accepts, so the CUDA kernels include it unchanged.
 *
 * The including file defines:
 *   FO_T            the register type: float (for float32, bfloat16 and
 *                   float16 storage) or double (float64)
 *   FO_NAME(x)      the instantiation's name for x (e.g. x##_f32_avx2)
 *   FO_FMA(a,b,c)   a*b+c: fused where the instantiation mirrors torch's
 *                   FMA-using kernels (AVX2/AVX-512, CUDA), two roundings in
 *                   the baseline one (torch's DEFAULT CPU capability)
 *   FO_SQRT(x)      square root of FO_T
 *   FO_HD           function qualifiers (empty in C, __host__ __device__ in CUDA)
 *
 * Every optimizer is one `fo_<name>_elem` function over registers: the loops
 * (CPU) and the functors (CUDA) load an element, call it, store the results.
 * Scalars that depend on the step (bias corrections, step sizes) are
 * computed in double by the caller and rounded once to FO_T, as torch does.
 * Do not reorder an operation here without re-running the parity tests: the
 * order *is* the specification. Where torch has a fused CPU kernel (SGD,
 * Adam/AdamW, Adagrad) the forms are the ones that make fp32 results
 * bit-identical to it; elsewhere they follow torch's single-tensor
 * implementation op by op, FMA where torch's vectorized op fuses.
 *
 * `tail`: torch's fused CPU kernels run a vector loop over each tensor and a
 * scalar loop over the rest, and the two differ: the compiler contracted them
 * into FMAs differently, the scalar loop's std::max keeps the old maximum when
 * the new value is NaN, and its lerp gives +0 where the vector one gives -0.
 * Measured against torch 2.13 element by element, on every CPU capability the
 * tail is the last numel % 8 elements of each float tensor. Where the forms
 * differ the spec names both; tail = 0 is the vector form.
 *
 * Weight decay (`wd_mode`), common to every optimizer:
 *   FO_WD_COUPLED    L2 in the gradient: g += weight_decay * p   (torch's)
 *   FO_WD_DECOUPLED  p *= 1 - lr * weight_decay before the update (AdamW's)
 * and L1, applied by the loops after the update as a proximal step
 * (fo_prox_l1): w <- sign(w) * max(|w| - lr*l1, 0), exactly 0 below it.
 */

#ifndef FUSEDOPTIM_OPTIM_MATH_SCALARS
#define FUSEDOPTIM_OPTIM_MATH_SCALARS
/* ---- Part 1 (once, in double, host and device): each optimizer's scalars
 * that depend on the step. FO_SCALARS_<K> lists their fields; the loops keep
 * them per tensor in double (fo_step_scalars, computed once per tensor and
 * step by fo_<name>_scalars, shared by the CPU pre-pass and the CUDA
 * kernels), and round them once to the register type (fo_scalars.step). */
#include "fusedoptim/optim_math.h"
#include <math.h>

#define FO_SCALARS_SGD(F) F(none)                 /* (none)                  */
#define FO_SCALARS_ADAM(F) F(step_size) F(bias_correction2_sqrt)
#define FO_SCALARS_ADAGRAD(F) F(clr)              /* decayed learning rate   */
#define FO_SCALARS_RMSPROP(F) F(none)
#define FO_SCALARS_ADAMAX(F) F(step_size)
#define FO_SCALARS_NADAM(F) F(mu) F(mu_next) F(bias_correction2) F(grad_step) F(avg_step)
#define FO_SCALARS_RADAM(F) F(bias_correction1) F(lr) F(bias_correction2_sqrt) \
                            F(rectification) F(rectified)
#define FO_SCALARS_ADADELTA(F) F(none)
#define FO_SCALARS_LION(F) F(none)
#define FO_SCALARS_LAMB(F) F(bias_correction1) F(bias_correction2) F(neg_lr_trust)
#define FO_SCALARS_ADOPT(F) F(first) F(clip)

#define FO_FIELD_D_(n) double n;
#define FO_STEP_STRUCT_D_(K, name, ...) typedef struct { FO_SCALARS_##K(FO_FIELD_D_) } fo_##name##_step;
FO_OPTIMIZERS(FO_STEP_STRUCT_D_)
#define FO_STEP_MEMBER_D_(K, name, ...) fo_##name##_step name;
typedef union { FO_OPTIMIZERS(FO_STEP_MEMBER_D_) double raw_[8]; } fo_step_scalars;
#undef FO_STEP_STRUCT_D_
#undef FO_STEP_MEMBER_D_

/* SGD, RMSprop, Adadelta, Lion: nothing depends on the step */
#define FO_NO_STEP_SCALARS_(name)                                                          \
    static FO_HD FO_INLINE fo_##name##_step fo_##name##_scalars(double step, const fo_hparams *hp) \
    {                                                                                      \
        fo_##name##_step r = {0.0};                                                        \
        (void)step; (void)hp;                                                              \
        return r;                                                                          \
    }
FO_NO_STEP_SCALARS_(sgd)
FO_NO_STEP_SCALARS_(rmsprop)
FO_NO_STEP_SCALARS_(adadelta)
FO_NO_STEP_SCALARS_(lion)
#undef FO_NO_STEP_SCALARS_

/* step_size = -lr / (1 - beta1^t), sqrt(1 - beta2^t) */
static FO_HD FO_INLINE fo_adam_step fo_adam_scalars(double t, const fo_hparams *hp)
{
    fo_adam_step r;
    r.step_size = -(hp->lr / (1.0 - pow(hp->beta1, t)));
    r.bias_correction2_sqrt = sqrt(1.0 - pow(hp->beta2, t));
    return r;
}

/* torch's fused kernel reads the step as float: lr / (1 + (t-1) * lr_decay) */
static FO_HD FO_INLINE fo_adagrad_step fo_adagrad_scalars(double t, const fo_hparams *hp)
{
    fo_adagrad_step r;
    r.clr = hp->lr / (1.0 + (t - 1.0) * hp->lr_decay);
    return r;
}

static FO_HD FO_INLINE fo_adamax_step fo_adamax_scalars(double t, const fo_hparams *hp)
{
    fo_adamax_step r;
    r.step_size = -(hp->lr / (1.0 - pow(hp->beta1, t)));
    return r;
}

/* The momentum schedule mu_t, mu_{t+1} and 1 - beta2^t (the pow calls: once
 * per step, not per tensor); grad_step and avg_step need each param's
 * mu_product: fo_nadam_with_product. */
static FO_HD FO_INLINE fo_nadam_step fo_nadam_scalars(double t, const fo_hparams *hp)
{
    fo_nadam_step r;
    r.mu = hp->beta1 * (1.0 - 0.5 * pow(0.96, t * hp->momentum_decay));
    r.mu_next = hp->beta1 * (1.0 - 0.5 * pow(0.96, (t + 1.0) * hp->momentum_decay));
    r.bias_correction2 = 1.0 - pow(hp->beta2, t);
    r.grad_step = r.avg_step = 0.0;
    return r;
}

/* prod: the param's mu_product after this step's update (prod *= mu) */
static FO_HD FO_INLINE void fo_nadam_with_product(fo_nadam_step *r, double prod, double lr)
{
    r->grad_step = -lr * (1.0 - r->mu) / (1.0 - prod);
    r->avg_step = (-lr * r->mu_next) / (1.0 - prod * r->mu_next);
}

/* rectified = 1 when rho_t > 5 (else the un-adapted step p -= lr * m/bc1) */
static FO_HD FO_INLINE fo_radam_step fo_radam_scalars(double t, const fo_hparams *hp)
{
    fo_radam_step r;
    const double b2 = hp->beta2;
    const double bc1 = 1.0 - pow(hp->beta1, t), bc2 = 1.0 - pow(b2, t);
    const double rho_inf = 2.0 / (1.0 - b2) - 1.0;
    const double rho_t = rho_inf - 2.0 * t * pow(b2, t) / bc2;
    r.bias_correction1 = bc1;
    r.lr = hp->lr;
    r.bias_correction2_sqrt = sqrt(bc2);
    r.rectification = 0.0;
    r.rectified = 0.0;
    if (rho_t > 5.0) {
        r.rectified = 1.0;
        r.rectification = sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf /
                               ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t));
    }
    return r;
}

/* neg_lr_trust = -lr * ||p|| / ||u||, set between LAMB's two passes */
static FO_HD FO_INLINE fo_lamb_step fo_lamb_scalars(double t, const fo_hparams *hp)
{
    fo_lamb_step r;
    r.bias_correction1 = hp->bias_correction ? 1.0 - pow(hp->beta1, t) : 1.0;
    r.bias_correction2 = hp->bias_correction ? 1.0 - pow(hp->beta2, t) : 1.0;
    r.neg_lr_trust = 0.0;
    return r;
}

/* first = 1 on step 1 (which only initialises v); clip = t^(1/4) */
static FO_HD FO_INLINE fo_adopt_step fo_adopt_scalars(double t, const fo_hparams *hp)
{
    fo_adopt_step r;
    (void)hp;
    r.first = t == 1.0 ? 1.0 : 0.0;
    r.clip = pow(t, 0.25);
    return r;
}

/* The step-dependent scalars of kind `kind` at step t. */
static FO_HD FO_INLINE fo_step_scalars fo_step_scalars_of(int kind, double t, const fo_hparams *hp)
{
    fo_step_scalars r;
    switch (kind) {
#define FO_STEP_CASE_(K, name, ...) case FO_KIND_##K: r.name = fo_##name##_scalars(t, hp); break;
        FO_OPTIMIZERS(FO_STEP_CASE_)
#undef FO_STEP_CASE_
    default: r.raw_[0] = 0.0; break;
    }
    return r;
}
#endif /* FUSEDOPTIM_OPTIM_MATH_SCALARS */

#ifdef FO_T
/* ---- Part 2 (per instantiation): the per-element math. ------------------ */

/* Maximum of the running max `old` and the new value `x`. Vector form:
 * torch's `maximum`, NaN if either is. Tail form: std::max(old, x), which
 * keeps `old` unless old < x. */
static FO_HD FO_INLINE FO_T FO_NAME(fo_max)(FO_T old, FO_T x, const int tail)
{
    if (tail)
        return (old < x) ? x : old;
    return (old > x || old != old) ? old : x;
}

/* torch's lerp(start, end, w): start + w*(end-start) for w < 0.5, else the
 * form anchored at `end` (accurate near w = 1): vector end + (w-1)*(end-start),
 * tail end - (end-start)*(1-w); they differ only in the sign of a zero. */
static FO_HD FO_INLINE FO_T FO_NAME(fo_lerp)(FO_T start, FO_T end, FO_T w, FO_T w_minus_1,
                                             FO_T one_minus_w, const int tail)
{
    FO_T d = end - start;
    if (w < (FO_T)0.5)
        return FO_FMA(w, d, start);
    return tail ? FO_FMA(-d, one_minus_w, end) : FO_FMA(w_minus_1, d, end);
}

/* Soft-thresholding, the proximal step of L1 weight decay with threshold
 * thr = lr * l1 >= 0: sign(w) * max(|w| - thr, 0). thr = 0 returns w
 * unchanged (signed zeros and NaN included), so loops apply it always. */
static FO_HD FO_INLINE FO_T FO_NAME(fo_prox_l1)(FO_T w, FO_T thr)
{
    /* branch-free, so the loops stay vectorized: thr = 0 keeps w as is */
    FO_T a = (w < 0 ? -w : w) - thr;
    FO_T z = w < 0 ? (FO_T)-0.0 : (FO_T)0.0;
    FO_T r = w < 0 ? -a : a;
    FO_T shrunk = (a > 0) | (a != a) ? r : z;
    return thr == 0 ? w : shrunk;
}

/* Each optimizer's step-dependent scalars, rounded to FO_T. */
#define FO_FIELD_T_(n) FO_T n;
#define FO_STEP_STRUCT_T_(K, name, ...) \
    typedef struct { FO_SCALARS_##K(FO_FIELD_T_) } FO_NAME(fo_##name##_step);
FO_OPTIMIZERS(FO_STEP_STRUCT_T_)
#undef FO_STEP_STRUCT_T_
#undef FO_FIELD_T_

/* Every scalar an update reads: the group's (from its hparams) and, in
 * `step`, the optimizer's own step-dependent ones. */
typedef struct {
    FO_T weight_decay;     /* coupled L2 coefficient                          */
    FO_T decay;            /* 1 - lr*weight_decay (decoupled)                 */
    FO_T l1_thr;           /* lr * l1 (0: no L1)                              */
    FO_T neg_lr;           /* -lr                                             */
    FO_T w1, w1_minus_1, one_minus_w1;  /* lerp weight 1-beta1 and its forms  */
    FO_T beta1, beta2, one_minus_beta2;
    FO_T eps;
    FO_T momentum, one_minus_damp;      /* SGD, RMSprop                       */
    FO_T alpha, one_minus_alpha;        /* RMSprop (alpha), Adadelta (rho)    */
    FO_T wa, wa_minus_1, one_minus_wa;  /* RMSprop's grad_avg lerp weight     */
    union {
#define FO_STEP_MEMBER_T_(K, name, ...) FO_NAME(fo_##name##_step) name;
        FO_OPTIMIZERS(FO_STEP_MEMBER_T_)
#undef FO_STEP_MEMBER_T_
    } step;
} FO_NAME(fo_scalars);

/* The group's scalars, in double and rounded once (lr: the step's). */
static FO_HD FO_INLINE void FO_NAME(fo_common_scalars)(FO_NAME(fo_scalars) *s, const fo_hparams *hp,
                                                        double lr)
{
    s->weight_decay = (FO_T)hp->weight_decay;
    s->decay = (FO_T)(1.0 - lr * hp->weight_decay);
    s->l1_thr = (FO_T)(lr * hp->l1);
    s->neg_lr = (FO_T)(-lr);
    s->w1 = (FO_T)(1.0 - hp->beta1);
    s->w1_minus_1 = s->w1 - (FO_T)1;
    s->one_minus_w1 = (FO_T)1 - s->w1;
    s->beta1 = (FO_T)hp->beta1;
    s->beta2 = (FO_T)hp->beta2;
    s->one_minus_beta2 = (FO_T)(1.0 - hp->beta2);
    s->eps = (FO_T)hp->eps;
    s->momentum = (FO_T)hp->momentum;
    s->one_minus_damp = (FO_T)(1.0 - hp->dampening);
    s->alpha = (FO_T)hp->alpha;
    s->one_minus_alpha = (FO_T)(1.0 - hp->alpha);
    s->wa = (FO_T)(1.0 - hp->alpha);
    s->wa_minus_1 = s->wa - (FO_T)1;
    s->one_minus_wa = (FO_T)1 - s->wa;
}

/* kind's step-dependent scalars, rounded once into s->step */
static FO_HD FO_INLINE void FO_NAME(fo_round_step)(FO_NAME(fo_scalars) *s, int kind,
                                                   const fo_step_scalars *d)
{
    switch (kind) {
#define FO_ROUND_(n) o->n = (FO_T)i->n;
#define FO_ROUND_CASE_(K, name, ...)                                                       \
    case FO_KIND_##K: {                                                                    \
        FO_NAME(fo_##name##_step) *o = &s->step.name;                                      \
        const fo_##name##_step *i = &d->name;                                              \
        FO_SCALARS_##K(FO_ROUND_)                                                          \
        break;                                                                             \
    }
        FO_OPTIMIZERS(FO_ROUND_CASE_)
#undef FO_ROUND_CASE_
#undef FO_ROUND_
    default: break;
    }
}

/* The weight decay every optimizer shares: coupled adds to g, decoupled
 * scales p (both before the update, as torch). */
#define FO_APPLY_WD(pv, g, s, wd_mode)                                       \
    do {                                                                      \
        if ((wd_mode) == FO_WD_COUPLED)                                       \
            (g) = FO_FMA((pv), (s)->weight_decay, (g));                       \
        else if ((wd_mode) == FO_WD_DECOUPLED)                                \
            (pv) = (pv) * (s)->decay;                                         \
    } while (0)

/* Every fo_<name>_elem takes (p, s0, s1, s2, g, scalars, wd_mode, o1, o2,
 * tail): the param and the state slots of its declaration (unused slots
 * point at a dummy), the grad, and its options (declarations.h). */
#define FO_ELEM_ARGS                                                          \
    FO_T *p, FO_T *s0, FO_T *s1, FO_T *s2, FO_T g, const FO_NAME(fo_scalars) *s, \
    const int wd_mode, const int o1, const int o2, const int tail

/* ---------------------------------------------------------------- SGD ---- */
/* s0 = momentum_buffer; o1 = momentum mode (FO_MOM_NONE, FO_MOM_FIRST:
 * buffer := grad, FO_MOM_UPDATE), o2 = nesterov */
static FO_HD FO_INLINE void FO_NAME(fo_sgd_elem)(FO_ELEM_ARGS)
{
    FO_T pv = *p;
    (void)s1; (void)s2;
    FO_APPLY_WD(pv, g, s, wd_mode);
    if (o1 != FO_MOM_NONE) {
        FO_T b = (o1 == FO_MOM_FIRST) ? g
                 : tail ? FO_FMA(*s0, s->momentum, g * s->one_minus_damp)
                        : FO_FMA(g, s->one_minus_damp, *s0 * s->momentum);
        *s0 = b;
        g = o2 ? FO_FMA(b, s->momentum, g) : b;
    }
    *p = FO_FMA(g, s->neg_lr, pv);
}

/* ------------------------------------------------------- Adam / AdamW ---- */
/* s0 = exp_avg, s1 = exp_avg_sq, s2 = max_exp_avg_sq; o1 = amsgrad */
static FO_HD FO_INLINE void FO_NAME(fo_adam_elem)(FO_ELEM_ARGS)
{
    const FO_NAME(fo_adam_step) *k = &s->step.adam;
    FO_T pv = *p;
    (void)o2;
    FO_APPLY_WD(pv, g, s, wd_mode);
    FO_T mv = FO_NAME(fo_lerp)(*s0, g, s->w1, s->w1_minus_1, s->one_minus_w1, tail);
    FO_T vv = tail ? FO_FMA(*s1, s->beta2, s->one_minus_beta2 * g * g)
                   : FO_FMA(s->one_minus_beta2 * g, g, *s1 * s->beta2);
    *s0 = mv;
    *s1 = vv;
    if (o1) {
        vv = FO_NAME(fo_max)(*s2, vv, tail);
        *s2 = vv;
    }
    FO_T denom = FO_SQRT(vv) / k->bias_correction2_sqrt + s->eps;
    *p = pv + (k->step_size * mv) / denom;
}

/* ------------------------------------------------------------ Adagrad ---- */
/* s0 = sum. Same form in torch's vector and scalar loops: sum += g*g;
 * p -= clr*g / (sqrt(sum) + eps). */
static FO_HD FO_INLINE void FO_NAME(fo_adagrad_elem)(FO_ELEM_ARGS)
{
    FO_T pv = *p;
    (void)s1; (void)s2; (void)o1; (void)o2; (void)tail;
    FO_APPLY_WD(pv, g, s, wd_mode);
    FO_T sv = FO_FMA(g, g, *s0);
    *s0 = sv;
    FO_T stdv = FO_SQRT(sv) + s->eps;
    *p = pv - (s->step.adagrad.clr * g) / stdv;
}

/* ------------------------------------------------------------ RMSprop ---- */
/* s0 = square_avg, s1 = grad_avg, s2 = momentum_buffer; o1 = centered,
 * o2 = momentum > 0. square_avg = alpha*sq + (1-alpha)*g^2; centered:
 * grad_avg = lerp(ga, g, 1-alpha), avg = sqrt(sq - ga^2); avg += eps; with
 * momentum: buf = momentum*buf + g/avg, p -= lr*buf; else p -= lr*g/avg. */
static FO_HD FO_INLINE void FO_NAME(fo_rmsprop_elem)(FO_ELEM_ARGS)
{
    FO_T pv = *p;
    (void)tail;
    FO_APPLY_WD(pv, g, s, wd_mode);
    FO_T sv = FO_FMA(s->one_minus_alpha * g, g, *s0 * s->alpha);
    *s0 = sv;
    FO_T avg;
    if (o1) {
        FO_T ga = FO_NAME(fo_lerp)(*s1, g, s->wa, s->wa_minus_1, s->one_minus_wa, 0);
        *s1 = ga;
        avg = FO_SQRT(FO_FMA(-ga, ga, sv));
    } else {
        avg = FO_SQRT(sv);
    }
    avg = avg + s->eps;
    if (o2) {
        FO_T b = FO_FMA((FO_T)1, g / avg, *s2 * s->momentum);
        *s2 = b;
        *p = FO_FMA(b, s->neg_lr, pv);
    } else {
        *p = FO_FMA(s->neg_lr, g / avg, pv);
    }
}

/* ------------------------------------------------------------- Adamax ---- */
/* s0 = exp_avg, s1 = exp_inf = max(beta2*u, |g| + eps) (NaN-propagating) */
static FO_HD FO_INLINE void FO_NAME(fo_adamax_elem)(FO_ELEM_ARGS)
{
    FO_T pv = *p;
    (void)s2; (void)o1; (void)o2; (void)tail;
    FO_APPLY_WD(pv, g, s, wd_mode);
    FO_T mv = FO_NAME(fo_lerp)(*s0, g, s->w1, s->w1_minus_1, s->one_minus_w1, 0);
    FO_T ag = (g < 0 ? -g : g) + s->eps;
    FO_T uv = FO_NAME(fo_max)(*s1 * s->beta2, ag, 0);
    *s0 = mv;
    *s1 = uv;
    *p = FO_FMA(s->step.adamax.step_size, mv / uv, pv);
}

/* -------------------------------------------------------------- NAdam ---- */
/* s0 = exp_avg, s1 = exp_avg_sq */
static FO_HD FO_INLINE void FO_NAME(fo_nadam_elem)(FO_ELEM_ARGS)
{
    const FO_NAME(fo_nadam_step) *k = &s->step.nadam;
    FO_T pv = *p;
    (void)s2; (void)o1; (void)o2; (void)tail;
    FO_APPLY_WD(pv, g, s, wd_mode);
    FO_T mv = FO_NAME(fo_lerp)(*s0, g, s->w1, s->w1_minus_1, s->one_minus_w1, 0);
    FO_T vv = FO_FMA(s->one_minus_beta2 * g, g, *s1 * s->beta2);
    *s0 = mv;
    *s1 = vv;
    FO_T denom = FO_SQRT(vv / k->bias_correction2) + s->eps;
    pv = FO_FMA(k->grad_step, g / denom, pv);
    *p = FO_FMA(k->avg_step, mv / denom, pv);
}

/* -------------------------------------------------------------- RAdam ---- */
/* s0 = exp_avg, s1 = exp_avg_sq; o1 = rectified (else the un-adapted step
 * p -= lr * m/bc1) */
static FO_HD FO_INLINE void FO_NAME(fo_radam_elem)(FO_ELEM_ARGS)
{
    const FO_NAME(fo_radam_step) *k = &s->step.radam;
    FO_T pv = *p;
    (void)s2; (void)o2; (void)tail;
    FO_APPLY_WD(pv, g, s, wd_mode);
    FO_T mv = FO_NAME(fo_lerp)(*s0, g, s->w1, s->w1_minus_1, s->one_minus_w1, 0);
    FO_T vv = FO_FMA(s->one_minus_beta2 * g, g, *s1 * s->beta2);
    *s0 = mv;
    *s1 = vv;
    FO_T upd = (mv / k->bias_correction1) * k->lr;
    if (o1)
        upd = (upd * (k->bias_correction2_sqrt / (FO_SQRT(vv) + s->eps))) * k->rectification;
    *p = pv - upd;
}

/* ----------------------------------------------------------- Adadelta ---- */
/* s0 = square_avg, s1 = acc_delta (alpha = rho):
 * sq = rho*sq + (1-rho)*g^2; delta = sqrt(acc+eps)/sqrt(sq+eps) * g;
 * acc = rho*acc + (1-rho)*delta^2; p -= lr*delta */
static FO_HD FO_INLINE void FO_NAME(fo_adadelta_elem)(FO_ELEM_ARGS)
{
    FO_T pv = *p;
    (void)s2; (void)o1; (void)o2; (void)tail;
    FO_APPLY_WD(pv, g, s, wd_mode);
    FO_T sv = FO_FMA(s->one_minus_alpha * g, g, *s0 * s->alpha);
    *s0 = sv;
    FO_T d = (FO_SQRT(*s1 + s->eps) / FO_SQRT(sv + s->eps)) * g;
    *s1 = FO_FMA(s->one_minus_alpha * d, d, *s1 * s->alpha);
    *p = FO_FMA(d, s->neg_lr, pv);
}

/* --------------------------------------------------------------- Lion ---- */
/* s0 = exp_avg. c = beta1*m + (1-beta1)*g; p -= lr*sign(c);
 * m = beta2*m + (1-beta2)*g. sign(0) = 0 as torch.sign; sign(NaN) = NaN
 * (torch.sign gives 0, which would freeze the param silently after a NaN
 * grad). */
static FO_HD FO_INLINE void FO_NAME(fo_lion_elem)(FO_ELEM_ARGS)
{
    FO_T pv = *p;
    (void)s1; (void)s2; (void)o1; (void)o2; (void)tail;
    FO_APPLY_WD(pv, g, s, wd_mode);
    FO_T mv = *s0;
    FO_T c = FO_NAME(fo_lerp)(mv, g, s->w1, s->w1_minus_1, s->one_minus_w1, 0);
    FO_T sg = c > 0 ? (FO_T)1 : (c < 0 ? (FO_T)-1 : (c != c ? c : (FO_T)0));
    *p = FO_FMA(sg, s->neg_lr, pv);
    FO_T w2 = s->one_minus_beta2;
    *s0 = FO_NAME(fo_lerp)(mv, g, w2, w2 - (FO_T)1, (FO_T)1 - w2, 0);
}

/* --------------------------------------------------------------- LAMB ---- */
/* Adam's moments, then the direction u = (m/bc1) / (sqrt(v/bc2) + eps)
 * (+ weight_decay * p: LAMB's own decay, inside the trust ratio), and
 * p -= lr * trust * u with trust = ||p|| / ||u|| per tensor. Two passes:
 * fo_lamb_moments updates m, v and returns u; fo_lamb_dir recomputes u from
 * the stored moments for the second pass. */
static FO_HD FO_INLINE FO_T FO_NAME(fo_lamb_dir)(
    FO_T pv, FO_T mv, FO_T vv, const FO_NAME(fo_scalars) *s, const int wd_in_update)
{
    const FO_NAME(fo_lamb_step) *k = &s->step.lamb;
    FO_T u = (mv / k->bias_correction1) / (FO_SQRT(vv / k->bias_correction2) + s->eps);
    return wd_in_update ? FO_FMA(s->weight_decay, pv, u) : u;
}

static FO_HD FO_INLINE FO_T FO_NAME(fo_lamb_moments)(
    FO_T pv, FO_T *m, FO_T *v, FO_T g, const FO_NAME(fo_scalars) *s, const int wd_mode)
{
    /* LAMB's decoupled decay lives in the direction; coupled L2 in g */
    if (wd_mode == FO_WD_COUPLED)
        g = FO_FMA(pv, s->weight_decay, g);
    FO_T mv = FO_NAME(fo_lerp)(*m, g, s->w1, s->w1_minus_1, s->one_minus_w1, 0);
    FO_T vv = FO_FMA(s->one_minus_beta2 * g, g, *v * s->beta2);
    *m = mv;
    *v = vv;
    return FO_NAME(fo_lamb_dir)(pv, mv, vv, s, wd_mode == FO_WD_DECOUPLED);
}

static FO_HD FO_INLINE void FO_NAME(fo_lamb_apply)(FO_T *p, FO_T u, const FO_NAME(fo_scalars) *s)
{
    *p = FO_FMA(s->step.lamb.neg_lr_trust, u, *p);
}
/* -------------------------------------------------------------- ADOPT ---- */
/* Taniguchi et al. 2024 (arXiv 2411.02853), as timm's Adopt with clipping
 * t^(1/4). s0 = exp_avg, s1 = exp_avg_sq; o1 = first step: v = g^2 only.
 * Later: n = clamp(g / max(sqrt(v), eps), -clip, clip); m = lerp(m, n,
 * 1-beta1); p -= lr*m; then v = beta2*v + (1-beta2)*g^2. Coupled decay adds
 * to g on every step; decoupled scales p from step 2 on. */
static FO_HD FO_INLINE void FO_NAME(fo_adopt_elem)(FO_ELEM_ARGS)
{
    const FO_NAME(fo_adopt_step) *k = &s->step.adopt;
    FO_T pv = *p;
    (void)s2; (void)o2; (void)tail;
    if (wd_mode == FO_WD_COUPLED)
        g = FO_FMA(pv, s->weight_decay, g);
    if (o1) {
        *s1 = FO_FMA(g, g, *s1);
        return;
    }
    if (wd_mode == FO_WD_DECOUPLED)
        pv = pv * s->decay;
    FO_T n = g / FO_NAME(fo_max)(FO_SQRT(*s1), s->eps, 0);
    n = n < -k->clip ? -k->clip : (n > k->clip ? k->clip : n);
    FO_T mv = FO_NAME(fo_lerp)(*s0, n, s->w1, s->w1_minus_1, s->one_minus_w1, 0);
    *s0 = mv;
    *p = FO_FMA(mv, s->neg_lr, pv);
    *s1 = FO_FMA(s->one_minus_beta2 * g, g, *s1 * s->beta2);
}
#endif /* FO_T */
