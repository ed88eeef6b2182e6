/*
 * fusedoptim: the per-element math of every optimizer, written once.
 *
 * This file is a template: it has no include guard and is included once per
 * instantiation (scalar type x FMA mode x instruction set). It is plain C99
 * that nvcc also accepts, so the CUDA kernels include it unchanged.
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

/* Every scalar an update reads; each optimizer uses its own few. */
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
    /* per tensor (step-dependent), filled from the pre-pass                  */
    FO_T c0, c1, c2, c3;
} FO_NAME(fo_scalars);

/* The weight decay every optimizer shares: coupled adds to g, decoupled
 * scales p (both before the update, as torch). */
#define FO_APPLY_WD(pv, g, s, wd_mode)                                       \
    do {                                                                      \
        if ((wd_mode) == FO_WD_COUPLED)                                       \
            (g) = FO_FMA((pv), (s)->weight_decay, (g));                       \
        else if ((wd_mode) == FO_WD_DECOUPLED)                                \
            (pv) = (pv) * (s)->decay;                                         \
    } while (0)

/* ---------------------------------------------------------------- SGD ---- */
/* momentum_mode: FO_MOM_NONE, FO_MOM_FIRST (buffer := grad), FO_MOM_UPDATE */
static FO_HD FO_INLINE void FO_NAME(fo_sgd_elem)(
    FO_T *p, FO_T *buf, FO_T g, const FO_NAME(fo_scalars) *s,
    const int wd_mode, const int momentum_mode, const int nesterov, const int tail)
{
    FO_T pv = *p;
    FO_APPLY_WD(pv, g, s, wd_mode);
    if (momentum_mode != FO_MOM_NONE) {
        FO_T b = (momentum_mode == FO_MOM_FIRST) ? g
                 : tail ? FO_FMA(*buf, s->momentum, g * s->one_minus_damp)
                        : FO_FMA(g, s->one_minus_damp, *buf * s->momentum);
        *buf = b;
        g = nesterov ? FO_FMA(b, s->momentum, g) : b;
    }
    *p = FO_FMA(g, s->neg_lr, pv);
}

/* ------------------------------------------------------- Adam / AdamW ---- */
/* c0 = -lr / (1 - beta1^t), c1 = sqrt(1 - beta2^t) */
static FO_HD FO_INLINE void FO_NAME(fo_adam_elem)(
    FO_T *p, FO_T *m, FO_T *v, FO_T *vmax, FO_T g,
    const FO_NAME(fo_scalars) *s, const int wd_mode, const int amsgrad, const int tail)
{
    FO_T pv = *p;
    FO_APPLY_WD(pv, g, s, wd_mode);
    FO_T mv = FO_NAME(fo_lerp)(*m, g, s->w1, s->w1_minus_1, s->one_minus_w1, tail);
    FO_T vv = tail ? FO_FMA(*v, s->beta2, s->one_minus_beta2 * g * g)
                   : FO_FMA(s->one_minus_beta2 * g, g, *v * s->beta2);
    *m = mv;
    *v = vv;
    if (amsgrad) {
        vv = FO_NAME(fo_max)(*vmax, vv, tail);
        *vmax = vv;
    }
    FO_T denom = FO_SQRT(vv) / s->c1 + s->eps;
    *p = pv + (s->c0 * mv) / denom;
}

/* ------------------------------------------------------------ Adagrad ---- */
/* c0 = lr / (1 + (t-1) * lr_decay). Same form in torch's vector and scalar
 * loops: sum += g*g; p -= clr*g / (sqrt(sum) + eps). */
static FO_HD FO_INLINE void FO_NAME(fo_adagrad_elem)(
    FO_T *p, FO_T *sum, FO_T g, const FO_NAME(fo_scalars) *s, const int wd_mode)
{
    FO_T pv = *p;
    FO_APPLY_WD(pv, g, s, wd_mode);
    FO_T sv = FO_FMA(g, g, *sum);
    *sum = sv;
    FO_T stdv = FO_SQRT(sv) + s->eps;
    *p = pv - (s->c0 * g) / stdv;
}

