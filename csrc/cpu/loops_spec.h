/*
 * CPU loops over one contiguous range of one tensor, for one instantiation
 * (FO_T x instruction set). Template: included by isa_section.h per
 * instantiation after optim_math_spec.h. FO_IS_FLOAT is 1 for the float
 * instantiation (float32, bfloat16 and float16 storage), 0 for double.
 *
 * Three layers, batching kept away from the math:
 *   core      one loop calling one optimizer's fo_<name>_elem; options reach
 *             it as literal constants through `dispatch`, so each combination
 *             is its own vectorized loop
 *   span      a range of one tensor: native storage runs `core` on the
 *             tensor's memory; bfloat16 / float16 params or state, master
 *             weights and stochastic rounding run it on float blocks on the
 *             stack (widen, update, narrow), still one pass over memory
 *   range     splits a range into torch's vector body and scalar tail
 */

#ifndef FO_CORE_ONLY
#ifndef FO_LOOPS_ONCE
#define FO_LOOPS_ONCE
/* the passes of a step */
enum { FO_PASS_MAIN = 0, FO_PASS_LAMB_A = 1, FO_PASS_LAMB_B = 2 };
/* core's kinds: the optimizer kinds plus LAMB's two passes */
#define FO_CK_LAMB_A FO_NUM_KINDS
#define FO_CK_LAMB_B (FO_NUM_KINDS + 1)
/* block of the converting path: 256 elements x 5 arrays of floats on the stack */
#define FO_CB 256
/* helpers over the declaration table (declarations.h) */
#define FO_IF_0(...)
#define FO_IF_1(...) __VA_ARGS__
#define FO_SLOT_0(u0, u1, u2) (u0)
#define FO_SLOT_1(u0, u1, u2) (u1)
#define FO_SLOT_2(u0, u1, u2) (u2)
#endif

/* The group's and the tensor's scalars, rounded once to FO_T. */
static void FO_NAME(make_scalars)(const fo_hparams *hp, const fo_tensor *t, const int ck,
                                  FO_NAME(fo_scalars) *s)
{
    FO_NAME(fo_common_scalars)(s, hp, hp->lr);
    FO_NAME(fo_round_step)(s, ck >= FO_NUM_KINDS ? FO_KIND_LAMB : ck, &t->sc);
}

/* Storage variant of core / dispatch: the element types of the param, grad
 * and state arrays (FO_LD / FO_ST in convert.h widen and narrow by type).
 * This first instantiation is the native one (FO_T everywhere, names
 * unchanged); the float instantiation re-includes this file with
 * FO_CORE_ONLY for the low-precision variants (see the end of the file). */
#define FO_PT FO_T
#define FO_GT FO_T
#define FO_SS FO_T
#define FO_SV
#define FO_HAS_TAIL FO_IS_FLOAT
#endif /* !FO_CORE_ONLY */
#define FO_VN(x) FO_CAT(FO_NAME(x), FO_SV)

/* The loop: one optimizer's fo_<name>_elem per element, over the state
 * slots a, b, c its declaration names (NULL where unused), or one of LAMB's
 * two passes (pass A: c = u out). Every memory access goes through FO_LD /
 * FO_ST. Grads are multiplied by gmul (-1 for maximize, times the clipping
 * coefficient of max_grad_norm) in registers only. (AMP's unscaling, which
 * torch's fused kernels store back into the grads, runs per block just
 * before: a conditional store in this loop would stop it vectorizing.) */
