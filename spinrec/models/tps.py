"""Thin-plate-spline sampling grid of GA-SPIN (PaddleOCR's ``GridGenerator``)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def fiducials(num_fiducial: int) -> np.ndarray:
    """``[F, 2]`` base fiducials C: F/2 points along the top edge (y = -1), then F/2 along the bottom."""
    x = np.linspace(-1.0, 1.0, num_fiducial // 2)
    top = np.stack([x, -np.ones_like(x)], axis=1)
    bottom = np.stack([x, np.ones_like(x)], axis=1)
    return np.concatenate([top, bottom], axis=0)


def inverse_delta(c: np.ndarray) -> np.ndarray:
    """``[F+3, F+3]`` inverse of the TPS system matrix for the fiducials ``c`` (float64)."""
    f = c.shape[0]
    r = np.linalg.norm(c[:, None, :] - c[None, :, :], axis=2)
    np.fill_diagonal(r, 1.0)
    r_hat = r**2 * np.log(r)
    delta = np.concatenate(
        [
            np.concatenate([np.ones((f, 1)), c, r_hat], axis=1),
            np.concatenate([np.zeros((2, 3)), c.T], axis=1),
            np.concatenate([np.zeros((1, 3)), np.ones((1, f))], axis=1),
        ],
        axis=0,
    )
    return np.linalg.inv(delta)


def sampling_lattice(size: tuple[int, int]) -> np.ndarray:
    """``[H * W, 2]`` lattice points (x, y) for ``size = (H, W)``, x fastest: point ``i * W + j`` is
    output pixel (i, j), at the pixel centre ``((2j + 1 - W) / W, (2i + 1 - H) / H)``.

    PaddleOCR's ``GridGenerator.build_P_paddle`` (``ppocr/modeling/transforms/tps.py``) unpacks
    GA-SPIN's ``I_r_size = (32, 100)`` as (height, width), meshgrids x against y and transposes to
    ``[H, W, 2]`` before flattening: the natural lattice built here.
    """
    height, width = size
    gx = (np.arange(-width, width, 2) + 1.0) / width
    gy = (np.arange(-height, height, 2) + 1.0) / height
    return np.stack(np.meshgrid(gx, gy), axis=2).reshape(-1, 2)


def lattice_basis(c: np.ndarray, p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """``[N, F+3]`` rows ``[1, x, y, d_f^2 ln(d_f + eps)]`` of the lattice points ``p`` (float64)."""
    d = np.linalg.norm(p[:, None, :] - c[None, :, :], axis=2)
    return np.concatenate([np.ones((p.shape[0], 1)), p, d**2 * np.log(d + eps)], axis=1)


class TPSGridGenerator(nn.Module):
    """Maps predicted fiducials C' to a ``grid_sample`` grid.

    Args:
        in_channels: size of the flattened fiducials (2 F), PaddleOCR's ``GridGenerator(in_channels, F)``.
        num_fiducial: F, 20 in GA-SPIN.
        output_size: rectified size (H, W), the lattice of :func:`sampling_lattice`.

    ``fc`` (2F -> 6) predicts the three extra rows of the TPS right-hand side. PaddleOCR initialises it
    to zero with learning rate 0 and blocks its gradient, so it is frozen here too.
    """

    def __init__(self, in_channels: int = 40, num_fiducial: int = 20, output_size: tuple[int, int] = (32, 100)):
        super().__init__()
        self.num_fiducial = num_fiducial
        self.output_size = tuple(output_size)
        c = fiducials(num_fiducial)
        # PaddleOCR evaluates lattice_basis @ (inv_delta @ C') in float32: inv_delta is ill-conditioned and
        # the products cancel large terms, leaving ~1e-5 of rounding noise in the grid that any change in the
        # fiducials' last bit reshuffles (ONNX Runtime, TensorRT and PyTorch would disagree through it).
        # Folding the two constants in float64 removes that noise. They are first rounded to float32 as
        # PaddleOCR rounds them, which keeps the systematic part of its grid (the larger part, 3x).
        basis32 = lattice_basis(c, sampling_lattice(self.output_size)).astype(np.float32)
        folded = basis32.astype(np.float64) @ inverse_delta(c).astype(np.float32).astype(np.float64)
        self.register_buffer("tps_kernel", torch.from_numpy(folded.astype(np.float32)), persistent=False)
        self.fc = nn.Linear(in_channels, 6)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        self.fc.requires_grad_(False)

    def forward(self, c_prime: torch.Tensor) -> torch.Tensor:
        """``[B, F, 2]`` fiducials -> ``[B, H, W, 2]`` sampling grid (x, y) in ``[-1, 1]`` coordinates."""
        extra = self.fc(c_prime.flatten(1).detach()).reshape(-1, 3, 2)
        grid = torch.matmul(self.tps_kernel, torch.cat([c_prime, extra], dim=1))
        return grid.reshape(-1, self.output_size[0], self.output_size[1], 2)
