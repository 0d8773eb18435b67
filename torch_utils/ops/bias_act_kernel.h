// Shared declarations of the bias_act extension (bias_act_ext.cpp <-> bias_act_kernel.cu).
#pragma once
#include <ATen/ATen.h>

namespace qc_ops {

// What one call computes, per element z = x + b[c] (c = index along `dim`):
//   mode 0: out = clamp(f(z) * gain)                      (forward)
//   mode 1: out = g * gain * f'(z) * m(z)                 (first derivative, g = incoming grad)
//   mode 2: out = g * h * gain * f''(z) * m(z)            (second derivative)
// with m(z) = 1 where -clamp <= f(z) * gain <= clamp (or clamp < 0), else 0.
struct BiasActParams {
    int64_t numel;     // elements of x
    int64_t step;      // stride of `dim` in x's (dense) memory layout
    int64_t channels;  // x.size(dim); 0 = no bias
    int act;           // activation id, ACTIVATIONS[...].cuda_idx in bias_act.py
    int mode;          // 0, 1 or 2 (see above)
    double alpha;
    double gain;
    double clamp;      // < 0: no clamping
};

// out, x, g, h share one dense memory layout; b is contiguous [channels] or undefined; g, h may
// be undefined where the mode does not read them. Runs on x's device (CPU loop or CUDA kernel).
void bias_act_run(at::Tensor& out, const at::Tensor& x, const at::Tensor& b, const at::Tensor& g,
                  const at::Tensor& h, const BiasActParams& p);

}  // namespace qc_ops
