// Element-wise bias + activation + gain + clamp and its first and second derivatives.
// The per-element math is one __host__ __device__ function, so the CPU loop (used only to test
// the compiled extension on machines without a GPU) and the CUDA kernel compute the same thing.
#include <cmath>

#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "bias_act_kernel.h"

namespace qc_ops {
namespace {

// Activation ids: keep in sync with KERNEL_ACT_IDS in cuda_kernels.py.
enum ActId { kLinear = 1, kRelu = 2, kLrelu = 3, kTanh = 4, kSigmoid = 5, kElu = 6, kSelu = 7,
             kSoftplus = 8, kSwish = 9 };

constexpr double kSeluScale = 1.0507009873554804934193349852946;  // Klambauer et al. 2017
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSoftplusThreshold = 20.0;                       // as torch.nn.functional.softplus

__host__ __device__ inline float  op_exp(float v)   { return expf(v); }
__host__ __device__ inline double op_exp(double v)  { return exp(v); }
__host__ __device__ inline float  op_tanh(float v)  { return tanhf(v); }
__host__ __device__ inline double op_tanh(double v) { return tanh(v); }
__host__ __device__ inline float  op_log1p(float v) { return log1pf(v); }
__host__ __device__ inline double op_log1p(double v){ return log1p(v); }

template <typename T>
struct ActValue {
    T f;   // f(z)
    T d1;  // f'(z)
    T d2;  // f''(z)
};

template <typename T>
__host__ __device__ inline T logistic(T z) { return T(1) / (T(1) + op_exp(-z)); }

// f, f', f'' of activation `act` at z. Kinks (relu, lrelu, elu, selu at 0) take the derivative
// of the branch z <= 0, like PyTorch's own backward formulas.
template <typename T>
__host__ __device__ inline ActValue<T> activation(int act, T z, T alpha) {
    ActValue<T> r{z, T(1), T(0)};
    switch (act) {
    case kRelu:
        r.f = z > T(0) ? z : T(0);
        r.d1 = z > T(0) ? T(1) : T(0);
        break;
    case kLrelu:
        r.f = z > T(0) ? z : alpha * z;
        r.d1 = z > T(0) ? T(1) : alpha;
        break;
    case kTanh: {
        T t = op_tanh(z);
        r.f = t;
        r.d1 = T(1) - t * t;
        r.d2 = T(-2) * t * (T(1) - t * t);
        break;
    }
    case kSigmoid: {
        T s = logistic(z);
        r.f = s;
        r.d1 = s * (T(1) - s);
        r.d2 = s * (T(1) - s) * (T(1) - T(2) * s);
        break;
    }
    case kElu:
    case kSelu: {
        T scale = act == kSelu ? T(kSeluScale) : T(1);
        T a = act == kSelu ? T(kSeluAlpha) : alpha;
        if (z > T(0)) {
            r.f = scale * z;
            r.d1 = scale;
            r.d2 = T(0);
        } else {
            T e = op_exp(z);
            r.f = scale * a * (e - T(1));
            r.d1 = scale * a * e;
            r.d2 = scale * a * e;
        }
        break;
    }
    case kSoftplus:
        if (z > T(kSoftplusThreshold)) {
            r.f = z;
            r.d1 = T(1);
            r.d2 = T(0);
        } else {
            T s = logistic(z);
            r.f = op_log1p(op_exp(z));
            r.d1 = s;
            r.d2 = s * (T(1) - s);
        }
        break;
    case kSwish: {
        T s = logistic(z);
        r.f = z * s;
        r.d1 = s * (T(1) + z * (T(1) - s));
        r.d2 = s * (T(1) - s) * (T(2) + z * (T(1) - T(2) * s));
        break;
    }
    default:  // kLinear
        break;
    }
    return r;
}

template <typename scalar_t>
__host__ __device__ inline scalar_t bias_act_element(const BiasActParams& p, int64_t i,
                                                     const scalar_t* x, const scalar_t* b,
                                                     const scalar_t* g, const scalar_t* h) {
    using acc_t = at::acc_type<scalar_t, true>;
    acc_t z = static_cast<acc_t>(x[i]);
    if (p.channels > 0)
        z += static_cast<acc_t>(b[(i / p.step) % p.channels]);
    const ActValue<acc_t> a = activation<acc_t>(p.act, z, static_cast<acc_t>(p.alpha));
    const acc_t gain = static_cast<acc_t>(p.gain);
    const acc_t clamp = static_cast<acc_t>(p.clamp);
    const acc_t y = a.f * gain;
    if (p.mode == 0) {
        if (p.clamp >= 0)
            return static_cast<scalar_t>(y < -clamp ? -clamp : (y > clamp ? clamp : y));
        return static_cast<scalar_t>(y);
    }
    if (p.clamp >= 0 && (y < -clamp || y > clamp))
        return static_cast<scalar_t>(0);  // clamped: no gradient (PyTorch's clamp is inclusive)
    if (p.mode == 1)
        return static_cast<scalar_t>(static_cast<acc_t>(g[i]) * gain * a.d1);
    return static_cast<scalar_t>(static_cast<acc_t>(g[i]) * static_cast<acc_t>(h[i]) * gain * a.d2);
}

template <typename scalar_t>
__global__ void bias_act_kernel(BiasActParams p, scalar_t* __restrict__ out,
                                const scalar_t* __restrict__ x, const scalar_t* __restrict__ b,
                                const scalar_t* __restrict__ g, const scalar_t* __restrict__ h) {
    const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.numel; i += stride)
        out[i] = bias_act_element<scalar_t>(p, i, x, b, g, h);
}

template <typename scalar_t>
const scalar_t* data_or_null(const at::Tensor& t) {
    return t.defined() && t.numel() > 0 ? t.data_ptr<scalar_t>() : nullptr;
}

}  // namespace

void bias_act_run(at::Tensor& out, const at::Tensor& x, const at::Tensor& b, const at::Tensor& g,
                  const at::Tensor& h, const BiasActParams& p) {
    if (p.numel == 0)
        return;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(),
                                    "bias_act", [&] {
        scalar_t* o = out.data_ptr<scalar_t>();
        const scalar_t* xp = x.data_ptr<scalar_t>();
        const scalar_t* bp = data_or_null<scalar_t>(b);
        const scalar_t* gp = data_or_null<scalar_t>(g);
        const scalar_t* hp = data_or_null<scalar_t>(h);
        if (x.is_cuda()) {
            const c10::cuda::CUDAGuard guard(x.device());
            constexpr int kThreads = 256;
            const int64_t want = (p.numel + kThreads - 1) / kThreads;
            const int blocks = static_cast<int>(want < 65536 ? want : 65536);
            bias_act_kernel<scalar_t><<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
                p, o, xp, bp, gp, hp);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
        } else {
            for (int64_t i = 0; i < p.numel; ++i)
                o[i] = bias_act_element<scalar_t>(p, i, xp, bp, gp, hp);
        }
    });
}

}  // namespace qc_ops
