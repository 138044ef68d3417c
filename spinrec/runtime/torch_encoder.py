"""The encoder in PyTorch (:func:`spinrec.runtime.open_encoder` ``"torch"``): the reference runtime, on the
model's own device."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from spinrec.models.spin import SPIN

MODES = ("eager", "jit", "compile")


class TorchEncoder:
    """``model``: a :class:`~spinrec.models.spin.SPIN` (put in eval mode here) or its checkpoint.

    ``threads`` sets PyTorch's intra-op pool (process-wide; None leaves it). ``precision`` bf16 runs under
    ``torch.autocast("cpu", bfloat16)``; option ``autocast_transform=False`` keeps the GA-SPIN transform in
    fp32 (pow with exponents up to 33.33, instance norm, grid sample: the parts spin-model.md section 11
    flags as precision-sensitive). Options ``mode`` (one of :data:`MODES`: eager; jit = trace + freeze +
    optimize_for_inference; compile = torch.compile, inductor) and ``channels_last`` are for perf
    experiments.
    """

    name = "torch"

    def __init__(self, model: SPIN | str | Path, threads: int | None = None, precision: str = "fp32", mode: str = "eager",
                 channels_last: bool = False, autocast_transform: bool = True):  # fmt: skip
        import torch

        from spinrec import weights

        if mode not in MODES:
            raise ValueError(f"torch encoder mode {mode!r}: expected one of {', '.join(MODES)}")
        if not autocast_transform and (mode != "eager" or precision != "bf16"):
            raise ValueError("autocast_transform=False applies to the eager bf16 encoder only")
        if threads is not None:
            torch.set_num_threads(threads)
        self.model = (weights.load(model) if isinstance(model, (str, Path)) else model).eval()
        self.requested = self.precision = precision
        self.device = next(self.model.parameters()).device
        self._autocast_transform, self._channels_last = autocast_transform, channels_last
        encoder = self.model.encoder().eval()
        if channels_last:
            encoder = encoder.to(memory_format=torch.channels_last)
        if mode == "jit":
            with torch.no_grad():
                example = torch.zeros(2, self.model.config.in_channels, *self.model.config.image_size, device=self.device)
                encoder = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(encoder, example).eval()))
        elif mode == "compile":
            encoder = torch.compile(encoder, dynamic=False)
        self.encoder = encoder

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(self.device)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        bf16 = self.precision == "bf16"
        with torch.inference_mode():
            if not self._autocast_transform:
                x = self.encoder.transform(x)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                features = self.encoder(x) if self._autocast_transform else self.encoder.neck(self.encoder.backbone(x))
        return features.float().cpu().numpy()


class TorchDecoder:
    """Features -> probabilities ``[N, T, classes]`` with the model's own attention head in PyTorch (the
    reference for :class:`spinrec.decoder.AttentionDecoder`, which serving runs)."""

    def __init__(self, model: SPIN):
        self.model = model.eval()
        self.device = next(model.parameters()).device

    def __call__(self, features: np.ndarray, stop_at_eos: bool = True) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model.decode(torch.from_numpy(np.ascontiguousarray(features, np.float32)).to(self.device), stop_at_eos).cpu().numpy()
