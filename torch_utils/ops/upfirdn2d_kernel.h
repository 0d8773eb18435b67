// Shared declarations of the upfirdn2d extension (upfirdn2d_ext.cpp <-> upfirdn2d_kernel.cu).
#pragma once
#include <ATen/ATen.h>

namespace qc_ops {

// One 2-D upfirdn pass: y[oy, ox] = sum_{ky, kx} f[ky, kx] * u[oy * down_y + ky, ox * down_x + kx]
// where u is x upsampled by zero insertion (up - 1 zeros after every pixel) and padded by
// (pad_x0, pad_y0) in front (negative = cropped). f is the correlation filter, already flipped
// and scaled by the gain.
struct UpFirDnParams {
    int64_t n, c, in_h, in_w, out_h, out_w;
    int64_t x_stride[4];    // x strides, [N, C, H, W] order (any dense or strided layout)
    int64_t y_stride[4];    // output strides
    int up_x, up_y, down_x, down_y;
    int64_t pad_x0, pad_y0;
    int filter_h, filter_w;
};

// x: [N, C, H, W] any floating dtype; f: [fh, fw] contiguous, float32 (float64 when x is
// float64); y: preallocated output. Runs on x's device (CPU loop or CUDA kernel).
void upfirdn2d_run(at::Tensor& y, const at::Tensor& x, const at::Tensor& f, const UpFirDnParams& p);

}  // namespace qc_ops
