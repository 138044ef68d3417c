"""spin_encoder, CPU configuration (configs/cpu.pbtxt): model.onnx in ONNX Runtime (code: spinrec.serving.triton)."""

from spinrec.serving.triton import EncoderModel as TritonPythonModel  # noqa: F401
