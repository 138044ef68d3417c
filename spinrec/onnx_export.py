"""Export the encoder (GA-SPIN + ResNet32 + BiLSTMs) to ONNX and check it with ONNX Runtime.

The graph has one input ``image`` ``[B, 1, 32, 100]`` float32 and one output ``features``
``[B, 26, C]`` float32, with a dynamic batch dimension. Opset 17: GridSample exists from 16, and
TensorRT's ONNX parser reads its opset-16 mode names (``bilinear``), not opset 20's (``linear``).

The SPIN blend op (:func:`spinrec.blend.spin_blend`) is exported one of two ways:

- ``blend="decomposed"`` (default): standard ONNX ops (Resize, Pow, InstanceNormalization, ...), for
  ONNX Runtime on CPU.
- ``blend="plugin"``: one ``SpinBlend`` node in domain :data:`PLUGIN_DOMAIN`, implemented by the TensorRT
  plugin ``builders/plugins/spinBlendPlugin`` (TensorRT's parser maps a node to the plugin of the same
  name and ignores the domain) and, on CPU, by the plugin's host reference through onnxruntime-extensions
  (:mod:`spinrec.ort_spin_blend`). Inputs ``image, weights, offsets, gate, norm_weight, norm_bias``;
  attributes ``exponents`` (floats) and ``eps`` (float), named like the plugin's fields.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import onnx
import torch
from torch import nn

from spinrec.blend import spin_blend
from spinrec.models.gaspin import SPTransformerNetwork
from spinrec.models.spin import SPIN

INPUT_NAME, OUTPUT_NAME = "image", "features"
OPSET = 17
PLUGIN_OP = "SpinBlend"
# The onnxruntime-extensions PyOp domain: ORT needs a registered domain, TensorRT ignores it.
PLUGIN_DOMAIN = "ai.onnx.contrib"
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


def has_plugin_nodes(proto: onnx.ModelProto) -> bool:
    """Whether the graph holds ``SpinBlend`` nodes (so plain ONNX Runtime cannot run it)."""
    return any(node.op_type == PLUGIN_OP for node in proto.graph.node)


def verify_encoder(model: SPIN, path: str | Path, batch_sizes=(1, 3, 8), seed: int = 0) -> float:
    """Run the ONNX graph in ONNX Runtime on fresh random images and return the largest relative error
    ``||onnx - torch|| / ||torch||`` against PyTorch over ``batch_sizes``. Plugin graphs run with the
    plugin's host reference (:func:`spinrec.ort_spin_blend.session`)."""
    from spinrec.ort_spin_blend import session as ort_session

    sess = ort_session(path)
    rng = np.random.default_rng(seed)
    worst = 0.0
    h, w = model.config.image_size
    for b in batch_sizes:
        x = rng.uniform(-1, 1, size=(b, model.config.in_channels, h, w)).astype(np.float32)
        (got,) = sess.run([OUTPUT_NAME], {INPUT_NAME: x})
        with torch.no_grad():
            ref = model.encode(torch.from_numpy(x)).numpy()
        worst = max(worst, float(np.linalg.norm(got - ref) / np.linalg.norm(ref)))
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m spinrec.onnx_export --weights CKPT --output PATH [--blend plugin]``: export and verify."""
    import argparse

    from spinrec import weights

    parser = argparse.ArgumentParser(prog="python -m spinrec.onnx_export", description="Export the SPIN encoder to ONNX.")
    parser.add_argument("--weights", type=Path, required=True, help="safetensors checkpoint (spinrec.weights.save)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--blend", choices=("decomposed", "plugin"), default="decomposed")
    parser.add_argument("--max-error", type=float, default=1e-4, help="largest relative error accepted vs PyTorch")
    args = parser.parse_args(argv)
    model = weights.load(args.weights)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    export_encoder(model, args.output, blend=args.blend)
    error = verify_encoder(model, args.output)
    print(f"wrote {args.output} ({args.blend}); relative error vs PyTorch {error:.2e}")
    return 0 if error <= args.max_error else 1


if __name__ == "__main__":
    raise SystemExit(main())
