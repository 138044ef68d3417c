"""spin_preprocess: encoded image bytes -> normalized [1, 32, 100] float32 (code: spinrec.serving.triton)."""

from spinrec.serving.triton import PreprocessModel as TritonPythonModel  # noqa: F401