static inline __attribute__((always_inline)) void FO_VN(core)(
    const int kind, FO_PT *restrict p, FO_GT *restrict g, FO_SS *restrict a, FO_SS *restrict b,
    FO_SS *restrict c, const int64_t n, const FO_NAME(fo_scalars) *restrict s_in, const FO_T gmul,
    const int wd, const int o1, const int o2, const int tail)
{
    /* a local copy: provably not aliased by the stores below, so every scalar
     * (and the lerp's branch on its weight) is hoisted out of the loop */
    const FO_NAME(fo_scalars) s_local = *s_in;
    const FO_NAME(fo_scalars) *const s = &s_local;
    (void)o2;
    for (int64_t i = 0; i < n; i++) { /* FO_VEC core: must vectorize (scripts/check_vectorized.py) */
        FO_T pv = FO_LD(p, i);
        FO_T gv = 0;
        if (kind != FO_CK_LAMB_B)
            gv = FO_LD(g, i) * gmul;
        switch (kind) {
#define FO_CORE_CASE_(K, name, single, uses, ...)                                         \
    FO_IF_##single(case FO_KIND_##K: {                                                    \
        const int u0 = FO_SLOT_0 uses, u1 = FO_SLOT_1 uses, u2 = FO_SLOT_2 uses;          \
        FO_T x0 = u0 ? FO_LD(a, i) : (FO_T)0;                                             \
        FO_T x1 = u1 ? FO_LD(b, i) : (FO_T)0;                                             \
        FO_T x2 = u2 ? FO_LD(c, i) : (FO_T)0;                                             \
        FO_NAME(fo_##name##_elem)(&pv, &x0, &x1, &x2, gv, s, wd, o1, o2, tail);           \
        if (u0) FO_ST(a, i, x0);                                                          \
        if (u1) FO_ST(b, i, x1);                                                          \
        if (u2) FO_ST(c, i, x2);                                                          \
        break;                                                                            \
    })
        FO_OPTIMIZERS(FO_CORE_CASE_)
#undef FO_CORE_CASE_
        case FO_CK_LAMB_A: {
            FO_T mv = FO_LD(a, i), vv = FO_LD(b, i);
            FO_ST(c, i, FO_NAME(fo_lamb_moments)(pv, &mv, &vv, gv, s, wd));
            FO_ST(a, i, mv);
            FO_ST(b, i, vv);
            break;
        }
        case FO_CK_LAMB_B:
            FO_NAME(fo_lamb_apply)(&pv, FO_NAME(fo_lamb_dir)(pv, FO_LD(a, i), FO_LD(b, i), s, o1), s);
            break;
        default:
            break;
        }
        if (kind != FO_CK_LAMB_A)
            FO_ST(p, i, FO_NAME(fo_prox_l1)(pv, s->l1_thr));
    }
}

#ifndef FO_CORE_ONLY
/* Options of kind `ck` for tensor t as (wd, o1, o2): the declarations'. */
static inline void FO_NAME(options)(const int ck, const fo_hparams *hp, const fo_tensor *t,
                                    int *wd, int *o1, int *o2)
{
    *wd = (hp->weight_decay == 0.0) ? FO_WD_NONE : hp->wd_mode;
    *o1 = 0;
    *o2 = 0;
    switch (ck) {
#define FO_OPTIONS_CASE_(K, name, single, uses, O1, O2, ...)                              \
    case FO_KIND_##K: *o1 = (O1); *o2 = (O2); break;
        FO_OPTIMIZERS(FO_OPTIONS_CASE_)
#undef FO_OPTIONS_CASE_
    case FO_CK_LAMB_B: *o1 = *wd == FO_WD_DECOUPLED; *wd = FO_WD_NONE; break;
    default: break;
    }
}

#endif /* !FO_CORE_ONLY */

#define FO_C(K, W, A, B, T)                                                               \
    case ((K) * 4 + (W)) * 8 + (A) * 2 + (B):                                               \
        FO_VN(core)(K, p, g, a, b, c, n, s, gmul, W, A, B, T);                            \
        return;
#define FO_C3(K, A, B, T) FO_C(K, 0, A, B, T) FO_C(K, 1, A, B, T) FO_C(K, 2, A, B, T)
/* every (o1, o2) with o1 < n1, o2 < n2 */
#define FO_CO1_1(K, B, T) FO_C3(K, 0, B, T)
#define FO_CO1_2(K, B, T) FO_CO1_1(K, B, T) FO_C3(K, 1, B, T)
#define FO_CO1_3(K, B, T) FO_CO1_2(K, B, T) FO_C3(K, 2, B, T)
#define FO_CO2_1(K, N1, T) FO_CO1_##N1(K, 0, T)
#define FO_CO2_2(K, N1, T) FO_CO1_##N1(K, 0, T) FO_CO1_##N1(K, 1, T)
#define FO_DISPATCH_(K, name, single, uses, O1, O2, N1, N2, ...)                          \
    FO_IF_##single(FO_CO2_##N2(FO_KIND_##K, N1, 0))
