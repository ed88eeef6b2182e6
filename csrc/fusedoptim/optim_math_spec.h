/*
 * fusedoptim: the per-element math of every optimizer, written once.
 *
 * This file is a template: it has no include guard and is included once per
 * instantiation (scalar type x FMA mode x instruction set). It is plain C99
 * that nvcc also accepts, so the CUDA kernels include it unchanged.
 *
 * The including file defines:
 *   FO_T            the register type: float or double
 *   FO_NAME(x)      the instantiation's name for x (e.g. x##_f32_avx2)
 *   FO_FMA(a,b,c)   a*b+c: fused where the instantiation mirrors torch's
 *                   FMA-using kernels (AVX2/AVX-512, CUDA), two roundings in
 *                   the baseline one (torch's DEFAULT CPU capability)
 *   FO_SQRT(x)      square root of FO_T
 *   FO_HD           function qualifiers (empty in C, __host__ __device__ in CUDA)
 *
 * Scalars (bias corrections, step sizes) are computed in double by the caller
 * and rounded once to FO_T, as torch does, so that fp32 results are
 * bit-identical to torch's fused CPU kernels. Do not reorder an operation here
 * without re-running the parity tests: the order *is* the specification.
 *
 * `tail`: torch's fused CPU kernels run a vector loop over each tensor and a
 * scalar loop over the rest, and the two differ: the compiler contracted them
 * into FMAs differently, the scalar loop's std::max keeps the old maximum when
 * the new value is NaN, and its lerp gives +0 where the vector one gives -0.
 * Measured against torch 2.13 element by element, on every CPU capability the
 * tail is the last numel % 8 elements of each float tensor (numel % 4 of a
 * double one). Where the forms differ the spec names both; tail = 0 is the
 * vector form. Without FMA only the max and signed-zero forms differ. The CPU
 * loops apply the tail forms to float32 only, whose reference is torch's fused
 * kernel; float64's reference is torch's for-loop path (vector forms).
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

/* ---------------------------------------------------------------- SGD ---- */
typedef struct {
    FO_T gsign;          /* -1 when maximize, else 1 (exact either way)      */
    FO_T weight_decay;   /* coupled L2                                        */
    FO_T momentum;
    FO_T one_minus_damp; /* 1 - dampening                                     */
    FO_T neg_lr;         /* -lr                                               */
} FO_NAME(fo_sgd_scalars);

/* momentum_mode: FO_MOM_NONE, FO_MOM_FIRST (buffer := grad), FO_MOM_UPDATE */
static FO_HD FO_INLINE void FO_NAME(fo_sgd_elem)(
    FO_T *p, FO_T *buf, FO_T g, const FO_NAME(fo_sgd_scalars) *s,
    const int has_wd, const int momentum_mode, const int nesterov, const int tail)
{
    FO_T pv = *p;
    g = g * s->gsign;
    if (has_wd)
        g = FO_FMA(pv, s->weight_decay, g);
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
typedef struct {
    FO_T gsign;            /* -1 when maximize, else 1                       */
    FO_T weight_decay;     /* coupled L2 (Adam)                              */
    FO_T decay;            /* 1 - lr*weight_decay (decoupled, AdamW)         */
    FO_T w1, w1_minus_1;   /* lerp weight 1 - beta1, and (1 - beta1) - 1     */
    FO_T one_minus_w1;     /* 1 - (1 - beta1), rounded as torch's tail does  */
    FO_T beta2, one_minus_beta2;
    FO_T neg_step_size;    /* -lr / (1 - beta1^t)                            */
    FO_T bc2_sqrt;         /* sqrt(1 - beta2^t)                              */
    FO_T eps;
} FO_NAME(fo_adam_scalars);

/* wd_mode: FO_WD_NONE, FO_WD_COUPLED (g += wd*p), FO_WD_DECOUPLED (p *= 1-lr*wd) */
static FO_HD FO_INLINE void FO_NAME(fo_adam_elem)(
    FO_T *p, FO_T *m, FO_T *v, FO_T *vmax, FO_T g,
    const FO_NAME(fo_adam_scalars) *s, const int wd_mode, const int amsgrad, const int tail)
{
    FO_T pv = *p;
    g = g * s->gsign;
    if (wd_mode == FO_WD_COUPLED)
        g = FO_FMA(pv, s->weight_decay, g);
    else if (wd_mode == FO_WD_DECOUPLED)
        pv = pv * s->decay;
    FO_T mv = FO_NAME(fo_lerp)(*m, g, s->w1, s->w1_minus_1, s->one_minus_w1, tail);
    FO_T vv = tail ? FO_FMA(*v, s->beta2, s->one_minus_beta2 * g * g)
                   : FO_FMA(s->one_minus_beta2 * g, g, *v * s->beta2);
    *m = mv;
    *v = vv;
    if (amsgrad) {
        vv = FO_NAME(fo_max)(*vmax, vv, tail);
        *vmax = vv;
    }
    FO_T denom = FO_SQRT(vv) / s->bc2_sqrt + s->eps;
    *p = pv + (s->neg_step_size * mv) / denom;
}
