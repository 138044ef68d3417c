"""The in-process pipeline: images -> preprocess -> encoder -> decoder -> readings, on any encoder runtime.

What the Triton ensemble computes, in one process: the CLI (``spinrec recognize``), the evaluation, training's
validation, perf's in-process baselines and the tests read through this class. On PyTorch
(:meth:`Pipeline.open` with ``runtime="torch"``, the default) the model's own attention head decodes: the
reference every faster path (ONNX Runtime, OpenVINO, TensorRT, the server) is compared with. On the other
runtimes the served NumPy decoder (:class:`spinrec.decoder.HeadDecoder`) does, as in the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from spinrec import contract
from spinrec.charset import Charset
from spinrec.decoding import Reading, decode
from spinrec.preprocess import ImageError, ImageInput, preprocess_batch, preprocess_outcomes
from spinrec.runtime import Encoder, open_encoder

if TYPE_CHECKING:
    from spinrec.models.spin import SPIN

Decoder = Callable[[np.ndarray], list[Reading]]


class Pipeline:
    """``encoder`` (:func:`spinrec.runtime.open_encoder`) then ``decoder`` (features -> readings), over
    preprocessed batches of at most ``batch_size`` images."""

    def __init__(self, encoder: Encoder, decoder: Decoder, batch_size: int = 32):
        self.encoder, self.decoder, self.batch_size = encoder, decoder, batch_size

    @classmethod
    def open(
        cls,
        checkpoint: SPIN | str | Path,
        runtime: str = "torch",
        artifact: str | Path | None = None,
        threads: int | None = None,
        precision: str | None = None,
        charset: Charset | None = None,
        stop_at_eos: bool = True,
        batch_size: int = 32,
        **options: Any,
    ) -> Pipeline:
        """``checkpoint`` (or a SPIN model, PyTorch only) read on ``runtime``: PyTorch runs the checkpoint
        itself; the other runtimes run ``artifact`` (the exported graph or engine) and decode with the
        checkpoint's head in NumPy. ``stop_at_eos=False`` decodes as PaddleOCR does
        (:func:`spinrec.decoding.decode`); ``charset`` defaults to PaddleOCR's ``spin_dict``."""
        charset = charset or Charset()
        if runtime == "torch":
            from spinrec.runtime.torch_encoder import TorchDecoder

            encoder = open_encoder(runtime, checkpoint, threads, precision, **options)
            head = TorchDecoder(encoder.model)  # type: ignore[attr-defined]
            return cls(encoder, lambda features: decode(head(features, stop_at_eos), charset, stop_at_eos), batch_size)
        from spinrec.decoder import HeadDecoder

        if artifact is None:
            raise ValueError(f"runtime {runtime} runs an exported artifact: pass artifact=")
        return cls(open_encoder(runtime, artifact, threads, precision, **options), HeadDecoder(checkpoint, charset, stop_at_eos), batch_size)

    @classmethod
    def from_repository(cls, repository: str | Path, runtime: str = "openvino", **kwargs: Any) -> Pipeline:
        """The artifacts a model repository serves (:mod:`spinrec.contract`'s layout) on ``runtime``:
        the ONNX graph (or the TensorRT plan), the checkpoint and its charset."""
        repository = Path(repository)
        artifact = repository / (contract.PLAN if runtime == "tensorrt" else contract.ONNX)
        paths = [repository / contract.CHECKPOINT, repository / contract.CHARSET] + ([] if runtime == "torch" else [artifact])
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"model repository not built ({', '.join(missing)} missing): python -m spinrec.export.repository")
        charset = Charset.from_file(str(repository / contract.CHARSET))
        return cls.open(repository / contract.CHECKPOINT, runtime, None if runtime == "torch" else artifact, charset=charset, **kwargs)

    def preprocess(self, images: Sequence[ImageInput]) -> np.ndarray:
        """``[N, 1, 32, 100]``; a ValueError naming every image that cannot be read."""
        batch, errors = preprocess_batch(list(images))
        if any(errors):
            raise ValueError([str(e) for e in errors if e])
        return batch

    def decode(self, features: np.ndarray) -> list[Reading]:
        return self.decoder(features)

    def read(self, images: Sequence[ImageInput], capture_native_stderr: bool = False) -> list[tuple[Reading | ImageError, str | None]]:
        """One ``(reading, flag)`` per image, in order: the :class:`Reading` and the degenerate image's flag (or
        None), or the :class:`ImageError` that image raised and None (the other images are still read).
        ``capture_native_stderr`` folds codec messages into the errors (:func:`spinrec.preprocess.preprocess_outcomes`)."""
        results: list[tuple[Reading | ImageError, str | None]] = []
        for start in range(0, len(images), self.batch_size):
            outcomes = preprocess_outcomes(images[start : start + self.batch_size], capture_native_stderr)
            good = [i for i, e in enumerate(outcomes.errors) if e is None]
            readings = dict(zip(good, self.decoder(self.encoder(outcomes.batch[good])))) if good else {}
            results += [(readings[i], outcomes.flags[i]) if e is None else (e, None) for i, e in enumerate(outcomes.errors)]
        return results

    def recognize(self, images: Sequence[ImageInput]) -> list[Reading | ImageError]:
        """One result per image, in order: a :class:`Reading`, or the :class:`ImageError` that image
        raised (the other images are still read)."""
        return [reading for reading, _ in self.read(images)]

    def read_preprocessed(self, batch: np.ndarray) -> list[Reading]:
        """Readings of already preprocessed images ``[N, 1, 32, 100]``, ``batch_size`` at a time."""
        return [r for start in range(0, len(batch), self.batch_size) for r in self.decode(self.encoder(batch[start : start + self.batch_size]))]

    def texts(self, images: Sequence[ImageInput]) -> list[str]:
        """The text of every image, in one batch (perf's request path); a ValueError if any cannot be read."""
        return [r.text for r in self.decode(self.encoder(self.preprocess(images)))]
