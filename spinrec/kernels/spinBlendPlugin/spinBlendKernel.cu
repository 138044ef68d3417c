/*
 * The fused SpinBlend kernel. One thread block owns one (sample, channel) plane: it computes the curve sum of
 * every pixel, reduces the plane's mean and variance inside the block, then recomputes the curve sum and
 * writes the normalised, activated value. Recomputing (13 powf per pixel) is cheaper than a second kernel
 * or a scratch buffer, and keeps the op free of workspace for any image size.
 *
 * All arithmetic is float32 whatever the I/O type: in float16, I^33.33 underflows and I^0.03 rounds to 1.
 * Build without --use_fast_math: powf/expf/sqrtf and division must stay the accurate versions.
 */
#include "spinBlendKernel.cuh"

namespace spin
{
namespace
{

constexpr uint32_t kFullMask = 0xffffffffU;

__device__ void warpMerge(Moments& m)
{
    for (int32_t delta = kWarpSize / 2; delta > 0; delta /= 2)
    {
        float const count = __shfl_down_sync(kFullMask, m.count, delta);
        float const mean = __shfl_down_sync(kFullMask, m.mean, delta);
        float const m2 = __shfl_down_sync(kFullMask, m.m2, delta);
        m.merge(count, mean, m2);
    }
}

template <typename T>
__global__ void __launch_bounds__(kBlockSize) spinBlendKernel(T const* __restrict__ image,
    float const* __restrict__ weights, float const* __restrict__ offsets, float const* __restrict__ gate,
    float const* __restrict__ normWeight, float const* __restrict__ normBias, T* __restrict__ out, Shape shape,
    Curves curves)
{
    __shared__ float sWeights[kMaxExponents];
    __shared__ Moments sWarpMoments[kBlockSize / kWarpSize];
    __shared__ float sMean;
    __shared__ float sScale;

    int32_t const plane = blockIdx.x;
    int32_t const sample = plane / shape.channels;
    int32_t const channel = plane % shape.channels;
    int32_t const pixels = shape.height * shape.width;
    T const* src = image + static_cast<int64_t>(plane) * pixels;
    T* dst = out + static_cast<int64_t>(plane) * pixels;
    float const* offsetPlane = offsets + static_cast<int64_t>(plane) * shape.offHeight * shape.offWidth;
    float const alpha = gate[sample];

    if (threadIdx.x < curves.count)
    {
        sWeights[threadIdx.x] = weights[static_cast<int64_t>(sample) * curves.count + threadIdx.x];
    }
    __syncthreads();

    Moments m{0.F, 0.F, 0.F};
    for (int32_t p = threadIdx.x; p < pixels; p += kBlockSize)
    {
        int32_t const y = p / shape.width;
        int32_t const x = p - y * shape.width;
        m.push(curveSum(toFloat(src[p]), upsampledOffset(offsetPlane, y, x, shape), alpha, sWeights, curves));
    }

    warpMerge(m);
    int32_t const lane = threadIdx.x % kWarpSize;
    int32_t const warp = threadIdx.x / kWarpSize;
    if (lane == 0)
    {
        sWarpMoments[warp] = m;
    }
    __syncthreads();
    if (threadIdx.x == 0)
    {
        Moments total = sWarpMoments[0];
        for (int32_t i = 1; i < kBlockSize / kWarpSize; ++i)
        {
            total.merge(sWarpMoments[i].count, sWarpMoments[i].mean, sWarpMoments[i].m2);
        }
        sMean = total.mean;
        sScale = normScale(total, normWeight[channel], curves.eps);
    }
    __syncthreads();

    float const mean = sMean;
    float const scale = sScale;
    float const beta = normBias[channel];
    for (int32_t p = threadIdx.x; p < pixels; p += kBlockSize)
    {
        int32_t const y = p / shape.width;
        int32_t const x = p - y * shape.width;
        float const curve
            = curveSum(toFloat(src[p]), upsampledOffset(offsetPlane, y, x, shape), alpha, sWeights, curves);
        dst[p] = fromFloat<T>(activate(curve, mean, scale, beta));
    }
}

template <typename T>
cudaError_t launch(void const* image, float const* weights, float const* offsets, float const* gate,
    float const* normWeight, float const* normBias, void* out, Shape const& shape, Curves const& curves,
    cudaStream_t stream)
{
    int64_t const planes = static_cast<int64_t>(shape.batch) * shape.channels;
    spinBlendKernel<T><<<static_cast<uint32_t>(planes), kBlockSize, 0, stream>>>(static_cast<T const*>(image),
        weights, offsets, gate, normWeight, normBias, static_cast<T*>(out), shape, curves);
    return cudaGetLastError();
}

} // namespace
} // namespace spin

extern "C" int32_t spinBlendLaunch(int32_t ioType, void const* image, float const* weights, float const* offsets,
    float const* gate, float const* normWeight, float const* normBias, void* out, spin::Shape shape,
    spin::Curves const* curves, cudaStream_t stream)
{
    if (!spin::validArguments(shape, curves) || static_cast<int64_t>(shape.batch) * shape.channels > INT32_MAX)
    {
        return cudaErrorInvalidValue;
    }
    if (shape.batch == 0)
    {
        return cudaSuccess;
    }
    switch (static_cast<spin::IoType>(ioType))
    {
    case spin::IoType::kFLOAT32:
        return spin::launch<float>(image, weights, offsets, gate, normWeight, normBias, out, shape, *curves, stream);
    case spin::IoType::kFLOAT16:
        return spin::launch<__half>(image, weights, offsets, gate, normWeight, normBias, out, shape, *curves, stream);
    }
    return cudaErrorInvalidValue;
}
