"""Export the encoder (GA-SPIN + ResNet32 + BiLSTMs) to ONNX and check it with ONNX Runtime.

The graph has one input ``image`` ``[B, 1, 32, 100]`` float32 and one output ``features``
``[B, 26, C]`` float32, with a dynamic batch dimension. Opset 17: GridSample exists from 16, and
TensorRT's ONNX parser reads its opset-16 mode names (``bilinear``), not opset 20's (``linear``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from spinrec.models.spin import SPIN

INPUT_NAME, OUTPUT_NAME = "image", "features"
OPSET = 17


def export_encoder(model: SPIN, path: str | Path, opset: int = OPSET) -> onnx.ModelProto:
    """Write ``model``'s encoder to ``path`` and return the checked ONNX model."""
    encoder = model.encoder().eval()
    h, w = model.config.image_size
    example = torch.zeros(2, model.config.in_channels, h, w)
    with torch.no_grad():
        torch.onnx.export(
            encoder,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def verify_encoder(model: SPIN, path: str | Path, batch_sizes=(1, 3, 8), seed: int = 0) -> float:
    """Run the ONNX graph in ONNX Runtime on fresh random images and return the largest relative error
    ``||onnx - torch|| / ||torch||`` against PyTorch over ``batch_sizes``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    h, w = model.config.image_size
    for b in batch_sizes:
        x = rng.uniform(-1, 1, size=(b, model.config.in_channels, h, w)).astype(np.float32)
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
        with torch.no_grad():
            ref = model.encode(torch.from_numpy(x)).numpy()
        worst = max(worst, float(np.linalg.norm(got - ref) / np.linalg.norm(ref)))
    return worst
