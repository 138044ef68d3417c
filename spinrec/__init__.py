"""SPIN scene-text recognizer: the model, its weights, and the request bytes -> text pipeline.

Stages, one module each: :mod:`spinrec.preprocess` (bytes -> ``[1, 32, 100]``), :mod:`spinrec.models`
(the network; ``SPIN.encode`` is the encoder, ``SPIN.decode`` the attention decoder),
:mod:`spinrec.decoding` (probabilities -> text), :mod:`spinrec.runtime` (the encoder on PyTorch, ONNX Runtime,
OpenVINO or TensorRT), :mod:`spinrec.pipeline` (all of it, in process).
"""

from spinrec.charset import Charset
from spinrec.decoding import Reading, decode
from spinrec.preprocess import ImageError, preprocess, preprocess_batch

__all__ = ["Charset", "ImageError", "Reading", "decode", "preprocess", "preprocess_batch"]
__version__ = "0.1.0"