#define FO_DISPATCH_TAIL_(K, name, single, uses, O1, O2, N1, N2, TAIL, ...)               \
    FO_IF_##TAIL(FO_CO2_##N2(FO_KIND_##K, N1, 1))

/* Runs `core` with the options as literal constants. The tail forms exist
 * for float only, and only where torch's fused kernel has a scalar tail that
 * differs from its vector body (the declarations' `tail`). */
/* noinline: one symbol per storage variant (scripts/check_vectorized.py) */
static __attribute__((noinline)) void FO_VN(dispatch)(const int ck, FO_PT *p, FO_GT *g, FO_SS *a, FO_SS *b, FO_SS *c,
                              const int64_t n, const FO_NAME(fo_scalars) *s, const FO_T gmul,
                              const int wd, const int o1, const int o2, const int tail)
{
    const int key = (ck * 4 + wd) * 8 + o1 * 2 + o2;
    (void)tail;
#if FO_HAS_TAIL
    if (tail) {
        switch (key) {
            FO_OPTIMIZERS(FO_DISPATCH_TAIL_)
            default: break;
        }
    }
#endif
    switch (key) {
        FO_OPTIMIZERS(FO_DISPATCH_)
        FO_C3(FO_CK_LAMB_A, 0, 0, 0)
        FO_C(FO_CK_LAMB_B, 0, 0, 0, 0) FO_C(FO_CK_LAMB_B, 0, 1, 0, 0)
        default: break;
    }
}
#undef FO_C
#undef FO_C3
#undef FO_VN
#undef FO_PT
#undef FO_GT
#undef FO_SS
#undef FO_SV
#undef FO_HAS_TAIL
#undef FO_CO1_1
#undef FO_CO1_2
#undef FO_CO1_3
#undef FO_CO2_1
#undef FO_CO2_2
#undef FO_DISPATCH_
#undef FO_DISPATCH_TAIL_

#ifndef FO_CORE_ONLY
/* AMP: grads divided by the scale (as torch's fused kernels: a division,
 * stored back). */
static void FO_NAME(unscale)(FO_T *restrict g, int64_t n, const FO_T gscale)
{
    for (int64_t i = 0; i < n; i++) /* FO_VEC */
        g[i] = g[i] / gscale;
}

/* Sum of squares in double, in a fixed order (8 independent accumulators,
 * so the loop vectorizes without reassociation). */
