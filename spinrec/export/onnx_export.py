"""Export the encoder (GA-SPIN + ResNet32 + BiLSTMs) to ONNX and check it with ONNX Runtime.

The graph has one input ``image`` ``[B, 1, 32, 100]`` float32 and one output ``features``
``[B, 26, C]`` float32, with a dynamic batch dimension. Opset 17: GridSample exists from 16, and
TensorRT's ONNX parser reads its opset-16 mode names (``bilinear``), not opset 20's (``linear``).

The SPIN blend op (:func:`spinrec.models.blend.spin_blend`) is exported one of two ways:

- ``blend="decomposed"`` (default): standard ONNX ops (Resize, Pow, InstanceNormalization, ...), for
  ONNX Runtime on CPU.
- ``blend="plugin"``: one ``SpinBlend`` node in domain :data:`PLUGIN_DOMAIN`, implemented by the TensorRT
  plugin ``spinrec/kernels/spinBlendPlugin`` (TensorRT's parser maps a node to the plugin of the same
  name and ignores the domain) and, on CPU, by the plugin's host reference through onnxruntime-extensions
  (:mod:`spinrec.runtime.ort_spin_blend`). Inputs ``image, weights, offsets, gate, norm_weight, norm_bias``;
  attributes ``exponents`` (floats) and ``eps`` (float), named like the plugin's fields.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import onnx
import torch
from torch import nn

from spinrec.models.blend import spin_blend
from spinrec.contract import ENCODER_INPUT, ENCODER_OUTPUT, PLUGIN_DOMAIN, PLUGIN_OP
from spinrec.models.gaspin import SPTransformerNetwork
from spinrec.models.spin import SPIN

INPUT_NAME, OUTPUT_NAME = ENCODER_INPUT, ENCODER_OUTPUT
OPSET = 17
BLEND_INPUTS = ("image", "weights", "offsets", "gate")
BLEND_OUTPUT = "blended"

Blend = Literal["decomposed", "plugin"]


@torch.library.custom_op("spinrec::spin_blend", mutates_args=())
def _spin_blend_op(
    image: torch.Tensor,
    weights: torch.Tensor,
    offsets: torch.Tensor,
    gate: torch.Tensor,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    exponents: Sequence[float],
    eps: float,
) -> torch.Tensor:
    return spin_blend(image, weights, offsets, gate, norm_weight, norm_bias, exponents, eps)


@_spin_blend_op.register_fake
def _(image, weights, offsets, gate, norm_weight, norm_bias, exponents, eps):
    return torch.empty_like(image)


def _spin_blend_symbolic(g, image, weights, offsets, gate, norm_weight, norm_bias, exponents, eps):
    from torch.onnx import symbolic_helper

    node = g.op(
        f"{PLUGIN_DOMAIN}::{PLUGIN_OP}",
        image,
        weights,
        offsets,
        gate,
        norm_weight,
        norm_bias,
        exponents_f=symbolic_helper._get_const(exponents, "fs", "exponents"),
        eps_f=symbolic_helper._get_const(eps, "f", "eps"),
    )
    node.setType(image.type())
    return node


torch.onnx.register_custom_op_symbolic("spinrec::spin_blend", _spin_blend_symbolic, 1)


class _PluginSPNet(nn.Module):
    """Stands in for an :class:`SPTransformerNetwork` during export so that its blend becomes one node."""

    def __init__(self, sp_net: SPTransformerNetwork):
        super().__init__()
        self.bn = sp_net.bn
        self.power_list = [float(b) for b in sp_net.power_list]

    def forward(self, image, weights, offsets, gate):
        if offsets is None or gate is None:
            raise ValueError(f"the {PLUGIN_OP} plugin implements SPIN with its offset network (config offsets=True)")
        return torch.ops.spinrec.spin_blend(
            image, weights, offsets, gate, self.bn.weight, self.bn.bias, self.power_list, float(self.bn.eps)
        )


def _check_blend(blend: str) -> None:
    if blend not in ("decomposed", "plugin"):
        raise ValueError(f"blend must be 'decomposed' or 'plugin', not {blend!r}")


def _export(module: nn.Module, example: tuple, path: str | Path, inputs: Sequence[str], output: str, opset: int, blend: str) -> onnx.ModelProto:
    custom = {PLUGIN_DOMAIN: 1} if blend == "plugin" else None
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is chosen on purpose (custom-op symbolics, opset 17); skip its deprecation notice.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            module.eval(),
            example,
            str(path),
            input_names=list(inputs),
            output_names=[output],
            dynamic_axes={name: {0: "batch"} for name in (*inputs, output)},
            opset_version=opset,
            do_constant_folding=True,
            custom_opsets=custom,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_encoder(model: SPIN, path: str | Path, opset: int = OPSET, blend: Blend = "decomposed") -> onnx.ModelProto:
    """Write ``model``'s encoder to ``path`` and return the checked ONNX model.

    ``blend`` chooses how the SPIN blend op is written (see the module docstring).
    """
    _check_blend(blend)
    encoder = model.encoder().eval()
    if blend == "plugin":
        # A shallow copy of the transform with its own module table: the caller's model is left as it is.
        transform = copy.copy(model.transform)
        transform._modules = dict(transform._modules)
        transform.add_module("sp_net", _PluginSPNet(model.transform.sp_net))
        encoder.transform = transform
    h, w = model.config.image_size
    example = torch.zeros(2, model.config.in_channels, h, w)
    return _export(encoder, (example,), path, [INPUT_NAME], OUTPUT_NAME, opset, blend)


def export_blend(
    sp_net: SPTransformerNetwork,
    path: str | Path,
    image_size: tuple[int, int] = (32, 100),
    offset_size: tuple[int, int] = (2, 6),
    opset: int = OPSET,
    blend: Blend = "plugin",
) -> onnx.ModelProto:
    """Write the blend op alone (inputs ``image, weights, offsets, gate``, output ``blended``, dynamic batch)
    with ``sp_net``'s exponents and instance-norm parameters: the unit under test for the plugin and
    its ONNX Runtime implementation."""
    _check_blend(blend)
    module = _PluginSPNet(sp_net) if blend == "plugin" else sp_net
    c = sp_net.bn.num_features
    example = (
        torch.zeros(2, c, *image_size),
        torch.zeros(2, len(sp_net.power_list)),
        torch.full((2, c, *offset_size), 0.5),
        torch.full((2,), 0.5),
    )
    return _export(module, example, path, BLEND_INPUTS, BLEND_OUTPUT, opset, blend)


def _relative(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


def verify_encoder(model: SPIN, path: str | Path, batch_sizes=(1, 3, 8), seed: int = 0) -> float:
    """Run the ONNX graph in ONNX Runtime on fresh random images and return the largest relative error
    ``||onnx - torch|| / ||torch||`` against PyTorch over ``batch_sizes``. Plugin graphs run with the
    plugin's host reference (:mod:`spinrec.runtime.ort_spin_blend`)."""
    from spinrec.runtime import open_encoder

    run = open_encoder("onnxruntime", path, blend_reference=True)
    rng = np.random.default_rng(seed)
    worst = 0.0
    h, w = model.config.image_size
    for b in batch_sizes:
        x = rng.uniform(-1, 1, size=(b, model.config.in_channels, h, w)).astype(np.float32)
        got = run(x)
        with torch.no_grad():
            ref = model.encode(torch.from_numpy(x)).numpy()
        worst = max(worst, _relative(got, ref))
    return worst


