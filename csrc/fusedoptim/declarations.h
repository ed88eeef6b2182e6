/*
 * fusedoptim: one declaration per optimizer, and the constants every layer
 * shares (C loops, CUDA kernels, and Python through the compiled module).
 *
 * FO_OPTIMIZERS(X) lists every optimizer once. Its columns:
 *   K         the kind's name: FO_KIND_<K> (numbered in list order)
 *   name      the spec's names: fo_<name>_elem, fo_<name>_scalars,
 *             FO_SCALARS_<K> (optim_math_spec.h)
 *   single    1: one pass per step through fo_<name>_elem; 0: LAMB, whose
 *             two passes (moments + norms, then the trust-scaled update)
 *             the loops run themselves
 *   uses      (u0, u1, u2): whether state slot 0, 1, 2 is read and written,
 *             in terms of the options o1, o2 (C expressions)
 *   o1, o2    the options, from the group's hparams `hp` and the tensor `t`
 *             (after the pre-pass): literal constants in each specialized loop
 *   n1, n2    how many values o1 and o2 take (loops specialized for each)
 *   tail      1: torch's fused CPU kernel has a scalar tail with other forms
 *   keys      the per-param state in torch's creation order. A token is
 *             `key`, a scalar (the step counter, NAdam's mu_product), or
 *             `key@slot` an array the kernel reads as slot 0, 1 or 2;
 *             `?opt`: only while the group's `opt` is true (the key is then
 *             optional in a checkpoint when it is false);
 *             `=opt`: filled with the group's `opt`, `=1` with 1 (else 0);
 *             `~`: written from the grad by the first step (not filled;
 *             optional in a checkpoint)
 *   hparams   the group's options the kernel reads besides lr, weight_decay,
 *             maximize and the decay mode: `field` (same name in the group),
 *             `field=opt` (the group's `opt`), `betas` (beta1, beta2)
 *   cuda      1: served by the CUDA kernels (csrc/cuda)
 *
 * Adding an optimizer: a line here, and in optim_math_spec.h its
 * FO_SCALARS_<K> field list, fo_<name>_scalars and fo_<name>_elem; Python
 * needs a class naming its kind (and a torch-style base class for its
 * constructor and defaults).
 */
#ifndef FUSEDOPTIM_DECLARATIONS_H
#define FUSEDOPTIM_DECLARATIONS_H
#include <stdint.h>

/* clang-format off */
#define FO_OPTIMIZERS(X)                                                                          \
    X(SGD, sgd, 1, (o1 != FO_MOM_NONE, 0, 0),                                                     \
      hp->momentum == 0.0 ? FO_MOM_NONE : (t->first ? FO_MOM_FIRST : FO_MOM_UPDATE),              \
      hp->nesterov && hp->momentum != 0.0, 3, 2, 1,                                               \
      "momentum_buffer@0?momentum~", "momentum dampening nesterov", 1)                            \
    X(ADAM, adam, 1, (1, 1, o1), hp->amsgrad != 0, 0, 2, 1, 1,                                    \
      "step exp_avg@0 exp_avg_sq@1 max_exp_avg_sq@2?amsgrad", "eps betas amsgrad", 1)             \
    X(ADAGRAD, adagrad, 1, (1, 0, 0), 0, 0, 1, 1, 0,                                              \
      "step sum@0=initial_accumulator_value", "eps lr_decay", 1)                                  \
    X(RMSPROP, rmsprop, 1, (1, o1, o2), hp->centered != 0, hp->momentum > 0.0, 2, 2, 0,           \
      "step square_avg@0 momentum_buffer@2?momentum grad_avg@1?centered",                         \
      "eps momentum alpha centered", 1)                                                           \
    X(ADAMAX, adamax, 1, (1, 1, 0), 0, 0, 1, 1, 0, "step exp_avg@0 exp_inf@1", "eps betas", 1)    \
    X(NADAM, nadam, 1, (1, 1, 0), 0, 0, 1, 1, 0, "step mu_product=1 exp_avg@0 exp_avg_sq@1",      \
      "eps betas momentum_decay", 0)                                                              \
    X(RADAM, radam, 1, (1, 1, 0), t->sc.radam.rectified != 0.0, 0, 2, 1, 0,                       \
      "step exp_avg@0 exp_avg_sq@1", "eps betas", 1)                                              \
    X(ADADELTA, adadelta, 1, (1, 1, 0), 0, 0, 1, 1, 0, "step square_avg@0 acc_delta@1",           \
      "eps alpha=rho", 1)                                                                         \
    X(LION, lion, 1, (1, 0, 0), 0, 0, 1, 1, 0, "exp_avg@0", "betas", 1)                           \
    X(LAMB, lamb, 0, (1, 1, 0), 0, 0, 1, 1, 0, "step exp_avg@0 exp_avg_sq@1",                     \
      "eps betas bias_correction", 0)                                                             \
    X(ADOPT, adopt, 1, (1, 1, 0), t->sc.adopt.first != 0.0, 0, 2, 1, 0,                           \
      "step exp_avg@0 exp_avg_sq@1", "eps betas", 0)
/* clang-format on */

#define FO_KIND_ENUM_(K, ...) FO_KIND_##K,
enum { FO_OPTIMIZERS(FO_KIND_ENUM_) FO_NUM_KINDS };
#undef FO_KIND_ENUM_

/* What Python reads from the compiled module (fusedoptim._C.OPTIMIZERS). */
typedef struct {
    int32_t kind;
    const char *name;
    const char *keys;
    const char *hparams;
    int32_t cuda;
} fo_optimizer_decl;

/* storage dtypes (param, grad, state); the math runs in float for every
 * dtype but float64 */
enum { FO_DT_F32 = 0, FO_DT_F64 = 1, FO_DT_BF16 = 2, FO_DT_F16 = 3 };
/* weight decay: none, coupled L2 in the grad, decoupled (p *= 1 - lr*wd) */
enum { FO_WD_NONE = 0, FO_WD_COUPLED = 1, FO_WD_DECOUPLED = 2 };
/* SGD's momentum: none, first step (buffer := grad), update */
enum { FO_MOM_NONE = 0, FO_MOM_FIRST = 1, FO_MOM_UPDATE = 2 };

/* The hyper-parameters of one group's step, as the CPU loops and the CUDA
 * kernels both read them. */
typedef struct {
    int32_t kind;        /* FO_KIND_*                                        */
    int32_t wd_mode;     /* FO_WD_*                                          */
    int32_t amsgrad, nesterov, maximize, centered;
    int32_t bias_correction;   /* LAMB                                       */
    int32_t pad_;
    double lr, beta1, beta2, eps, weight_decay, momentum, dampening;
    double alpha;        /* RMSprop alpha, Adadelta rho                      */
    double lr_decay, momentum_decay;
    double l1;           /* L1 weight decay (proximal), 0 = off              */
    double max_grad_norm;      /* > 0: clip by the group's grad norm         */
    double clip_coef;          /* a clip coefficient computed by the caller  */
    const float *grad_scale;   /* AMP: grads /= *grad_scale (stored back)    */
    const float *found_inf;    /* AMP: the step is skipped when != 0         */
    uint64_t seed;       /* stochastic rounding: fresh per step              */
    double grad_norm;    /* out: the group's grad norm (max_grad_norm > 0)   */
    double grad_mul;     /* internal: -1 for maximize, times the clip coef   */
} fo_hparams;

#endif
