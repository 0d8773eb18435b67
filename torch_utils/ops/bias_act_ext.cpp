// Python binding of the bias_act extension: argument checks and memory layout, then
// bias_act_run (bias_act_kernel.cu). Loaded by torch_utils/ops/cuda_kernels.py.
#include <torch/extension.h>

#include "bias_act_kernel.h"

namespace {

// `t` in the same memory layout (strides) as `like`, or undefined when `t` is empty.
at::Tensor same_layout(const at::Tensor& t, const at::Tensor& like, const char* name) {
    if (!t.defined() || t.numel() == 0)
        return at::Tensor();
    TORCH_CHECK(t.sizes() == like.sizes(), "bias_act: ", name, " must have the shape of x");
    TORCH_CHECK(t.device() == like.device() && t.scalar_type() == like.scalar_type(),
                "bias_act: ", name, " must have the device and dtype of x");
    if (t.strides() == like.strides())
        return t;
    return at::empty_like(like).copy_(t);
}

// x + b along `dim`, activation `act`, times gain, clamped; mode 1/2 give the derivatives
// (see BiasActParams). b, g, h: empty tensors when absent.
at::Tensor bias_act(at::Tensor x, at::Tensor b, at::Tensor g, at::Tensor h, int64_t dim, int64_t act,
                    int64_t mode, double alpha, double gain, double clamp) {
    TORCH_CHECK(x.is_floating_point(), "bias_act: x must be floating point");
    TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim out of range");
    TORCH_CHECK(mode >= 0 && mode <= 2, "bias_act: mode must be 0, 1 or 2");
    TORCH_CHECK(act >= 1 && act <= 9, "bias_act: unknown activation id ", act);
    if (!x.is_non_overlapping_and_dense())
        x = x.contiguous();
    qc_ops::BiasActParams p{};
    p.numel = x.numel();
    p.channels = 0;
    p.step = 1;
    if (b.defined() && b.numel() > 0) {
        TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(dim), "bias_act: b must be [x.shape[dim]]");
        TORCH_CHECK(b.device() == x.device() && b.scalar_type() == x.scalar_type(),
                    "bias_act: b must have the device and dtype of x");
        b = b.contiguous();
        p.channels = x.size(dim);
        p.step = x.stride(dim);
    }
    g = same_layout(g, x, "g");
    h = same_layout(h, x, "h");
    TORCH_CHECK(mode == 0 || g.defined() || p.numel == 0, "bias_act: mode ", mode, " needs g");
    TORCH_CHECK(mode != 2 || h.defined() || p.numel == 0, "bias_act: mode 2 needs h");
    p.act = static_cast<int>(act);
    p.mode = static_cast<int>(mode);
    p.alpha = alpha;
    p.gain = gain;
    p.clamp = clamp;
    at::Tensor out = at::empty_like(x);  // keeps x's dense layout
    qc_ops::bias_act_run(out, x, b, g, h, p);
    return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("bias_act", &bias_act, "bias + activation + gain + clamp, or its 1st/2nd derivative");
}
