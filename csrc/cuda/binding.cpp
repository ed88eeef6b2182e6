// fusedoptim CUDA backend: the torch binding. Registers
//
//   fusedoptim::fused_step_(int kind, int nlists, Tensor(a!)[] tensors,
//       Tensor(b!)[] steps, float[] hparams, int[] flags, Tensor? lr,
//       Tensor? grad_scale, Tensor? found_inf) -> ()
//   fusedoptim::cuda_table_info(int kind, float[] hparams, int[] flags) -> int[]
//
// `tensors` is list-major (nlists * n): tensors[k*n + i] is list k of tensor i
// (0 param, 1 grad, 2.. the kind's state, fo_cuda.h). hparams: lr, beta1,
// beta2, eps, weight_decay, momentum, dampening, alpha, lr_decay,
// momentum_decay, l1, grad_mul (default 1); flags: wd_mode, amsgrad, nesterov, maximize,
// momentum_mode, centered, bias_correction (missing trailing entries are 0).
//
// One op for every optimizer: a new kind needs a functor in fused_kernels.cu,
// not a new schema. Registration needs no GPU (loading the library on a
// CPU-only machine with a CUDA build of torch registers the ops).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "fo_cuda.h"

namespace {

constexpr int kNumH = 12;
constexpr int kNumF = 7;

fo_cuda_args make_args(int64_t kind, at::ArrayRef<double> h, at::IntArrayRef f)
{
    TORCH_CHECK(h.size() <= static_cast<size_t>(kNumH), "fusedoptim::fused_step_: at most ", kNumH,
                " hparams, got ", h.size());
    TORCH_CHECK(f.size() <= static_cast<size_t>(kNumF), "fusedoptim::fused_step_: at most ", kNumF,
                " flags, got ", f.size());
    double hv[kNumH] = {0};
    int64_t fv[kNumF] = {0};
    for (size_t i = 0; i < h.size(); i++) hv[i] = h[i];
    for (size_t i = 0; i < f.size(); i++) fv[i] = f[i];
    fo_cuda_args a{};
    a.hp.kind = static_cast<int32_t>(kind);
    a.hp.lr = hv[0];
    a.hp.beta1 = hv[1];
    a.hp.beta2 = hv[2];
    a.hp.eps = hv[3];
    a.hp.weight_decay = hv[4];
    a.hp.momentum = hv[5];
    a.hp.dampening = hv[6];
    a.hp.alpha = hv[7];
    a.hp.lr_decay = hv[8];
    a.hp.momentum_decay = hv[9];
    a.hp.l1 = hv[10];
    a.hp.grad_mul = h.size() > 11 ? hv[11] : 1.0;
    a.hp.wd_mode = static_cast<int32_t>(fv[0]);
    a.hp.amsgrad = static_cast<int32_t>(fv[1]);
    a.hp.nesterov = static_cast<int32_t>(fv[2]);
    a.hp.maximize = static_cast<int32_t>(fv[3]);
    a.momentum_mode = static_cast<int32_t>(fv[4]);
    a.hp.centered = static_cast<int32_t>(fv[5]);
    a.hp.bias_correction = static_cast<int32_t>(fv[6]);
    return a;
}

int32_t dtype_code(at::ScalarType t)
{
    switch (t) {
    case at::kFloat: return FO_DT_F32;
    case at::kDouble: return FO_DT_F64;
    case at::kBFloat16: return FO_DT_BF16;
    case at::kHalf: return FO_DT_F16;
    default: return -1;
    }
}

const float *scalar_f32(const c10::optional<at::Tensor> &t, const char *name, const at::Device &dev)
{
    if (!t.has_value() || !t->defined()) return nullptr;
    TORCH_CHECK(t->device() == dev, "fusedoptim::fused_step_: ", name, " is on ", t->device(),
                ", the params on ", dev);
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->numel() == 1, "fusedoptim::fused_step_: ", name,
                " must be a one-element float32 tensor, got ", t->scalar_type(), " with ", t->numel(),
                " elements");
    return t->data_ptr<float>();
}

