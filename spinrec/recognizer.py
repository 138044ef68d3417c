"""The in-process reference pipeline: images -> preprocess -> encoder -> decoder -> text (PyTorch eager).

Every faster path (ONNX Runtime, TensorRT, the Triton ensemble) is compared with this one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from spinrec import weights
from spinrec.charset import Charset
from spinrec.decoding import Reading, decode
from spinrec.models.spin import SPIN
from spinrec.preprocess import ImageError, ImageInput, preprocess_batch


class Recognizer:
    """Reads word crops with a :class:`SPIN` model.

    Args:
        model: the network (put in eval mode here).
        charset: class symbols (default: PaddleOCR's ``spin_dict``).
        stop_at_eos: decoding mode (see :func:`spinrec.decoding.decode`); False is PaddleOCR's.
        batch_size: images per forward pass.
    """

    def __init__(self, model: SPIN, charset: Charset | None = None, stop_at_eos: bool = True, batch_size: int = 32):
        self.model = model.eval()
        self.charset = charset or Charset()
        self.stop_at_eos = stop_at_eos
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> "Recognizer":
        return cls(weights.load(path), **kwargs)

    @torch.inference_mode()
    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """``[N, 1, 32, 100]`` preprocessed images -> ``[N, T, classes]`` probabilities (on the model's device)."""
        device = next(self.model.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
        return self.model.decode(self.model.encode(x), self.stop_at_eos).cpu().numpy()

    def recognize(self, images: Sequence[ImageInput]) -> list[Reading | ImageError]:
        """One result per image, in order: a :class:`Reading`, or the :class:`ImageError` that image
        raised (the other images are still read)."""
        results: list[Reading | ImageError] = []
        for start in range(0, len(images), self.batch_size):
            batch, errors = preprocess_batch(images[start : start + self.batch_size])
            good = [i for i, e in enumerate(errors) if e is None]
            readings = decode(self.probabilities(batch[good]), self.charset, self.stop_at_eos) if good else []
            by_row = dict(zip(good, readings))
            results += [by_row[i] if e is None else e for i, e in enumerate(errors)]
        return results
