"""Fidelity references: independent implementations the SPIN port is checked against, run by Paddle itself.

- :mod:`.spin_paddle`: the SPIN recognizer written in Paddle dygraph with PaddleOCR's module structure and
  parameter names, re-derived from PaddleOCR's source read function by function (each class names the
  upstream file, function and commit it mirrors; not copied, and sharing no code with ``spinrec``).
- :mod:`.ppocr_wheel`: imports PaddleOCR's own pre/post-processing (``SPINLabelDecode``,
  ``SPINLabelEncode``, ``SPINRecResizeImg``, ``resize_norm_img_spin``, ``spin_dict.txt``) from the
  installed ``paddleocr==2.7.3`` wheel at test time, without its heavy optional dependencies.

Dev-only (not shipped in the wheel); the package never imports it. Used by the fidelity tests and
:mod:`perf.paddle_inference` (perf's Paddle Inference speed baseline); both skip when Paddle or the wheel is
missing. This folder imports nothing else of the repository.
"""