static double FO_NAME(sumsq)(const FO_T *x, int64_t n)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += (double)x[i + k] * (double)x[i + k];
    for (int k = 0; i < n; i++, k++)
        acc[k] += (double)x[i] * (double)x[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

#if FO_IS_FLOAT
/* storage <-> float blocks */
static inline void FO_NAME(widen)(float *dst, const void *src, int32_t dt, int64_t o, int64_t n)
{
    if (dt == FO_DT_BF16) {
        const uint16_t *x = (const uint16_t *)src + o;
        for (int64_t i = 0; i < n; i++) dst[i] = fo_bf16_to_f32(x[i]); /* FO_VEC */
    }
    else if (dt == FO_DT_F16) {
        const uint16_t *x = (const uint16_t *)src + o;
        for (int64_t i = 0; i < n; i++) dst[i] = fo_f16_to_f32(x[i]); /* FO_VEC */
    }
}

static inline void FO_NAME(narrow)(void *dst, const float *src, int32_t dt, int64_t o, int64_t n)
{
    if (dt == FO_DT_BF16) {
        uint16_t *x = (uint16_t *)dst + o;
        for (int64_t i = 0; i < n; i++) x[i] = fo_f32_to_bf16(src[i]); /* FO_VEC */
    }
    else if (dt == FO_DT_F16) {
        uint16_t *x = (uint16_t *)dst + o;
        for (int64_t i = 0; i < n; i++) x[i] = fo_f32_to_f16(src[i]); /* FO_VEC */
    }
}

static inline void FO_NAME(narrow_sr)(void *dst, const float *src, int64_t o, int64_t n,
                                      uint32_t k1, uint32_t k2)
{
    uint16_t *x = (uint16_t *)dst + o;
    for (int64_t i = 0; i < n; i++) /* FO_VEC */
        x[i] = fo_f32_to_bf16_sr(src[i], fo_rand16((uint32_t)(o + i), k1, k2));
}
#endif

/* Low-precision storage variants of core / dispatch: the loop reads and
 * writes bfloat16 / float16 arrays directly, converting in registers (one
 * pass over memory, no float blocks in between). _<p>_<s>: param+grad
 * storage and state storage; _m<g>_<s>: a float param array (master
 * weights, or a block of the param for stochastic rounding) with <g> grads. */
#if FO_IS_FLOAT
#define FO_CORE_ONLY 1
#define FO_PT fo_bf16_t
#define FO_GT fo_bf16_t
#define FO_SS fo_bf16_t
#define FO_HAS_TAIL 0
#define FO_SV _bf16_bf16
#include "loops_spec.h"
#define FO_PT fo_bf16_t
#define FO_GT fo_bf16_t
#define FO_SS float
#define FO_HAS_TAIL 0
#define FO_SV _bf16_f32
#include "loops_spec.h"
#define FO_PT float
#define FO_GT fo_bf16_t
#define FO_SS fo_bf16_t
#define FO_HAS_TAIL 0
#define FO_SV _mbf16_bf16
#include "loops_spec.h"
#define FO_PT float
#define FO_GT fo_bf16_t
#define FO_SS float
#define FO_HAS_TAIL 0
#define FO_SV _mbf16_f32
#include "loops_spec.h"
#define FO_PT fo_f16_t
#define FO_GT fo_f16_t
#define FO_SS fo_f16_t
#define FO_HAS_TAIL 0
#define FO_SV _f16_f16
#include "loops_spec.h"
#define FO_PT fo_f16_t
#define FO_GT fo_f16_t
#define FO_SS float
#define FO_HAS_TAIL 0
#define FO_SV _f16_f32
#include "loops_spec.h"
#define FO_PT float
#define FO_GT fo_f16_t
#define FO_SS fo_f16_t
#define FO_HAS_TAIL 0
#define FO_SV _mf16_f16
#include "loops_spec.h"
#define FO_PT float
#define FO_GT fo_f16_t
#define FO_SS float
#define FO_HAS_TAIL 0
#define FO_SV _mf16_f32
#include "loops_spec.h"
#undef FO_CORE_ONLY

/* A range of a bfloat16 / float16 tensor whose state is float32 or of the
 * param's dtype (not LAMB's pass A, not AMP-unscaled: those take the float
 * blocks of span). Plain storage: one loop over the whole range. Master
 * weights: the loop updates the float32 master, and each block is then
 * narrowed into the param while in L1; stochastic rounding likewise, on a
 * float block of the param. */
static void FO_NAME(span_direct)(const int ck, const fo_hparams *hp, const fo_tensor *t,
                                 int64_t b, int64_t e, const FO_NAME(fo_scalars) *s,
                                 const float gmul, const int wd, const int o1, const int o2,
                                 const int pass)
{
    const int bf = t->dtype == FO_DT_BF16, s32 = t->sdtype == FO_DT_F32;
    void *P = t->param, *G = pass == FO_PASS_LAMB_B ? NULL : t->grad;
    void *A = t->s0, *B = t->s1, *C = t->s2;
    float *M = (float *)t->master;
#define FO_OFFT(T, x, o) ((x) ? (T *)(x) + (o) : NULL)
#define FO_DIRECT(SV, PT_, GT_, SS_, pp, o, n)                                                 \
    FO_CAT(FO_NAME(dispatch), SV)(ck, (pp), FO_OFFT(GT_, G, o), FO_OFFT(SS_, A, o),            \
                                  FO_OFFT(SS_, B, o), FO_OFFT(SS_, C, o), (n), s, gmul, wd, o1, \
                                  o2, 0)
    if (!M && !t->sr) {
        if (bf && s32) FO_DIRECT(_bf16_f32, fo_bf16_t, fo_bf16_t, float, (fo_bf16_t *)P + b, b, e - b);
        else if (bf) FO_DIRECT(_bf16_bf16, fo_bf16_t, fo_bf16_t, fo_bf16_t, (fo_bf16_t *)P + b, b, e - b);
        else if (s32) FO_DIRECT(_f16_f32, fo_f16_t, fo_f16_t, float, (fo_f16_t *)P + b, b, e - b);
        else FO_DIRECT(_f16_f16, fo_f16_t, fo_f16_t, fo_f16_t, (fo_f16_t *)P + b, b, e - b);
        return;
    }
    float pb[FO_CB];
    uint32_t k1 = 0, k2 = 0;
    if (t->sr) {
        k1 = fo_hash32((uint32_t)hp->seed ^ fo_hash32((uint32_t)t->index * 0x9E3779B9u));
        k2 = fo_hash32((uint32_t)(hp->seed >> 32) + (uint32_t)t->index);
    }
    for (int64_t o = b; o < e; o += FO_CB) {
        const int64_t n = (e - o) < FO_CB ? (e - o) : FO_CB;
        float *pp = M ? M + o : pb;
        if (!M) FO_NAME(widen)(pb, P, t->dtype, o, n);
        if (bf && s32) FO_DIRECT(_mbf16_f32, float, fo_bf16_t, float, pp, o, n);
        else if (bf) FO_DIRECT(_mbf16_bf16, float, fo_bf16_t, fo_bf16_t, pp, o, n);
        else if (s32) FO_DIRECT(_mf16_f32, float, fo_f16_t, float, pp, o, n);
        else FO_DIRECT(_mf16_f16, float, fo_f16_t, fo_f16_t, pp, o, n);
        if (t->sr) FO_NAME(narrow_sr)(P, pp, o, n, k1, k2);
        else FO_NAME(narrow)(P, pp, t->dtype, o, n);
    }
#undef FO_DIRECT
#undef FO_OFFT
}
#endif /* FO_IS_FLOAT */

/* Elements [b, e) of tensor t in pass `pass`; tail = 1 for torch's
 * scalar-remainder forms. LAMB's pass A adds sum(p^2), sum(u^2) to red[0..1]. */
static void FO_NAME(span)(const fo_hparams *hp, const fo_tensor *t, int64_t b, int64_t e,
                          const int tail, const int pass, double *red)
{
    FO_NAME(fo_scalars) s;
    const int ck = pass == FO_PASS_LAMB_A ? FO_CK_LAMB_A
                   : pass == FO_PASS_LAMB_B ? FO_CK_LAMB_B : hp->kind;
    FO_NAME(make_scalars)(hp, t, ck, &s);
    int wd, o1, o2;
    FO_NAME(options)(ck, hp, t, &wd, &o1, &o2);
    const FO_T gmul = (FO_T)hp->grad_mul;
    const int unscale = hp->grad_scale != NULL && pass != FO_PASS_LAMB_B;
    const FO_T gscale = unscale ? (FO_T)*hp->grad_scale : (FO_T)1;
    FO_T *P = (FO_T *)t->param, *G = (FO_T *)t->grad;
    FO_T *A = (FO_T *)t->s0, *B = (FO_T *)t->s1, *C = (FO_T *)t->s2;
#define FO_OFF(x, o) ((x) ? (x) + (o) : NULL)
#if FO_IS_FLOAT
    const int native = t->dtype == FO_DT_F32 && t->sdtype == FO_DT_F32 && !t->master && !t->sr;
#else
    const int native = 1;
#endif
#if FO_IS_FLOAT
    if ((t->dtype == FO_DT_BF16 || t->dtype == FO_DT_F16) && pass != FO_PASS_LAMB_A && !unscale &&
        (t->sdtype == FO_DT_F32 || t->sdtype == t->dtype)) {
        FO_NAME(span_direct)(ck, hp, t, b, e, &s, gmul, wd, o1, o2, pass);
        return;
    }
#endif
    if (native && pass != FO_PASS_LAMB_A && !unscale) {
        FO_NAME(dispatch)(ck, P + b, FO_OFF(G, b), FO_OFF(A, b), FO_OFF(B, b), FO_OFF(C, b),
                          e - b, &s, gmul, wd, o1, o2, tail);
        return;
    }
    /* blocks on the stack: widen what is not float storage, update, narrow */
    FO_T pb[FO_CB], gb[FO_CB], ab[FO_CB], bb[FO_CB], cb[FO_CB];
#if FO_IS_FLOAT
    const int pconv = t->dtype != FO_DT_F32;   /* param/grad storage is bf16/f16 */
    const int sconv = t->sdtype != FO_DT_F32;
    float *M = (float *)t->master;
    uint32_t k1 = 0, k2 = 0;
    if (t->sr) {
        k1 = fo_hash32((uint32_t)hp->seed ^ fo_hash32((uint32_t)t->index * 0x9E3779B9u));
        k2 = fo_hash32((uint32_t)(hp->seed >> 32) + (uint32_t)t->index);
    }
#endif
    for (int64_t o = b; o < e; o += FO_CB) {
        const int64_t n = (e - o) < FO_CB ? (e - o) : FO_CB;
        FO_T *pp, *gp = NULL, *ap = NULL, *bp = NULL, *cp = NULL;
#if FO_IS_FLOAT
        if (M) pp = M + o;
        else if (pconv) { FO_NAME(widen)(pb, P, t->dtype, o, n); pp = pb; }
        else pp = P + o;
        if (G && pass != FO_PASS_LAMB_B) {
            if (pconv) { FO_NAME(widen)(gb, G, t->dtype, o, n); gp = gb; }
            else gp = G + o;
        }
        if (A) { if (sconv) { FO_NAME(widen)(ab, A, t->sdtype, o, n); ap = ab; } else ap = A + o; }
        if (B) { if (sconv) { FO_NAME(widen)(bb, B, t->sdtype, o, n); bp = bb; } else bp = B + o; }
        if (C && pass != FO_PASS_LAMB_A) {
            if (sconv) { FO_NAME(widen)(cb, C, t->sdtype, o, n); cp = cb; } else cp = C + o;
        }
#else
        pp = P + o;
        gp = FO_OFF(G, o);
        ap = FO_OFF(A, o);
        bp = FO_OFF(B, o);
        cp = pass == FO_PASS_LAMB_A ? NULL : FO_OFF(C, o);
        (void)pb; (void)gb; (void)ab; (void)bb;
#endif
        if (pass == FO_PASS_LAMB_A) {
            cp = cb;
            red[0] += FO_NAME(sumsq)(pp, n);
        }
        if (unscale && gp)
            FO_NAME(unscale)(gp, n, gscale);  /* in L1 now; stored back below or in place */
        FO_NAME(dispatch)(ck, pp, gp, ap, bp, cp, n, &s, gmul, wd, o1, o2, tail);
        if (pass == FO_PASS_LAMB_A)
            red[1] += FO_NAME(sumsq)(cb, n);
#if FO_IS_FLOAT
        if (unscale && pconv && gp) FO_NAME(narrow)(G, gb, t->dtype, o, n);
        if (pass != FO_PASS_LAMB_A) {
            const float *img = M ? M + o : pb;
            if (M || pconv) {
                if (t->sr) FO_NAME(narrow_sr)(P, img, o, n, k1, k2);
                else FO_NAME(narrow)(P, img, t->dtype, o, n);
            }
        }
        if (sconv) {
            if (A) FO_NAME(narrow)(A, ab, t->sdtype, o, n);
            if (B) FO_NAME(narrow)(B, bb, t->sdtype, o, n);
            if (C && pass != FO_PASS_LAMB_A) FO_NAME(narrow)(C, cb, t->sdtype, o, n);
        }
#endif
    }
#undef FO_OFF
}

/* Split [b, e) into torch's vector part and its scalar remainder (the last
 * numel % 8 elements of a float32 tensor: see the spec). float64 follows
 * torch's for-loop implementation, its reference, which has no such
 * remainder; bfloat16 / float16 take the vector forms throughout. */
static void FO_NAME(range)(const fo_hparams *hp, const fo_tensor *t, int64_t b, int64_t e,
                           const int pass, double *red)
{
    static const int tails[] = {
#define FO_TAIL_(K, name, single, uses, O1, O2, N1, N2, TAIL, ...) TAIL,
        FO_OPTIMIZERS(FO_TAIL_)
#undef FO_TAIL_
    };
    const int has_tail = FO_IS_FLOAT && t->dtype == FO_DT_F32 && !t->master && tails[hp->kind];
    const int64_t tail_start = has_tail ? t->numel - t->numel % 8 : t->numel;
    const int64_t mid = e < tail_start ? e : tail_start;
    if (b < mid)
        FO_NAME(span)(hp, t, b, mid, 0, pass, red);
    if (tail_start < e)
        FO_NAME(span)(hp, t, b > tail_start ? b : tail_start, e, 1, pass, red);
}
#endif /* !FO_CORE_ONLY */
