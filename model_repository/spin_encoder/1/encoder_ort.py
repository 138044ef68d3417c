"""spin_encoder, CPU configuration (configs/cpu.pbtxt): model.onnx under the runtime its "runtime" parameter names (OpenVINO as shipped, or ONNX Runtime; code: spinrec.serving.triton)."""

from spinrec.serving.triton import EncoderModel as TritonPythonModel  # noqa: F401
