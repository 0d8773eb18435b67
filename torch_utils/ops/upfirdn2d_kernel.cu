// upfirdn2d: zero-insertion upsampling, padding, FIR correlation and subsampling in one pass.
// Each output pixel visits only the filter taps that land on real (not inserted) input pixels,
// i.e. every up-th tap. The per-pixel function is __host__ __device__ so the CPU loop (used only
// to test the compiled extension without a GPU) and the CUDA kernel compute the same thing.
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "upfirdn2d_kernel.h"

namespace qc_ops {
namespace {

// Smallest k >= 0 with (m + k) divisible by `up` (up >= 1).
__host__ __device__ inline int64_t first_aligned_tap(int64_t m, int up) {
    int64_t r = (-m) % up;
    return r < 0 ? r + up : r;
}

// Output pixel number `i` in [N, C, out_h, out_w] order.
template <typename scalar_t, typename acc_t>
__host__ __device__ inline void upfirdn_pixel(const UpFirDnParams& p, int64_t i, scalar_t* y,
                                              const scalar_t* x, const acc_t* f) {
    const int64_t ox = i % p.out_w;
    const int64_t oy = (i / p.out_w) % p.out_h;
    const int64_t nc = i / (p.out_w * p.out_h);
    const int64_t c = nc % p.c;
    const int64_t n = nc / p.c;
    const scalar_t* xp = x + n * p.x_stride[0] + c * p.x_stride[1];

    // Position of tap 0 in the zero-inserted (unpadded) signal: m = o * down + k - pad.
    const int64_t my = oy * p.down_y - p.pad_y0;
    const int64_t mx = ox * p.down_x - p.pad_x0;
    const int64_t ky0 = first_aligned_tap(my, p.up_y);
    const int64_t kx0 = first_aligned_tap(mx, p.up_x);

    acc_t sum = acc_t(0);
    for (int64_t ky = ky0; ky < p.filter_h; ky += p.up_y) {
        const int64_t iy = (my + ky) / p.up_y;  // exact: my + ky is a multiple of up_y
        if (iy < 0)
            continue;
        if (iy >= p.in_h)
            break;
        const scalar_t* row = xp + iy * p.x_stride[2];
        const acc_t* frow = f + ky * p.filter_w;
        for (int64_t kx = kx0; kx < p.filter_w; kx += p.up_x) {
            const int64_t ix = (mx + kx) / p.up_x;
            if (ix < 0)
                continue;
            if (ix >= p.in_w)
                break;
            sum += static_cast<acc_t>(row[ix * p.x_stride[3]]) * frow[kx];
        }
    }
    y[n * p.y_stride[0] + c * p.y_stride[1] + oy * p.y_stride[2] + ox * p.y_stride[3]] =
        static_cast<scalar_t>(sum);
}

template <typename scalar_t, typename acc_t>
__global__ void upfirdn2d_kernel(UpFirDnParams p, int64_t total, scalar_t* __restrict__ y,
                                 const scalar_t* __restrict__ x, const acc_t* __restrict__ f) {
    const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride)
        upfirdn_pixel<scalar_t, acc_t>(p, i, y, x, f);
}

}  // namespace

void upfirdn2d_run(at::Tensor& y, const at::Tensor& x, const at::Tensor& f, const UpFirDnParams& p) {
    const int64_t total = p.n * p.c * p.out_h * p.out_w;
    if (total == 0)
        return;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(),
                                    "upfirdn2d", [&] {
        using acc_t = at::acc_type<scalar_t, true>;
        TORCH_CHECK(f.scalar_type() == c10::CppTypeToScalarType<acc_t>::value,
                    "upfirdn2d: filter dtype must be the accumulation type of x");
        scalar_t* yp = y.data_ptr<scalar_t>();
        const scalar_t* xp = x.data_ptr<scalar_t>();
        const acc_t* fp = f.data_ptr<acc_t>();
        if (x.is_cuda()) {
            const c10::cuda::CUDAGuard guard(x.device());
            constexpr int kThreads = 256;
            const int64_t want = (total + kThreads - 1) / kThreads;
            const int blocks = static_cast<int>(want < 65536 ? want : 65536);
            upfirdn2d_kernel<scalar_t, acc_t><<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
                p, total, yp, xp, fp);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
        } else {
            for (int64_t i = 0; i < total; ++i)
                upfirdn_pixel<scalar_t, acc_t>(p, i, yp, xp, fp);
        }
    });
}

}  // namespace qc_ops