#: Words rendered as the check images of :func:`check_encoder` (with as many noise images again).
CHECK_WORDS = ("hello", "WORLD", "spin", "2026", "text-42", "Triton")
#: :func:`check_encoder` accepts a feature error up to this multiple of PyTorch's own float32 noise.
NOISE_FACTOR = 3.0
#: ... and always up to this relative error (float32 agreement of a well-conditioned checkpoint).
ERROR_FLOOR = 1e-4


def check_images(model: SPIN, seed: int = 0) -> np.ndarray:
    """``[12, C, 32, 100]``: :data:`CHECK_WORDS` rendered in black on white and preprocessed as served,
    then as many uniform-noise images (the fiducials and features move more on noise than on text)."""
    import cv2

    from spinrec.preprocess import preprocess

    words = []
    for i, word in enumerate(CHECK_WORDS):
        (w, h), base = cv2.getTextSize(word, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 2)
        image = np.full((h + base + 12, w + 12 + 6 * i, 3), 255, np.uint8)
        cv2.putText(image, word, (6 + 3 * i, h + 6), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2, cv2.LINE_AA)
        words.append(preprocess(image))
    x = np.stack(words)
    if model.config.in_channels != x.shape[1]:
        x = np.repeat(x[:, :1], model.config.in_channels, axis=1)
    h, w = model.config.image_size
    noise = np.random.default_rng(seed).uniform(-1, 1, size=(len(words), model.config.in_channels, h, w))
    return np.concatenate([x, noise.astype(np.float32)])


