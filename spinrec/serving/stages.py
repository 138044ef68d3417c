"""What the Triton stage models compute beyond the shared pieces: the preprocessor is
:func:`spinrec.preprocess.preprocess_batch`, the encoder :func:`spinrec.runtime.open_encoder`, the decoder
:class:`spinrec.decoder.HeadDecoder`; here, how readings become the ensemble's output tensors.

Each Triton Python model wraps these (:mod:`spinrec.serving.triton`); the tests run them in process too,
against :class:`spinrec.pipeline.Pipeline` on PyTorch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from spinrec.decoding import Reading


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
