"""Multiply-accumulate count of one 32x100 image, from the model itself, and the FLOP-count limit.

The encoder is counted with forward hooks on a batch-1 pass (so the count follows the real shapes):
``Conv2d`` = output elements x (in_channels / groups) x kernel area; ``Linear`` = output elements x
in_features; ``LSTM`` = steps x directions x 4H x (input + H); the TPS grid = its two constant matmuls.
The attention head runs functional ops inside a Python loop, so it is counted from its weight shapes
with the decoder's own structure (i2h hoisted out of the loop, as :class:`spinrec.decoder.AttentionDecoder`
and the PyTorch head both do). Elementwise work (pow, norm, grid_sample, softmax) is ~0.1 M and left out,
as in ``shared/reference/spin-model.md`` section 9, whose figures :data:`REFERENCE_MMAC` repeats.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

#: spin-model.md section 9 (published model), millions of MACs per image.
REFERENCE_MMAC = {"transform": 56.4, "backbone": 5044.8, "neck": 78.4, "head": 28.4, "total": 5210.0}


def encoder_macs(model) -> dict[str, int]:
    """MACs per image of each top-level encoder part and of each backbone layer (keys like
    ``backbone.layer3``), measured with hooks on one forward pass of batch 1."""
    from spinrec.models.tps import TPSGridGenerator

    counts: dict[str, int] = defaultdict(int)
    handles = []

    def add(name: str, macs: int) -> None:
        top = name.split(".")[0]
        counts[top] += macs
        if top == "backbone":
            counts[".".join(name.split(".")[:3]) if name.startswith("backbone.ConvNet.layer") else "backbone.other"] += macs

    def hook(name: str, module: nn.Module):
        def fn(_m, inputs, output):
            if isinstance(module, nn.Conv2d):
                k = module.kernel_size[0] * module.kernel_size[1]
                add(name, output[0].numel() * (module.in_channels // module.groups) * k)
            elif isinstance(module, nn.Linear):
                add(name, output[0].numel() * module.in_features)
            elif isinstance(module, nn.LSTM):
                steps = inputs[0].shape[1] if module.batch_first else inputs[0].shape[0]
                dirs = 2 if module.bidirectional else 1
                h = module.hidden_size
                add(name, steps * dirs * 4 * h * (module.input_size + h) * module.num_layers)
            elif isinstance(module, TPSGridGenerator):
                kernel = module.tps_kernel  # [N, F+3], both TPS constants folded; 2 columns (x, y)
                add(name, kernel.shape[0] * kernel.shape[1] * 2)
        return fn

    for name, module in model.named_modules():
        if name.startswith("head"):
            continue
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.LSTM, TPSGridGenerator)):
            handles.append(module.register_forward_hook(hook(name, module)))
    try:
        h, w = model.config.image_size
        with torch.no_grad():
            model.encode(torch.zeros(1, model.config.in_channels, h, w))
    finally:
        for handle in handles:
            handle.remove()
    return dict(counts)


def head_macs(model, steps: int | None = None) -> int:
    """Attention-head MACs per image for ``steps`` decoding steps (default: all 26), i2h hoisted."""
    head = model.head
    cell = head.attention_cell
    t = model.config.sequence_length
    c = cell.i2h.in_features
    hd = cell.h2h.out_features
    steps = head.num_steps if steps is None and hasattr(head, "num_steps") else (steps or model.config.max_text_length + 1)
    per_step = (
        hd * hd  # h2h
        + t * hd  # score over the T positions
        + t * c  # context = attention-weighted sum of the features
        + 4 * hd * (c + hd)  # LSTM cell (the one-hot part is a row lookup, not a product)
        + hd * head.generator.out_features  # generator
    )
    return t * c * hd + steps * per_step


def model_macs(model) -> dict:
    """All parts in MACs, with totals and the reference figures to check against."""
    enc = encoder_macs(model)
    parts = {k: v for k, v in enc.items() if "." not in k}
    parts["head"] = head_macs(model)
    total = sum(parts.values())
    return {
        "parts_mac": parts,
        "backbone_layers_mac": {k: v for k, v in enc.items() if k.startswith("backbone.")},
        "encoder_mac": total - parts["head"],
        "total_mac": total,
        "reference_mmac": REFERENCE_MMAC,
        "relative_difference_to_reference": {
            k: (parts.get(k, total) / 1e6 - ref) / ref for k, ref in REFERENCE_MMAC.items() if k in parts or k == "total"
        },
    }


def conv_rate(batch: int = 32, channels: int = 512, height: int = 4, width: int = 26, threads: int = 2, seconds: float = 3.0) -> dict:
    """FP32 GFLOP/s of one 3x3 convolution of the backbone's dominant shape (layer3/layer4: 512 -> 512
    channels on 4 x 26, ~75 % of the model's MACs) through oneDNN (PyTorch), at ``threads`` threads.

    Timed as the median of repeated calls after warm-up; the result is the best this CPU does on the
    model's own arithmetic, so images/s = rate / FLOP per image is the limit any runtime can reach."""
    import time

    import numpy as np

    torch.set_num_threads(threads)
    conv = nn.Conv2d(channels, channels, 3, 1, 1, bias=False).eval()
    x = torch.randn(batch, channels, height, width)
    flop = 2 * batch * channels * channels * 9 * height * width
    times = []
    with torch.inference_mode():
        for _ in range(3):
            conv(x)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(times) < 5:
            t0 = time.perf_counter()
            conv(x)
            times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    return {
        "shape": f"N={batch} C={channels}->{channels} HxW={height}x{width} k=3x3",
        "threads": threads,
        "calls": len(times),
        "median_s": med,
        "gflops_median": flop / med / 1e9,
        "gflops_best": flop / min(times) / 1e9,
    }


def conv_probe(batch: int = 32, channels: int = 512, height: int = 4, width: int = 26, threads: int = 2):
    """``(call, flop per call, shape)`` of the same convolution as :func:`conv_rate`, to be timed
    *interleaved* with the candidates (:mod:`perf.timing`), so the limit sees the same background load."""
    torch.set_num_threads(threads)
    conv = nn.Conv2d(channels, channels, 3, 1, 1, bias=False).eval()
    x = torch.randn(batch, channels, height, width)

    def call():
        with torch.inference_mode():
            return conv(x)

    return call, 2 * batch * channels * channels * 9 * height * width, f"N={batch} C={channels}->{channels} HxW={height}x{width} k=3x3"
