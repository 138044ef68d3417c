/*
 * CPU reference of the SpinBlend kernel: the same per-pixel functions (spinBlendKernel.cuh), run plane by
 * plane with one sequential reduction. The tests compare it with PyTorch, and ONNX Runtime uses it to run the
 * plugin graph on machines without a GPU (spinrec/ort_spin_blend.py). Compiles with nvcc or a host compiler.
 */
#include "spinBlendKernel.cuh"

namespace
{

//! The kernel's reduction order: lane p % kBlockSize takes pixel p, each warp folds by halving distances
//! (the __shfl_down_sync tree), then warp 0..n-1 results are merged in order.
spin::Moments blockMerge(spin::Moments (&lanes)[spin::kBlockSize])
{
    for (int32_t warp = 0; warp < spin::kBlockSize; warp += spin::kWarpSize)
    {
        for (int32_t delta = spin::kWarpSize / 2; delta > 0; delta /= 2)
        {
            for (int32_t lane = 0; lane < delta; ++lane)
            {
                spin::Moments const& other = lanes[warp + lane + delta];
                lanes[warp + lane].merge(other.count, other.mean, other.m2);
            }
        }
    }
    spin::Moments total = lanes[0];
    for (int32_t warp = spin::kWarpSize; warp < spin::kBlockSize; warp += spin::kWarpSize)
    {
        total.merge(lanes[warp].count, lanes[warp].mean, lanes[warp].m2);
    }
    return total;
}

template <typename T>
void referencePlanes(T const* image, float const* weights, float const* offsets, float const* gate,
    float const* normWeight, float const* normBias, T* out, spin::Shape const& shape, spin::Curves const& curves)
{
    int64_t const pixels = static_cast<int64_t>(shape.height) * shape.width;
    int64_t const offPixels = static_cast<int64_t>(shape.offHeight) * shape.offWidth;
    for (int32_t sample = 0; sample < shape.batch; ++sample)
    {
        float const* sampleWeights = weights + static_cast<int64_t>(sample) * curves.count;
        for (int32_t channel = 0; channel < shape.channels; ++channel)
        {
            int64_t const plane = static_cast<int64_t>(sample) * shape.channels + channel;
            T const* src = image + plane * pixels;
            T* dst = out + plane * pixels;
            float const* offsetPlane = offsets + plane * offPixels;
            auto curveAt = [&](int64_t p) {
                int32_t const y = static_cast<int32_t>(p / shape.width);
                int32_t const x = static_cast<int32_t>(p % shape.width);
                return spin::curveSum(spin::toFloat(src[p]), spin::upsampledOffset(offsetPlane, y, x, shape),
                    gate[sample], sampleWeights, curves);
            };
            spin::Moments lanes[spin::kBlockSize] = {};
            for (int64_t p = 0; p < pixels; ++p)
            {
                lanes[p % spin::kBlockSize].push(curveAt(p));
            }
            spin::Moments const m = blockMerge(lanes);
            float const scale = spin::normScale(m, normWeight[channel], curves.eps);
            for (int64_t p = 0; p < pixels; ++p)
            {
                dst[p] = spin::fromFloat<T>(spin::activate(curveAt(p), m.mean, scale, normBias[channel]));
            }
        }
    }
}

} // namespace

extern "C" int32_t spinBlendReference(int32_t ioType, void const* image, float const* weights, float const* offsets,
    float const* gate, float const* normWeight, float const* normBias, void* out, spin::Shape shape,
    spin::Curves const* curves)
{
    if (!spin::validArguments(shape, curves))
    {
        return -1;
    }
    switch (static_cast<spin::IoType>(ioType))
    {
    case spin::IoType::kFLOAT32:
        referencePlanes(static_cast<float const*>(image), weights, offsets, gate, normWeight, normBias,
            static_cast<float*>(out), shape, *curves);
        return 0;
    case spin::IoType::kFLOAT16:
        referencePlanes(static_cast<__half const*>(image), weights, offsets, gate, normWeight, normBias,
            static_cast<__half*>(out), shape, *curves);
        return 0;
    }
    return -1;
}
