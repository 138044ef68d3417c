"""spin_page: a photograph's bytes -> its words (spin_detector, then spin_ocr; code: spinrec.serving.triton)."""

from spinrec.serving.triton import PageModel as TritonPythonModel  # noqa: F401
