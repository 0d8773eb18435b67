// Python binding of the upfirdn2d extension: argument checks and output allocation, then
// upfirdn2d_run (upfirdn2d_kernel.cu). Loaded by torch_utils/ops/cuda_kernels.py.
#include <torch/extension.h>

#include "upfirdn2d_kernel.h"

namespace {

// One upfirdn pass with correlation filter f ([fh, fw], flipped and gain-scaled by the caller).
// The output is (H * up_y + pad_y0 + pad_y1 - fh) / down_y + 1 rows (likewise columns).
at::Tensor upfirdn2d(at::Tensor x, at::Tensor f, int64_t up_x, int64_t up_y, int64_t down_x,
                     int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1) {
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be [N, C, H, W]");
    TORCH_CHECK(x.is_floating_point(), "upfirdn2d: x must be floating point");
    TORCH_CHECK(f.dim() == 2 && f.numel() > 0, "upfirdn2d: f must be a non-empty [fh, fw] tensor");
    TORCH_CHECK(f.device() == x.device(), "upfirdn2d: f must be on the device of x");
    TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "upfirdn2d: factors must be >= 1");
    f = f.contiguous();
    qc_ops::UpFirDnParams p{};
    p.n = x.size(0);
    p.c = x.size(1);
    p.in_h = x.size(2);
    p.in_w = x.size(3);
    p.filter_h = static_cast<int>(f.size(0));
    p.filter_w = static_cast<int>(f.size(1));
    const int64_t span_h = p.in_h * up_y + pad_y0 + pad_y1 - p.filter_h;
    const int64_t span_w = p.in_w * up_x + pad_x0 + pad_x1 - p.filter_w;
    TORCH_CHECK(span_h >= 0 && span_w >= 0, "upfirdn2d: the padded input is smaller than the filter");
    p.out_h = span_h / down_y + 1;
    p.out_w = span_w / down_x + 1;
    p.up_x = static_cast<int>(up_x);
    p.up_y = static_cast<int>(up_y);
    p.down_x = static_cast<int>(down_x);
    p.down_y = static_cast<int>(down_y);
    p.pad_x0 = pad_x0;
    p.pad_y0 = pad_y0;
    at::Tensor y = at::empty({p.n, p.c, p.out_h, p.out_w}, x.options().memory_format(x.suggest_memory_format()));
    for (int d = 0; d < 4; ++d) {
        p.x_stride[d] = x.stride(d);
        p.y_stride[d] = y.stride(d);
    }
    qc_ops::upfirdn2d_run(y, x, f, p);
    return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d", &upfirdn2d, "one upfirdn2d pass with a 2-D correlation filter");
}
