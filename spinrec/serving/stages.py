"""The encoder and decoder stages as plain array functions; the preprocessor is
:func:`spinrec.preprocess.preprocess_batch` itself.

Each Triton Python model wraps one of these (:mod:`spinrec.serving.triton`); the tests run them in
process too, against :class:`spinrec.recognizer.Recognizer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from spinrec.charset import Charset
from spinrec.decoding import Reading, decode


class OnnxEncoder:
    """The exported encoder graph (``image`` ``[B,1,32,100]`` -> ``features`` ``[B,26,512]``) in ONNX Runtime."""

    def __init__(self, path: str | Path, threads: int = 1):
        import onnxruntime as ort

        from spinrec.onnx_export import INPUT_NAME, OUTPUT_NAME

        options = ort.SessionOptions()
        # One process per Triton instance: its thread pool must not grow with the machine's core count.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name, self.output_name = INPUT_NAME, OUTPUT_NAME

    def __call__(self, images: np.ndarray) -> np.ndarray:
        (features,) = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(images, np.float32)})
        return features


class HeadDecoder:
    """Features ``[B,26,C]`` -> one :class:`Reading` per row, the whole batch in one greedy loop.

    Runs :class:`spinrec.decoder.AttentionDecoder` (NumPy), so decoder processes never load PyTorch;
    only the ``head.*`` tensors of the checkpoint are read.
    """

    def __init__(self, checkpoint: str | Path, charset: Charset | None = None, stop_at_eos: bool = True):
        from spinrec.decoder import AttentionDecoder

        try:
            self.decoder = AttentionDecoder.from_checkpoint(checkpoint)
        except KeyError as e:
            raise ValueError(f"{checkpoint}: {e.args[0]}") from None
        self.charset = charset or Charset()
        classes = self.decoder.w_gen.shape[1]
        if self.charset.num_classes != classes:
            raise ValueError(f"charset has {self.charset.num_classes} classes but the head of {checkpoint} predicts {classes}")
        self.stop_at_eos = stop_at_eos

    def __call__(self, features: np.ndarray) -> list[Reading]:
        return decode(self.decoder(features, self.stop_at_eos), self.charset, self.stop_at_eos)


def pack_readings(readings: Sequence[Reading]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Readings -> ``TEXT`` (object ``[N,1]``, UTF-8), ``CONFIDENCE`` (float32 ``[N,1]``) and ``CHAR_PROBS``
    (float32 ``[N,L]``): row ``i`` holds ``len(text_i)`` probabilities, then zeros up to ``L``, the longest
    text (at least 1, so the tensor is never empty)."""
    n = len(readings)
    text = np.array([[r.text.encode("utf-8")] for r in readings], dtype=object).reshape(n, 1)
    confidence = np.array([[r.confidence] for r in readings], dtype=np.float32).reshape(n, 1)
    width = max([1] + [len(r.char_probs) for r in readings])
    char_probs = np.zeros((n, width), dtype=np.float32)
    for i, r in enumerate(readings):
        char_probs[i, : len(r.char_probs)] = r.char_probs
    return text, confidence, char_probs