/* ------------------------------------------------------------ RMSprop ---- */
/* square_avg = alpha*sq + (1-alpha)*g^2; centered: grad_avg = lerp(ga, g,
 * 1-alpha), avg = sqrt(sq - ga^2); avg += eps; with momentum:
 * buf = momentum*buf + g/avg, p -= lr*buf; else p -= lr*g/avg. */
static FO_HD FO_INLINE void FO_NAME(fo_rmsprop_elem)(
    FO_T *p, FO_T *sq, FO_T *gavg, FO_T *buf, FO_T g, const FO_NAME(fo_scalars) *s,
    const int wd_mode, const int centered, const int has_momentum)
{
    FO_T pv = *p;
    FO_APPLY_WD(pv, g, s, wd_mode);
    FO_T sv = FO_FMA(s->one_minus_alpha * g, g, *sq * s->alpha);
    *sq = sv;
    FO_T avg;
    if (centered) {
        FO_T ga = FO_NAME(fo_lerp)(*gavg, g, s->wa, s->wa_minus_1, s->one_minus_wa, 0);
        *gavg = ga;
        avg = FO_SQRT(FO_FMA(-ga, ga, sv));
    } else {
        avg = FO_SQRT(sv);
    }
    avg = avg + s->eps;
    if (has_momentum) {
        FO_T b = FO_FMA((FO_T)1, g / avg, *buf * s->momentum);
        *buf = b;
        *p = FO_FMA(b, s->neg_lr, pv);
    } else {
        *p = FO_FMA(s->neg_lr, g / avg, pv);
    }
}

/* ------------------------------------------------------------- Adamax ---- */
/* c0 = -lr / (1 - beta1^t); exp_inf = max(beta2*u, |g| + eps) (NaN-propagating) */
static FO_HD FO_INLINE void FO_NAME(fo_adamax_elem)(
    FO_T *p, FO_T *m, FO_T *u, FO_T g, const FO_NAME(fo_scalars) *s, const int wd_mode)
{
    FO_T pv = *p;
    FO_APPLY_WD(pv, g, s, wd_mode);
    FO_T mv = FO_NAME(fo_lerp)(*m, g, s->w1, s->w1_minus_1, s->one_minus_w1, 0);
    FO_T ag = (g < 0 ? -g : g) + s->eps;
    FO_T uv = FO_NAME(fo_max)(*u * s->beta2, ag, 0);
    *m = mv;
    *u = uv;
    *p = FO_FMA(s->c0, mv / uv, pv);
}

/* -------------------------------------------------------------- NAdam ---- */
/* c0 = -lr*(1-mu_t)/(1-prod mu), c1 = -lr*mu_{t+1}/(1-prod mu * mu_{t+1}),
 * c2 = 1 - beta2^t */
static FO_HD FO_INLINE void FO_NAME(fo_nadam_elem)(
    FO_T *p, FO_T *m, FO_T *v, FO_T g, const FO_NAME(fo_scalars) *s, const int wd_mode)
{
    FO_T pv = *p;
    FO_APPLY_WD(pv, g, s, wd_mode);
    FO_T mv = FO_NAME(fo_lerp)(*m, g, s->w1, s->w1_minus_1, s->one_minus_w1, 0);
    FO_T vv = FO_FMA(s->one_minus_beta2 * g, g, *v * s->beta2);
    *m = mv;
    *v = vv;
    FO_T denom = FO_SQRT(vv / s->c2) + s->eps;
    pv = FO_FMA(s->c0, g / denom, pv);
    *p = FO_FMA(s->c1, mv / denom, pv);
}

/* -------------------------------------------------------------- RAdam ---- */
/* c0 = 1 - beta1^t, c1 = lr, c2 = sqrt(1 - beta2^t), c3 = rectification;
 * rect = 0: the un-adapted step p -= lr * m/bc1 */
