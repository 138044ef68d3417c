/*
 * SpinBlend TensorRT 10 plugin (IPluginV3): the SPIN intensity transform as one fused layer. See README.md for
 * the op's contract; the kernel is spinBlendKernel.cu.
 */
#ifndef SPIN_BLEND_PLUGIN_H
#define SPIN_BLEND_PLUGIN_H

#include "spinBlendKernel.cuh"

#include <NvInfer.h>

#include <string>
#include <vector>

namespace spin
{

//! Name and version the TensorRT ONNX parser looks up for a node with op_type "SpinBlend" (version from the
//! node's "plugin_version" attribute, default "1"; namespace from "plugin_namespace", default "").
constexpr char const* kPLUGIN_NAME{"SpinBlend"};
constexpr char const* kPLUGIN_VERSION{"1"};
constexpr char const* kPLUGIN_NAMESPACE{""};
//! Field names, equal to the ONNX node's attribute names.
constexpr char const* kFIELD_EXPONENTS{"exponents"};
constexpr char const* kFIELD_EPS{"eps"};
constexpr int32_t kNB_INPUTS{6};

//! Input positions: image [B,C,H,W] (float32/float16), weights [B,K], offsets [B,C,h,w], gate [B],
//! norm_weight [C], norm_bias [C] (float32). The output (position kNB_INPUTS) has the image's shape and type.
enum InputIndex : int32_t
{
    kIMAGE = 0,
    kWEIGHTS = 1,
    kOFFSETS = 2,
    kGATE = 3,
    kNORM_WEIGHT = 4,
    kNORM_BIAS = 5,
};

class SpinBlendPlugin : public nvinfer1::IPluginV3,
                        public nvinfer1::IPluginV3OneCore,
                        public nvinfer1::IPluginV3OneBuild,
                        public nvinfer1::IPluginV3OneRuntime
{
public:
    SpinBlendPlugin(std::vector<float> exponents, float eps);
    SpinBlendPlugin(SpinBlendPlugin const& other);
    SpinBlendPlugin& operator=(SpinBlendPlugin const&) = delete;
    ~SpinBlendPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    char const* getTimingCacheID() noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    void initFieldsToSerialize();

    std::vector<float> mExponents;
    float mEps;
    Curves mCurves{};
    //! The attributes, so that the timing cache keeps one entry per exponent list and epsilon.
    std::string mTimingCacheId;
    std::vector<nvinfer1::PluginField> mDataToSerialize;
    nvinfer1::PluginFieldCollection mFCToSerialize{};
};

class SpinBlendPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    SpinBlendPluginCreator();
    ~SpinBlendPluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFC{};
};

} // namespace spin

#endif // SPIN_BLEND_PLUGIN_H
