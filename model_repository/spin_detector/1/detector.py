"""spin_detector, CPU configuration (configs/cpu.pbtxt): model.onnx on OpenVINO or ONNX Runtime (code: spinrec.serving.triton)."""

from spinrec.serving.triton import DetectorModel as TritonPythonModel  # noqa: F401
