"""GA-SPIN: the geometry-absorbed structure-preserving inner-offset transform (PaddleOCR ``GA_SPIN``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spinrec.models.blend import power_exponents, spin_blend
from spinrec.models.tps import TPSGridGenerator, fiducials


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with its stored statistics and never updates them.

    PaddleOCR builds the transform's norms as ``BatchNorm2D(use_global_stats=True)``: the same in
    training and inference. State-dict keys are those of ``nn.BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class TailSigmoid(torch.autograd.Function):
    """``torch.sigmoid`` whose ONNX export stays accurate far into the negative tail.

    The blend raises the offset map times the gate to the power 0.03, whose slope is unbounded at 0: a
    closed gate or a dark offset cell gives products of 1e-10, and ``1e-10 ** 0.03`` is 0.5, not 0. ONNX
    Runtime's ``Sigmoid`` has an absolute error of about 6e-8 and returns 0 below -18, which moved
    rectified pixels of a trained checkpoint by 0.017. ``1 / (1 + exp(-z))`` keeps the relative accuracy
    of ``Exp`` in every runtime (it overflows to exactly 0 below about -88, as PyTorch's sigmoid does).
    PyTorch itself runs ``torch.sigmoid``, forward and backward.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        y = torch.sigmoid(z)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return grad * y * (1 - y)

    @staticmethod
    def symbolic(g, z):
        one = g.op("Constant", value_t=torch.tensor(1.0))
        return g.op("Reciprocal", g.op("Add", one, g.op("Exp", g.op("Neg", z))))


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), FrozenBatchNorm2d(cout), nn.ReLU()]


class SPTransformerNetwork(nn.Module):
    """Structure-preserving transformation network (SPN, SPIN eq. 2): the power curves and their norm.

    Args:
        nc: image channels.
        default_type: K; the transform uses the 2K+1 exponents of :func:`power_exponents`.
    """

    def __init__(self, nc: int = 1, default_type: int = 6):
        super().__init__()
        self.power_list = power_exponents(default_type)
        self.bn = nn.InstanceNorm2d(nc, affine=True, track_running_stats=False, eps=1e-5)

    def forward(
        self, image: torch.Tensor, weights: torch.Tensor, offsets: torch.Tensor | None, gate: torch.Tensor | None
    ) -> torch.Tensor:
        """``[B, C, H, W]`` image, ``[B, 2K+1]`` weights, ``[B, C, h, w]`` offsets, ``[B]`` gate -> image."""
        return spin_blend(image, weights, offsets, gate, self.bn.weight, self.bn.bias, self.power_list, self.bn.eps)


