/*
 * SpinBlend TensorRT 10 plugin: build-time shape/type logic, runtime launch, field serialization, creator.
 */
#include "spinBlendPlugin.h"

#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <utility>

using namespace nvinfer1;

namespace spin
{
namespace
{

//! Plugin methods are noexcept and TensorRT only sees a status code: say what went wrong on stderr, which
//! the TensorRT logs and Triton's server log both show next to the failing layer.
void reportError(char const* where, char const* what) noexcept
{
    std::cerr << "[" << kPLUGIN_NAME << "] " << where << ": " << what << std::endl;
}

void require(bool condition, std::string const& message)
{
    if (!condition)
    {
        throw std::invalid_argument(message);
    }
}

//! Rank of every input: image, weights, offsets, gate, norm_weight, norm_bias.
constexpr int32_t kRanks[kNB_INPUTS]{4, 2, 4, 1, 1, 1};

//! Checks the inputs' ranks and that the sizes the inputs share agree (batch, channels, K). A dimension of
//! -1 (unknown while building) matches anything.
void checkInputDims(Dims const* dims, int32_t nbInputs, int32_t nbExponents)
{
    require(nbInputs == kNB_INPUTS, "expects 6 inputs: image, weights, offsets, gate, norm_weight, norm_bias");
    for (int32_t i = 0; i < kNB_INPUTS; ++i)
    {
        std::ostringstream msg;
        msg << "input " << i << " must have rank " << kRanks[i] << ", got " << dims[i].nbDims;
        require(dims[i].nbDims == kRanks[i], msg.str());
    }
    auto same = [](int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; };
    int64_t const batch = dims[kIMAGE].d[0];
    int64_t const channels = dims[kIMAGE].d[1];
    require(same(dims[kWEIGHTS].d[0], batch) && same(dims[kOFFSETS].d[0], batch) && same(dims[kGATE].d[0], batch),
        "weights, offsets and gate must have the image's batch size");
    require(same(dims[kOFFSETS].d[1], channels) && same(dims[kNORM_WEIGHT].d[0], channels)
            && same(dims[kNORM_BIAS].d[0], channels),
        "offsets, norm_weight and norm_bias must have the image's channel count");
    require(same(dims[kWEIGHTS].d[1], nbExponents), "weights must have one column per exponent");
}

int32_t toInt32(int64_t v)
{
    require(v >= 0 && v <= std::numeric_limits<int32_t>::max(), "dimension out of int32 range");
    return static_cast<int32_t>(v);
}

} // namespace

SpinBlendPlugin::SpinBlendPlugin(std::vector<float> exponents, float eps)
    : mExponents(std::move(exponents))
    , mEps(eps)
{
    require(!mExponents.empty() && mExponents.size() <= static_cast<size_t>(kMaxExponents),
        "exponents must hold 1..32 values");
    require(std::isfinite(mEps) && mEps >= 0.F, "eps must be finite and >= 0");
    mCurves.count = static_cast<int32_t>(mExponents.size());
    for (size_t k = 0; k < mExponents.size(); ++k)
    {
        require(std::isfinite(mExponents[k]), "exponents must be finite");
        mCurves.exponents[k] = mExponents[k];
    }
    mCurves.eps = mEps;
    std::ostringstream id;
    id << kPLUGIN_NAME << "_v" << kPLUGIN_VERSION << std::hexfloat << "_eps" << mEps;
    for (float e : mExponents)
    {
        id << "_" << e;
    }
    mTimingCacheId = id.str();
    initFieldsToSerialize();
}

SpinBlendPlugin::SpinBlendPlugin(SpinBlendPlugin const& other)
    : mExponents(other.mExponents)
    , mEps(other.mEps)
    , mCurves(other.mCurves)
    , mTimingCacheId(other.mTimingCacheId)
{
    // The serialized fields point into this object's members, never into the original's.
    initFieldsToSerialize();
}

void SpinBlendPlugin::initFieldsToSerialize()
{
    mDataToSerialize.clear();
    mDataToSerialize.emplace_back(
        kFIELD_EXPONENTS, mExponents.data(), PluginFieldType::kFLOAT32, static_cast<int32_t>(mExponents.size()));
    mDataToSerialize.emplace_back(kFIELD_EPS, &mEps, PluginFieldType::kFLOAT32, 1);
    mFCToSerialize.nbFields = static_cast<int32_t>(mDataToSerialize.size());
    mFCToSerialize.fields = mDataToSerialize.data();
}

IPluginCapability* SpinBlendPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    try
    {
        switch (type)
        {
        case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
        }
        reportError("getCapabilityInterface", "unknown capability type");
    }
    catch (std::exception const& e)
    {
        reportError("getCapabilityInterface", e.what());
    }
    return nullptr;
}

