/*
 * SpinBlend: the SPIN intensity transform (offset upsampling, gated blend, power curves, instance norm,
 * sigmoid) as one op. The per-pixel math below is shared by the CUDA kernel (spinBlendKernel.cu) and the
 * CPU reference (spinBlendReference.cpp), so the reference that the tests compare with PyTorch is the same
 * code the GPU runs. The contract is in README.md and in spinrec/models/blend.py.
 */
#ifndef SPIN_BLEND_KERNEL_CUH
#define SPIN_BLEND_KERNEL_CUH

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SPIN_HD __host__ __device__ __forceinline__
#else
#define SPIN_HD inline
#endif

namespace spin
{

//! Upper bound on the number of power curves; the exponents travel by value in the kernel's parameters.
constexpr int32_t kMaxExponents = 32;

//! Threads per block of the kernel. The CPU reference splits each plane over as many lanes and merges them
//! in the kernel's order, so both reduce with the same rounding (a single running mean over all pixels
//! would drift by several ulps over a 32x100 plane).
constexpr int32_t kBlockSize = 256;
constexpr int32_t kWarpSize = 32;

//! Element type of the image input and of the output (everything else is float32).
enum class IoType : int32_t
{
    kFLOAT32 = 0,
    kFLOAT16 = 1,
};

//! Sizes of one call: image [batch, channels, height, width], offsets [batch, channels, offHeight, offWidth].
struct Shape
{
    int32_t batch;
    int32_t channels;
    int32_t height;
    int32_t width;
    int32_t offHeight;
    int32_t offWidth;
};

//! The op's attributes: the K exponents of the power curves and the instance-norm epsilon.
struct Curves
{
    int32_t count;
    float exponents[kMaxExponents];
    float eps;
};

SPIN_HD float toFloat(float v)
{
    return v;
}

SPIN_HD float toFloat(__half v)
{
    return __half2float(v);
}

template <typename T>
SPIN_HD T fromFloat(float v);

template <>
SPIN_HD float fromFloat<float>(float v)
{
    return v;
}

template <>
SPIN_HD __half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}

//! One axis of PyTorch's bilinear resize with align_corners=False: the two source taps and the weight of the
//! second. The scale is in/out in float and negative source coordinates clamp to 0, as in PyTorch.
struct Taps
{
    int32_t i0;
    int32_t i1;
    float lambda1;
};

SPIN_HD Taps sourceTaps(int32_t dst, int32_t inSize, int32_t outSize)
{
    float const scale = static_cast<float>(inSize) / static_cast<float>(outSize);
    float src = scale * (static_cast<float>(dst) + 0.5F) - 0.5F;
    src = src < 0.F ? 0.F : src;
    Taps t;
    t.i0 = static_cast<int32_t>(src);
    t.i1 = t.i0 < inSize - 1 ? t.i0 + 1 : t.i0;
    t.lambda1 = src - static_cast<float>(t.i0);
    return t;
}

//! The low-resolution offset plane (offHeight x offWidth) sampled at full-resolution pixel (y, x).
SPIN_HD float upsampledOffset(float const* plane, int32_t y, int32_t x, Shape const& s)
{
    Taps const ty = sourceTaps(y, s.offHeight, s.height);
    Taps const tx = sourceTaps(x, s.offWidth, s.width);
    float const* r0 = plane + ty.i0 * s.offWidth;
    float const* r1 = plane + ty.i1 * s.offWidth;
    float const top = (1.F - tx.lambda1) * r0[tx.i0] + tx.lambda1 * r0[tx.i1];
    float const bottom = (1.F - tx.lambda1) * r1[tx.i0] + tx.lambda1 * r1[tx.i1];
    return (1.F - ty.lambda1) * top + ty.lambda1 * bottom;
}

//! S = sum_k w_k * I^beta_k for one pixel, with I the gated blend of the image (mapped to [0, 1]) and the
//! offset, clamped to [0, 1] so that pow never sees a negative base.
SPIN_HD float curveSum(float pixel, float offset, float gate, float const* weights, Curves const& c)
{
    float intensity = (pixel + 1.F) * 0.5F;
    intensity = intensity * (1.F - gate) + offset * gate;
    intensity = fminf(fmaxf(intensity, 0.F), 1.F);
    float sum = 0.F;
    for (int32_t k = 0; k < c.count; ++k)
    {
        sum += weights[k] * powf(intensity, c.exponents[k]);
    }
    return sum;
}

//! Running mean and sum of squared deviations (Welford / Chan), merged across threads; stable when the
//! curve sum has a large mean and a small spread.
struct Moments
{
    float count;
    float mean;
    float m2;

    SPIN_HD void push(float v)
    {
        count += 1.F;
        float const delta = v - mean;
        mean += delta / count;
        m2 += delta * (v - mean);
    }

    SPIN_HD void merge(float otherCount, float otherMean, float otherM2)
    {
        float const total = count + otherCount;
        if (total == 0.F)
        {
            return;
        }
        float const delta = otherMean - mean;
        float const share = otherCount / total;
        mean += delta * share;
        m2 += otherM2 + delta * delta * count * share;
        count = total;
    }
};

//! Instance-norm scale gamma / sqrt(var + eps) from the moments (biased variance).
SPIN_HD float normScale(Moments const& m, float gamma, float eps)
{
    float const variance = m.m2 / m.count;
    return gamma / sqrtf(variance + eps);
}

//! The output value: 2 * sigmoid(normalised S) - 1; (S - mean) first, so a large mean does not cancel.
SPIN_HD float activate(float curve, float mean, float scale, float beta)
{
    float const z = (curve - mean) * scale + beta;
    return 2.F / (1.F + expf(-z)) - 1.F;
}

//! Whether a call's sizes and attributes are usable (checked on the host before any work).
inline bool validArguments(Shape const& s, Curves const* c)
{
    return c != nullptr && c->count > 0 && c->count <= kMaxExponents && c->eps >= 0.F && s.batch >= 0
        && s.channels > 0 && s.height > 0 && s.width > 0 && s.offHeight > 0 && s.offWidth > 0;
}

} // namespace spin

extern "C"
{
    //! Runs the op on the GPU, one thread block per (sample, channel) plane, on `stream`. Device pointers:
    //! image/out of `ioType`, weights [B,K], offsets [B,C,h,w], gate [B], normWeight/normBias [C] in float32.
    //! Returns a cudaError_t value (0 on success).
    int32_t spinBlendLaunch(int32_t ioType, void const* image, float const* weights, float const* offsets,
        float const* gate, float const* normWeight, float const* normBias, void* out, spin::Shape shape,
        spin::Curves const* curves, cudaStream_t stream);

    //! The same op on the CPU with the same per-pixel functions (host pointers, same layouts).
    //! Returns 0 on success, -1 on invalid arguments.
    int32_t spinBlendReference(int32_t ioType, void const* image, float const* weights, float const* offsets,
        float const* gate, float const* normWeight, float const* normBias, void* out, spin::Shape shape,
        spin::Curves const* curves);
}

#endif // SPIN_BLEND_KERNEL_CUH