class GASPINTransformer(nn.Module):
    """GA-SPIN rectifier: localisation trunk -> (SPN weights, AIN gate and offsets, TPS fiducials).

    Constructor arguments follow PaddleOCR's ``Transform`` config (``GA_SPIN``).

    Args:
        in_channels: image channels (1 for SPIN's grayscale input).
        I_r_size: rectified size (H, W), as PaddleOCR's ``GridGenerator.build_P_paddle`` reads it.
        offsets: use the inner-offset network (AIN); True in the published model.
        norm_type: only ``"BN"`` (global-statistics batch norm) exists in PaddleOCR's working code.
        default_type: K of the power curves (6 -> 13 exponents).
        loc_lr: learning-rate multiplier of ``stucture_fc2`` (used by the trainer's parameter groups).
        stn: apply the TPS warp.
        num_fiducial: F of the TPS (20).

    Input ``[B, C, 32, 100]`` in ``[-1, 1]``; output ``[B, C, *I_r_size]`` (stn) or ``[B, C, H, W]``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        I_r_size: tuple[int, int] = (32, 100),
        offsets: bool = False,
        norm_type: str = "BN",
        default_type: int = 6,
        loc_lr: float = 1.0,
        stn: bool = True,
        num_fiducial: int = 20,
    ):
        super().__init__()
        if norm_type != "BN":
            raise NotImplementedError(f"norm_type {norm_type!r}: only 'BN' is supported")
        self.offsets = offsets
        self.stn = stn
        self.loc_lr = loc_lr
        self.I_r_size = tuple(I_r_size)
        self.num_fiducial = num_fiducial
        self.sp_net = SPTransformerNetwork(in_channels, default_type)
        self.spt_length = 2 * default_type + 1
        # Module indices reproduce PaddleOCR's Sequential numbering, hence its state-dict keys.
        self.spt_convnet = nn.Sequential(
            *_conv_bn_relu(in_channels, 32), nn.MaxPool2d(2, 2),
            *_conv_bn_relu(32, 64), nn.MaxPool2d(2, 2),
            *_conv_bn_relu(64, 128), nn.MaxPool2d(2, 2),
        )  # fmt: skip
        self.stucture_fc1 = nn.Sequential(
            *_conv_bn_relu(128, 256), nn.MaxPool2d(2, 2),
            *_conv_bn_relu(256, 256), nn.MaxPool2d(2, 2),
            *_conv_bn_relu(256, 512),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(512, 256), nn.BatchNorm1d(256), nn.ReLU(),
        )  # fmt: skip
        nn.init.normal_(self.stucture_fc1[13].weight, std=0.001)
        self.out_weight = self.spt_length + int(offsets) + (2 * num_fiducial if stn else 0)
        self.stucture_fc2 = nn.Linear(256, self.out_weight)
        nn.init.zeros_(self.stucture_fc2.weight)
        with torch.no_grad():
            self.stucture_fc2.bias.copy_(torch.from_numpy(self._initial_bias(default_type)))
        if stn:
            self.GridGenerator = TPSGridGenerator(2 * num_fiducial, num_fiducial, self.I_r_size)
        if offsets:
            self.offset_fc1 = nn.Sequential(*_conv_bn_relu(128, 16))
            self.offset_fc2 = nn.Conv2d(16, in_channels, 3, 1, 1)
            self.pool = nn.MaxPool2d(2, 2)

    def _initial_bias(self, default_type: int) -> np.ndarray:
        """Identity start: only the exponent-1 curve, a closed gate, the TPS base fiducials."""
        parts = [np.zeros(2 * default_type), [5.0]]
        if self.offsets:
            parts.append([-5.0])
        if self.stn:
            c = fiducials(self.num_fiducial)
            half = self.num_fiducial // 2
            c[:half, 1] = np.linspace(0.0, -1.0, half)
            c[half:, 1] = np.linspace(1.0, 0.0, half)
            parts.append(c.reshape(-1))
        return np.concatenate(parts).astype(np.float32)

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """The localisation outputs: weights ``[B, 2K+1]``, offsets ``[B, C, 2, 6]`` (sigmoid),
        gate ``[B]`` (sigmoid), fiducials ``[B, F, 2]``; absent parts are None."""
        feat = self.spt_convnet(x)
        v = self.stucture_fc2(self.stucture_fc1(feat))
        weights = v[:, : self.spt_length]
        offsets = gate = c_prime = None
        start = self.spt_length
        if self.offsets:
            gate = TailSigmoid.apply(v[:, start])
            start += 1
            offsets = TailSigmoid.apply(self.pool(self.offset_fc2(self.offset_fc1(feat))))
        if self.stn:
            c_prime = v[:, start:].reshape(-1, self.num_fiducial, 2)
        return weights, offsets, gate, c_prime

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, offsets, gate, c_prime = self.predict(x)
        if offsets is not None and offsets.shape[2:] != (2, 6):
            raise ValueError(f"input {tuple(x.shape[2:])} gives offsets {tuple(offsets.shape[2:])}, expected 2x6")
        y = self.sp_net(x, weights, offsets, gate)
        if not self.stn:
            return y
        return self.rectify(y, c_prime)

    def rectify(self, y: torch.Tensor, c_prime: torch.Tensor) -> torch.Tensor:
        """TPS warp: ``[B, C, H, W]`` image and ``[B, F, 2]`` fiducials -> ``[B, C, *I_r_size]``."""
        grid = self.GridGenerator(c_prime)
        # PaddleOCR samples in float32 even under AMP.
        out = F.grid_sample(y.float(), grid.float(), mode="bilinear", padding_mode="border", align_corners=True)
        return out.to(y.dtype)