IPluginV3* SpinBlendPlugin::clone() noexcept
{
    try
    {
        return new SpinBlendPlugin(*this);
    }
    catch (std::exception const& e)
    {
        reportError("clone", e.what());
    }
    return nullptr;
}

char const* SpinBlendPlugin::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* SpinBlendPlugin::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* SpinBlendPlugin::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

int32_t SpinBlendPlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t SpinBlendPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        require(nbOutputs == 1 && nbInputs == kNB_INPUTS, "expects 6 inputs and 1 output");
        outputTypes[0] = inputTypes[kIMAGE];
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError("getOutputDataTypes", e.what());
    }
    return -1;
}

int32_t SpinBlendPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& /*exprBuilder*/) noexcept
{
    try
    {
        require(nbOutputs == 1, "has one output");
        Dims known[kNB_INPUTS];
        require(nbInputs == kNB_INPUTS, "expects 6 inputs: image, weights, offsets, gate, norm_weight, norm_bias");
        for (int32_t i = 0; i < kNB_INPUTS; ++i)
        {
            known[i].nbDims = inputs[i].nbDims;
            for (int32_t d = 0; d < inputs[i].nbDims && d < Dims::MAX_DIMS; ++d)
            {
                known[i].d[d] = inputs[i].d[d]->isConstant() ? inputs[i].d[d]->getConstantValue() : -1;
            }
        }
        checkInputDims(known, nbInputs, mCurves.count);
        // Same shape as the image; the batch stays symbolic so one engine serves every profile batch size.
        outputs[0] = inputs[kIMAGE];
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError("getOutputShapes", e.what());
    }
    return -1;
}

bool SpinBlendPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    try
    {
        require(nbInputs == kNB_INPUTS && nbOutputs == 1 && pos >= 0 && pos <= kNB_INPUTS, "bad tensor position");
        PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != TensorFormat::kLINEAR)
        {
            return false;
        }
        if (pos == kIMAGE)
        {
            return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
        }
        if (pos == kNB_INPUTS)
        {
            return desc.type == inOut[kIMAGE].desc.type;
        }
        // Per-sample weights, offsets, gate and the norm's affine stay float32: the kernel computes in float32
        // and these small tensors would lose the precision the power curves need.
        return desc.type == DataType::kFLOAT;
    }
    catch (std::exception const& e)
    {
        reportError("supportsFormatCombination", e.what());
    }
    return false;
}

int32_t SpinBlendPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        require(nbOutputs == 1 && nbInputs == kNB_INPUTS, "expects 6 inputs and 1 output");
        Dims dims[kNB_INPUTS];
        for (int32_t i = 0; i < kNB_INPUTS; ++i)
        {
            dims[i] = in[i].desc.dims;
        }
        checkInputDims(dims, nbInputs, mCurves.count);
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError("configurePlugin", e.what());
    }
    return -1;
}

size_t SpinBlendPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return 0;
}

char const* SpinBlendPlugin::getTimingCacheID() noexcept
{
    return mTimingCacheId.c_str();
}

