/*
 * CPU loops over one contiguous range of one tensor, for one instantiation
 * (FO_T x instruction set). Template: included by kernels.c per instantiation
 * after optim_math_spec.h. Option flags reach the loops as literal constants
 * through the switches below, so each combination is its own vectorized loop.
 */

static inline __attribute__((always_inline)) void FO_NAME(sgd_loop)(
    FO_T *restrict p, const FO_T *restrict g, FO_T *restrict buf, int64_t n,
    const FO_NAME(fo_sgd_scalars) *s, const int has_wd, const int mode, const int nesterov,
    const int tail)
{
    FO_T dummy = 0;
    for (int64_t i = 0; i < n; i++) {
        FO_T pv = p[i];
        FO_T bv = (mode == FO_MOM_UPDATE) ? buf[i] : (FO_T)0;
        FO_NAME(fo_sgd_elem)(&pv, mode != FO_MOM_NONE ? &bv : &dummy, g[i], s, has_wd, mode, nesterov, tail);
        p[i] = pv;
        if (mode != FO_MOM_NONE)
            buf[i] = bv;
    }
}

/* Elements [b, e) of tensor t; tail = 1 for torch's scalar-remainder form. */
static void FO_NAME(sgd_span)(const fo_hparams *hp, const fo_tensor *t, int64_t b, int64_t e,
                              const int tail)
{
    FO_NAME(fo_sgd_scalars) s;
    s.gsign = hp->maximize ? (FO_T)-1 : (FO_T)1;
    s.weight_decay = (FO_T)hp->weight_decay;
    s.momentum = (FO_T)hp->momentum;
    s.one_minus_damp = (FO_T)(1.0 - hp->dampening);
    s.neg_lr = (FO_T)(-hp->lr);
    FO_T *p = (FO_T *)t->param + b;
    const FO_T *g = (const FO_T *)t->grad + b;
    FO_T *buf = t->s0 ? (FO_T *)t->s0 + b : NULL;
    const int64_t n = e - b;
    const int has_wd = hp->weight_decay != 0.0;
    const int mode = hp->momentum == 0.0 ? FO_MOM_NONE : (t->first ? FO_MOM_FIRST : FO_MOM_UPDATE);
    const int nest = hp->nesterov && mode != FO_MOM_NONE;
#define FO_SGD_CASE(W, M, N)                                                        \
    case (W) * 6 + (M) * 2 + (N):                                                   \
        if (tail) FO_NAME(sgd_loop)(p, g, buf, n, &s, W, M, N, 1);                  \
        else      FO_NAME(sgd_loop)(p, g, buf, n, &s, W, M, N, 0);                  \
        break;
    switch (has_wd * 6 + mode * 2 + nest) {
        FO_SGD_CASE(0, 0, 0) FO_SGD_CASE(0, 1, 0) FO_SGD_CASE(0, 1, 1)
        FO_SGD_CASE(0, 2, 0) FO_SGD_CASE(0, 2, 1)
        FO_SGD_CASE(1, 0, 0) FO_SGD_CASE(1, 1, 0) FO_SGD_CASE(1, 1, 1)
        FO_SGD_CASE(1, 2, 0) FO_SGD_CASE(1, 2, 1)
        default: break;
    }
#undef FO_SGD_CASE
}

static inline __attribute__((always_inline)) void FO_NAME(adam_loop)(
    FO_T *restrict p, const FO_T *restrict g, FO_T *restrict m, FO_T *restrict v,
    FO_T *restrict vmax, int64_t n, const FO_NAME(fo_adam_scalars) *s,
    const int wd_mode, const int amsgrad, const int tail)
{
    for (int64_t i = 0; i < n; i++) {
        FO_T pv = p[i], mv = m[i], vv = v[i];
        FO_T xv = amsgrad ? vmax[i] : (FO_T)0;
        FO_NAME(fo_adam_elem)(&pv, &mv, &vv, &xv, g[i], s, wd_mode, amsgrad, tail);
        p[i] = pv;
        m[i] = mv;
        v[i] = vv;
        if (amsgrad)
            vmax[i] = xv;
    }
}

static void FO_NAME(adam_span)(const fo_hparams *hp, const fo_tensor *t, int64_t b, int64_t e,
                               const int tail)
{
    FO_NAME(fo_adam_scalars) s;
    s.gsign = hp->maximize ? (FO_T)-1 : (FO_T)1;
    s.weight_decay = (FO_T)hp->weight_decay;
    s.decay = (FO_T)(1.0 - hp->lr * hp->weight_decay);
    s.w1 = (FO_T)(1.0 - hp->beta1);
    s.w1_minus_1 = s.w1 - (FO_T)1;
    s.one_minus_w1 = (FO_T)1 - s.w1;
    s.beta2 = (FO_T)hp->beta2;
    s.one_minus_beta2 = (FO_T)(1.0 - hp->beta2);
    s.neg_step_size = (FO_T)(-t->sc0);
    s.bc2_sqrt = (FO_T)t->sc1;
    s.eps = (FO_T)hp->eps;
    FO_T *p = (FO_T *)t->param + b;
    const FO_T *g = (const FO_T *)t->grad + b;
    FO_T *m = (FO_T *)t->s0 + b;
    FO_T *v = (FO_T *)t->s1 + b;
    FO_T *x = t->s2 ? (FO_T *)t->s2 + b : NULL;
    const int64_t n = e - b;
    const int wd = (hp->wd_mode == FO_WD_NONE || hp->weight_decay == 0.0) ? FO_WD_NONE : hp->wd_mode;
    const int ams = hp->amsgrad != 0;
#define FO_ADAM_CASE(W, A)                                                          \
    case (W) * 2 + (A):                                                             \
        if (tail) FO_NAME(adam_loop)(p, g, m, v, x, n, &s, W, A, 1);                \
        else      FO_NAME(adam_loop)(p, g, m, v, x, n, &s, W, A, 0);                \
        break;
    switch (wd * 2 + ams) {
        FO_ADAM_CASE(0, 0) FO_ADAM_CASE(0, 1) FO_ADAM_CASE(1, 0)
        FO_ADAM_CASE(1, 1) FO_ADAM_CASE(2, 0) FO_ADAM_CASE(2, 1)
        default: break;
    }
#undef FO_ADAM_CASE
}

/* Split [b, e) into torch's vector part and its scalar remainder (the last
 * numel % 8 elements of a float tensor: see the spec). float64 follows torch's
 * for-loop implementation, its reference, which has no such remainder: NaN
 * propagates through amsgrad's maximum everywhere. */
static void FO_NAME(range)(const fo_hparams *hp, const fo_tensor *t, int64_t b, int64_t e)
{
    const int64_t vec = sizeof(FO_T) == 4 ? 8 : 1;
    const int64_t tail_start = t->numel - t->numel % vec;
    const int64_t mid = e < tail_start ? e : tail_start;
    const int sgd = hp->kind == FO_KIND_SGD;
    if (b < mid) {
        if (sgd) FO_NAME(sgd_span)(hp, t, b, mid, 0);
        else     FO_NAME(adam_span)(hp, t, b, mid, 0);
    }
    if (tail_start < e) {
        int64_t tb = b > tail_start ? b : tail_start;
        if (sgd) FO_NAME(sgd_span)(hp, t, tb, e, 1);
        else     FO_NAME(adam_span)(hp, t, tb, e, 1);
    }
}