static FO_HD FO_INLINE void FO_NAME(fo_radam_elem)(
    FO_T *p, FO_T *m, FO_T *v, FO_T g, const FO_NAME(fo_scalars) *s, const int wd_mode,
    const int rect)
{
    FO_T pv = *p;
    FO_APPLY_WD(pv, g, s, wd_mode);
    FO_T mv = FO_NAME(fo_lerp)(*m, g, s->w1, s->w1_minus_1, s->one_minus_w1, 0);
    FO_T vv = FO_FMA(s->one_minus_beta2 * g, g, *v * s->beta2);
    *m = mv;
    *v = vv;
    FO_T upd = (mv / s->c0) * s->c1;
    if (rect)
        upd = (upd * (s->c2 / (FO_SQRT(vv) + s->eps))) * s->c3;
    *p = pv - upd;
}

/* ----------------------------------------------------------- Adadelta ---- */
/* sq = rho*sq + (1-rho)*g^2; delta = sqrt(acc+eps)/sqrt(sq+eps) * g;
 * acc = rho*acc + (1-rho)*delta^2; p -= lr*delta  (alpha = rho) */
static FO_HD FO_INLINE void FO_NAME(fo_adadelta_elem)(
    FO_T *p, FO_T *sq, FO_T *acc, FO_T g, const FO_NAME(fo_scalars) *s, const int wd_mode)
{
    FO_T pv = *p;
    FO_APPLY_WD(pv, g, s, wd_mode);
    FO_T sv = FO_FMA(s->one_minus_alpha * g, g, *sq * s->alpha);
    *sq = sv;
    FO_T d = (FO_SQRT(*acc + s->eps) / FO_SQRT(sv + s->eps)) * g;
    *acc = FO_FMA(s->one_minus_alpha * d, d, *acc * s->alpha);
    *p = FO_FMA(d, s->neg_lr, pv);
}

/* --------------------------------------------------------------- Lion ---- */
/* c = beta1*m + (1-beta1)*g; p -= lr*sign(c); m = beta2*m + (1-beta2)*g.
 * sign(0) = 0 as torch.sign; sign(NaN) = NaN (torch.sign gives 0, which
 * would freeze the param silently after a NaN grad). */
static FO_HD FO_INLINE void FO_NAME(fo_lion_elem)(
    FO_T *p, FO_T *m, FO_T g, const FO_NAME(fo_scalars) *s, const int wd_mode)
{
    FO_T pv = *p;
    FO_APPLY_WD(pv, g, s, wd_mode);
    FO_T mv = *m;
    FO_T c = FO_NAME(fo_lerp)(mv, g, s->w1, s->w1_minus_1, s->one_minus_w1, 0);
    FO_T sg = c > 0 ? (FO_T)1 : (c < 0 ? (FO_T)-1 : (c != c ? c : (FO_T)0));
    *p = FO_FMA(sg, s->neg_lr, pv);
    FO_T w2 = s->one_minus_beta2;
    *m = FO_NAME(fo_lerp)(mv, g, w2, w2 - (FO_T)1, (FO_T)1 - w2, 0);
}

/* --------------------------------------------------------------- LAMB ---- */
/* Adam's moments, then the direction u = (m/bc1) / (sqrt(v/bc2) + eps)
 * (+ weight_decay * p: LAMB's own decay, inside the trust ratio), and
 * p -= lr * trust * u with trust = ||p|| / ||u|| per tensor. Two passes:
 * fo_lamb_moments updates m, v and returns u; fo_lamb_dir recomputes u from
 * the stored moments for the second pass. c0 = 1 - beta1^t, c1 = 1 - beta2^t */
static FO_HD FO_INLINE FO_T FO_NAME(fo_lamb_dir)(
    FO_T pv, FO_T mv, FO_T vv, const FO_NAME(fo_scalars) *s, const int wd_in_update)
{
    FO_T u = (mv / s->c0) / (FO_SQRT(vv / s->c1) + s->eps);
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

/* c2 = -lr * trust */
static FO_HD FO_INLINE void FO_NAME(fo_lamb_apply)(FO_T *p, FO_T u, const FO_NAME(fo_scalars) *s)
{
    *p = FO_FMA(s->c2, u, *p);
}