void fused_step(int64_t kind, int64_t nlists, at::TensorList tensors, at::TensorList steps,
                at::ArrayRef<double> hparams, at::IntArrayRef flags, const c10::optional<at::Tensor> &lr,
                const c10::optional<at::Tensor> &grad_scale, const c10::optional<at::Tensor> &found_inf)
{
    fo_cuda_args a = make_args(kind, hparams, flags);
    const int want = fo_cuda_nlists(&a);
    TORCH_CHECK(want >= 0, "fusedoptim::fused_step_: optimizer kind ", kind, " is not served on CUDA");
    TORCH_CHECK(nlists == want, "fusedoptim::fused_step_: kind ", kind, " with these flags takes ", want,
                " tensor lists, got ", nlists);
    TORCH_CHECK(tensors.size() % nlists == 0, "fusedoptim::fused_step_: ", tensors.size(),
                " tensors is not a multiple of ", nlists, " lists");
    const int64_t n = static_cast<int64_t>(tensors.size()) / nlists;
    const bool uses_step = fo_cuda_uses_step(&a) == 1;
    TORCH_CHECK(static_cast<int64_t>(steps.size()) == (uses_step ? n : 0), "fusedoptim::fused_step_: expected ",
                (uses_step ? n : 0), " step tensors, got ", steps.size());
    if (n == 0) return;
    TORCH_CHECK(n <= INT32_MAX, "fusedoptim::fused_step_: too many tensors");

    const at::Tensor &p0 = tensors[0];
    TORCH_CHECK(p0.is_cuda(), "fusedoptim::fused_step_: params must be CUDA tensors, got ", p0.device());
    const at::Device dev = p0.device();
    const at::ScalarType st = p0.scalar_type();
    a.dtype = dtype_code(st);
    TORCH_CHECK(a.dtype >= 0, "fusedoptim::fused_step_: unsupported dtype ", st,
                " (float32, float64, float16, bfloat16)");

    std::vector<void *> ptrs(static_cast<size_t>(nlists * n));
    std::vector<int64_t> numel(static_cast<size_t>(n));
    std::vector<float *> stp(uses_step ? static_cast<size_t>(n) : 0);
    for (int64_t i = 0; i < n; i++) {
        const at::Tensor &p = tensors[i];
        TORCH_CHECK(p.device() == dev && p.scalar_type() == st, "fusedoptim::fused_step_: tensor ", i,
                    " is ", p.scalar_type(), " on ", p.device(), "; tensor 0 is ", st, " on ", dev);
        TORCH_CHECK(p.is_non_overlapping_and_dense(), "fusedoptim::fused_step_: param ", i,
                    " is not dense (overlapping or with gaps)");
        numel[i] = p.numel();
        for (int64_t k = 0; k < nlists; k++) {
            const at::Tensor &t = tensors[k * n + i];
            TORCH_CHECK(t.device() == dev && t.scalar_type() == st, "fusedoptim::fused_step_: list ", k,
                        " tensor ", i, " is ", t.scalar_type(), " on ", t.device(), "; its param is ", st,
                        " on ", dev);
            TORCH_CHECK(t.sizes() == p.sizes() && (p.numel() <= 1 || t.strides() == p.strides()),
                        "fusedoptim::fused_step_: list ", k, " tensor ", i, " has shape ", t.sizes(),
                        " strides ", t.strides(), "; its param has shape ", p.sizes(), " strides ",
                        p.strides());
            ptrs[static_cast<size_t>(k * n + i)] = t.data_ptr();
        }
        if (uses_step) {
            const at::Tensor &s = steps[i];
            TORCH_CHECK(s.device() == dev && s.scalar_type() == at::kFloat && s.numel() == 1,
                        "fusedoptim::fused_step_: step ", i, " must be a one-element float32 tensor on ", dev,
                        ", got ", s.scalar_type(), " on ", s.device(), " with ", s.numel(), " elements");
            stp[i] = s.data_ptr<float>();
        }
    }
    if (lr.has_value() && lr->defined()) {
        const at::Tensor &t = *lr;
        TORCH_CHECK(t.numel() == 1 && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble),
                    "fusedoptim::fused_step_: a tensor lr must be one float32/float64 element");
        if (t.is_cuda()) {
            TORCH_CHECK(t.device() == dev, "fusedoptim::fused_step_: lr is on ", t.device(), ", the params on ",
                        dev);
            a.lr_ptr = t.data_ptr();
            a.lr_dtype = t.scalar_type() == at::kDouble ? FO_DT_F64 : FO_DT_F32;
        } else {
            a.hp.lr = t.item<double>();  // a CPU scalar: no device sync
        }
    }
    a.grad_scale = scalar_f32(grad_scale, "grad_scale", dev);
    a.found_inf = scalar_f32(found_inf, "found_inf", dev);

    c10::cuda::CUDAGuard guard(dev);
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream(dev.index()).stream();
    char err[256] = {0};
    const int rc = fo_cuda_step(&a, static_cast<int32_t>(n), ptrs.data(), static_cast<int32_t>(nlists),
                                uses_step ? stp.data() : nullptr, numel.data(), stream, err, sizeof(err));
    TORCH_CHECK(rc == FO_CUDA_OK, err);
}

std::vector<int64_t> table_info(int64_t kind, at::ArrayRef<double> hparams, at::IntArrayRef flags)
{
    fo_cuda_args a = make_args(kind, hparams, flags);
    TORCH_CHECK(fo_cuda_nlists(&a) >= 0, "fusedoptim::cuda_table_info: optimizer kind ", kind,
                " is not served on CUDA");
    return {fo_cuda_nlists(&a), fo_cuda_uses_step(&a), fo_cuda_max_tensors(&a), fo_cuda_chunk_size()};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fusedoptim, m)
{
    m.def("fused_step_(int kind, int nlists, Tensor(a!)[] tensors, Tensor(b!)[] steps, float[] hparams, "
          "int[] flags, Tensor? lr=None, Tensor? grad_scale=None, Tensor? found_inf=None) -> ()");
    m.def("cuda_table_info(int kind, float[] hparams, int[] flags) -> int[]", &table_info);
}

TORCH_LIBRARY_IMPL(fusedoptim, CUDA, m)
{
    m.impl("fused_step_", &fused_step);
}