@dataclass
class EncoderCheck:
    """What :func:`check_encoder` measured; ``ok`` is the verdict, ``reason`` says why not."""

    error: float  #: largest relative feature error, ONNX Runtime vs PyTorch, over the batches
    noise: float  #: largest relative feature change of PyTorch itself under 1-ulp input nudges
    compared: int  #: check images whose greedy tokens PyTorch's own nudge leaves unchanged
    differing: list[str] = field(default_factory=list)  #: those whose ONNX tokens differ
    floor: float = ERROR_FLOOR
    noise_factor: float = NOISE_FACTOR

    @property
    def tolerance(self) -> float:
        """The feature error accepted: ``max(floor, noise_factor * noise)``."""
        return max(self.floor, self.noise_factor * self.noise)

    @property
    def ok(self) -> bool:
        return self.error <= self.tolerance and not self.differing

    @property
    def reason(self) -> str:
        parts = []
        if self.error > self.tolerance:
            parts.append(
                f"relative feature error {self.error:.3g} > tolerance {self.tolerance:.3g} "
                f"(= max({self.floor:g}, {self.noise_factor:g} x float32 noise {self.noise:.3g}))"
            )
        if self.differing:
            parts.append(f"decoded tokens differ on {len(self.differing)} of {self.compared} check images: " + "; ".join(self.differing))
        return ", and ".join(parts)


def check_encoder(
    model: SPIN, path: str | Path, floor: float = ERROR_FLOOR, noise_factor: float = NOISE_FACTOR,
    batch_sizes: Sequence[int] = (1, 3, 8), seed: int = 0,
) -> EncoderCheck:
    """Judge an exported encoder by what matters for reading text.

    On :func:`check_images` (split into ``batch_sizes``, so dynamic batching is exercised):

    - *tokens*: the head (PyTorch) reads the ONNX features and the PyTorch features; the 26 greedy
      tokens must be identical, on every image whose tokens PyTorch's own float32 noise does not change
      (an image at a float32 tie has no single right reading, so it is counted out, never in);
    - *features*: ``||onnx - torch|| / ||torch||`` must be at most ``max(floor, noise_factor * noise)``,
      ``noise`` being how far PyTorch's own features move when 1 % of the input pixels move by one
      float32 ulp. A checkpoint whose TPS grid or SPN is ill-conditioned in float32 (PaddleOCR's are:
      the fp32 grid cancels terms ~100x its size) earns a tolerance from its own measured noise instead
      of a fixed number it cannot meet in any runtime, PaddleOCR's included.
    """
    from spinrec.runtime import open_encoder

    run = open_encoder("onnxruntime", path, blend_reference=True)
    x = check_images(model, seed)
    nudged = np.where(np.random.default_rng(seed + 1).random(x.shape) < 0.01, np.nextafter(x, np.float32(2)), x)
    error = noise = 0.0
    compared, differing = 0, []
    start = 0
    for b in batch_sizes:
        batch = slice(start, min(start + b, len(x)))
        start = batch.stop
        if batch.start >= batch.stop:
            break
        got = run(x[batch])
        with torch.no_grad():
            ref = model.encode(torch.from_numpy(x[batch]))
            moved = model.encode(torch.from_numpy(nudged[batch]))
            tokens = [model.head(f).argmax(-1).numpy() for f in (ref, moved, torch.from_numpy(got))]
        error = max(error, _relative(got, ref.numpy()))
        noise = max(noise, _relative(moved.numpy(), ref.numpy()))
        for i, (want, shaken, onnx_tokens) in enumerate(zip(*tokens), start=batch.start):
            if np.array_equal(want, shaken):
                compared += 1
                if not np.array_equal(want, onnx_tokens):
                    differing.append(f"image {i}: {onnx_tokens.tolist()} != {want.tolist()}")
    return EncoderCheck(error, noise, compared, differing, floor, noise_factor)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m spinrec.export.onnx_export --weights CKPT --output PATH [--blend plugin]``: export and verify."""
    import argparse

    from spinrec import weights

    parser = argparse.ArgumentParser(prog="python -m spinrec.export.onnx_export", description="Export the SPIN encoder to ONNX.")
    parser.add_argument("--weights", type=Path, required=True, help="safetensors checkpoint (spinrec.weights.save)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--blend", choices=("decomposed", "plugin"), default="decomposed")
    parser.add_argument("--max-error", type=float, default=ERROR_FLOOR, help="relative feature error always accepted vs PyTorch (see check_encoder)")
    parser.add_argument("--noise-factor", type=float, default=NOISE_FACTOR, help="multiple of PyTorch's own float32 noise accepted")
    args = parser.parse_args(argv)
    model = weights.load(args.weights)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    export_encoder(model, args.output, blend=args.blend)
    check = check_encoder(model, args.output, args.max_error, args.noise_factor)
    print(
        f"wrote {args.output} ({args.blend}); relative error vs PyTorch {check.error:.2e} "
        f"(tolerance {check.tolerance:.2e}, float32 noise {check.noise:.2e}); tokens compared on {check.compared} images"
    )
    if not check.ok:
        print(f"ONNX encoder refused: {check.reason}")
    return 0 if check.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
