"""The SPIN blend op: GA-SPIN's intensity transform as one function.

This is the exact computation the ``SpinBlend`` TensorRT plugin (``spinrec/kernels/spinBlendPlugin``)
implements; the PyTorch model calls this function, so both share one contract.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F


#: Smallest intensity at which training differentiates the power curves (see :func:`spin_blend`).
GRAD_FLOOR = 1e-6


def power_exponents(k: int = 6) -> list[float]:
    """The 2K+1 structure-preserving exponents beta of SPIN (PaddleOCR's ``cal_K``).

    For i = 1..K: ``lower = round(ln(1 - i*q) / ln(i*q), 2)`` with ``q = 0.5 / (K + 1)``, then
    ``upper = round(1 / lower, 2)`` (the reciprocal of the *rounded* value); pairs appended in order,
    then 1.0. ``power_exponents(6)`` is
    ``[0.03, 33.33, 0.08, 12.5, 0.16, 6.25, 0.27, 3.7, 0.43, 2.33, 0.66, 1.52, 1.0]``.
    """
    q = 0.5 / (k + 1)
    betas: list[float] = []
    for i in range(1, k + 1):
        lower = round(math.log(1 - q * i) / math.log(q * i), 2)
        betas += [lower, round(1 / lower, 2)]
    return betas + [1.0]


def spin_blend(
    image: torch.Tensor,
    weights: torch.Tensor,
    offsets: torch.Tensor | None,
    gate: torch.Tensor | None,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    exponents: Sequence[float],
    eps: float = 1e-5,
) -> torch.Tensor:
    """Structure-preserving intensity transform with the inner-offset blend (SPIN eq. 2-5).

    Args:
        image: ``[B, C, H, W]`` float32, the preprocessed image in ``[-1, 1]``.
        weights: ``[B, K]`` per-sample curve weights ``w_k`` (K = ``len(exponents)``, 13 for SPIN).
        offsets: ``[B, C, h, w]`` low-resolution inner-offset map, already through its sigmoid, so in
            ``(0, 1)`` (``[B, 1, 2, 6]`` in SPIN); or None for SPN without AIN (then ``gate`` is ignored).
        gate: ``[B]`` blend gate ``alpha`` in ``[0, 1]`` (the sigmoid of the AIN logit).
        norm_weight, norm_bias: ``[C]`` affine parameters of the instance norm.
        exponents: the K exponents ``beta_k`` (``power_exponents(6)``).
        eps: instance-norm epsilon (PaddleOCR: 1e-5).

    Returns:
        ``[B, C, H, W]`` float32 in ``(-1, 1)``:

        1. ``off = bilinear_resize(offsets, (H, W))`` with half-pixel centres (``align_corners=False``);
        2. ``I = (1 - alpha) * (image + 1) / 2 + alpha * off``;
        3. ``S = sum_k w_k * I ** beta_k``;
        4. ``S = (S - mean) / sqrt(var + eps) * norm_weight + norm_bias`` with the mean and the biased
           variance taken per sample and channel over ``H * W``;
        5. ``2 * sigmoid(S) - 1``.

    Numerics: everything is float32. ``I`` is clamped to ``[0, 1]``: for inputs in ``[-1, 1]`` (all that
    preprocessing produces) the clamp changes nothing, and it keeps an out-of-range input from giving
    ``pow`` a negative base (NaN in PaddleOCR). At ``I = 0``, ``0 ** beta = 0`` for every beta > 0; at
    ``I = 1`` every power is 1. ``I ** 33.33`` underflows to 0 for ``I`` below about 0.05 and
    ``I ** 0.03`` is within 1e-3 of 1 above 0.97: both are exact float32 behaviour and are why the op must
    not run in float16. A constant ``S`` (zero variance) normalises to ``norm_bias``. The gradient
    of ``I ** beta`` with ``beta < 1`` is infinite at ``I = 0``: when autograd records the op, the
    gradient is taken at ``max(I, GRAD_FLOOR)`` while the forward value stays ``I ** beta``.
    """
    if weights.shape[1] != len(exponents):
        raise ValueError(f"weights has {weights.shape[1]} curves, expected {len(exponents)}")
    x = (image + 1) * 0.5
    if offsets is not None:
        if gate is None:
            raise ValueError("an offset map needs its gate")
        off = F.interpolate(offsets, size=image.shape[2:], mode="bilinear", align_corners=False)
        alpha = gate.reshape(-1, 1, 1, 1)
        x = x * (1 - alpha) + off * alpha
    x = x.clamp(0.0, 1.0).unsqueeze(1)
    beta = torch.tensor(exponents, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1, 1)
    powers = x.pow(beta)
    if powers.requires_grad:
        # d(I^b)/dI = b I^(b-1) is infinite at I = 0 for b < 1 (a black pixel where the offset map is 0):
        # training takes the gradient at max(I, GRAD_FLOOR) while the value stays exactly I^b.
        floored = x.clamp_min(GRAD_FLOOR).pow(beta)
        powers = floored + (powers - floored).detach()
    s = (powers * weights[:, :, None, None, None]).sum(dim=1)
    s = F.instance_norm(s, weight=norm_weight, bias=norm_bias, eps=eps)
    return torch.sigmoid(s) * 2 - 1