int32_t SpinBlendPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        require(nbOutputs == 1 && nbInputs == kNB_INPUTS, "expects 6 inputs and 1 output");
        Dims dims[kNB_INPUTS];
        for (int32_t i = 0; i < kNB_INPUTS; ++i)
        {
            dims[i] = in[i].dims;
        }
        checkInputDims(dims, nbInputs, mCurves.count);
        require(static_cast<int64_t>(toInt32(dims[kIMAGE].d[0])) * toInt32(dims[kIMAGE].d[1])
                <= std::numeric_limits<int32_t>::max(),
            "batch * channels exceeds the kernel's grid");
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError("onShapeChange", e.what());
    }
    return -1;
}

int32_t SpinBlendPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    try
    {
        Dims const& image = inputDesc[kIMAGE].dims;
        Dims const& offsets = inputDesc[kOFFSETS].dims;
        Shape const shape{toInt32(image.d[0]), toInt32(image.d[1]), toInt32(image.d[2]), toInt32(image.d[3]),
            toInt32(offsets.d[2]), toInt32(offsets.d[3])};
        IoType const io = inputDesc[kIMAGE].type == DataType::kHALF ? IoType::kFLOAT16 : IoType::kFLOAT32;
        int32_t const status = spinBlendLaunch(static_cast<int32_t>(io), inputs[kIMAGE],
            static_cast<float const*>(inputs[kWEIGHTS]), static_cast<float const*>(inputs[kOFFSETS]),
            static_cast<float const*>(inputs[kGATE]), static_cast<float const*>(inputs[kNORM_WEIGHT]),
            static_cast<float const*>(inputs[kNORM_BIAS]), outputs[0], shape, &mCurves, stream);
        if (status != cudaSuccess)
        {
            reportError("enqueue", cudaGetErrorString(static_cast<cudaError_t>(status)));
            return -1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError("enqueue", e.what());
    }
    return -1;
}

IPluginV3* SpinBlendPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* SpinBlendPlugin::getFieldsToSerialize() noexcept
{
    return &mFCToSerialize;
}

SpinBlendPluginCreator::SpinBlendPluginCreator()
{
    mFields.emplace_back(kFIELD_EXPONENTS, nullptr, PluginFieldType::kFLOAT32, kMaxExponents);
    mFields.emplace_back(kFIELD_EPS, nullptr, PluginFieldType::kFLOAT32, 1);
    mFC.nbFields = static_cast<int32_t>(mFields.size());
    mFC.fields = mFields.data();
}

char const* SpinBlendPluginCreator::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* SpinBlendPluginCreator::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* SpinBlendPluginCreator::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

PluginFieldCollection const* SpinBlendPluginCreator::getFieldNames() noexcept
{
    return &mFC;
}

IPluginV3* SpinBlendPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        require(fc != nullptr, "no plugin fields");
        // Build and runtime phases get the same fields: the ONNX node's attributes, then the serialized ones.
        std::vector<float> exponents;
        float eps{1e-5F};
        for (int32_t i = 0; i < fc->nbFields; ++i)
        {
            PluginField const& field = fc->fields[i];
            if (std::strcmp(field.name, kFIELD_EXPONENTS) == 0)
            {
                require(field.type == PluginFieldType::kFLOAT32 && field.data != nullptr && field.length > 0,
                    "field 'exponents' must be a non-empty float32 array");
                auto const* values = static_cast<float const*>(field.data);
                exponents.assign(values, values + field.length);
            }
            else if (std::strcmp(field.name, kFIELD_EPS) == 0)
            {
                require(field.type == PluginFieldType::kFLOAT32 && field.data != nullptr && field.length == 1,
                    "field 'eps' must be one float32");
                eps = *static_cast<float const*>(field.data);
            }
        }
        require(!exponents.empty(), "field 'exponents' is required");
        return new SpinBlendPlugin(std::move(exponents), eps);
    }
    catch (std::exception const& e)
    {
        reportError("createPlugin", e.what());
    }
    return nullptr;
}

// Registers the creator when the library is loaded (dlopen, ctypes, LD_PRELOAD, Triton's plugins= option).
REGISTER_TENSORRT_PLUGIN(SpinBlendPluginCreator);

} // namespace spin
