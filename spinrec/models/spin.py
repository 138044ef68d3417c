"""The whole SPIN recognizer (PaddleOCR ``rec_r32_gaspin_bilstm_att``), split at the serving seam.

``encode``: image ``[B, 1, 32, 100]`` -> sequence features ``[B, 26, 512]`` (GA-SPIN + ResNet32 + BiLSTMs);
this is what is exported to ONNX and compiled by TensorRT. ``decode``: features -> per-step class
probabilities (the attention head's greedy loop), run by the decoder stage.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from spinrec.charset import SPIN_DICT
from spinrec.models.attention_head import SPINAttentionHead
from spinrec.models.gaspin import GASPINTransformer
from spinrec.models.resnet32 import ResNet32
from spinrec.models.sequence import SequenceEncoder


@dataclass
class SPINConfig:
    """Architecture hyper-parameters, named after PaddleOCR's YAML (``Architecture`` and ``Global``).

    The defaults are the published ``rec_r32_gaspin_bilstm_att``. ``backbone_out_channels``,
    ``neck_hidden_size``, ``neck_out_channels`` and ``head_hidden_size`` are the width knobs of
    smaller variants.
    """

    in_channels: int = 1
    image_size: tuple[int, int] = (32, 100)
    offsets: bool = True
    default_type: int = 6
    loc_lr: float = 0.1
    stn: bool = True
    backbone_out_channels: int = 512
    neck_hidden_size: int = 256
    neck_out_channels: tuple[int, ...] = (256, 512)
    head_hidden_size: int = 256
    max_text_length: int = 25
    num_classes: int = len(SPIN_DICT) + 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SPINConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown SPIN config keys: {sorted(unknown)}")
        d = dict(d)
        for key in ("image_size", "neck_out_channels"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    @property
    def sequence_length(self) -> int:
        """Encoder time steps: image width / 4 + 1 (26 for width 100)."""
        return self.image_size[1] // 4 + 1

    @property
    def feature_channels(self) -> int:
        return self.neck_out_channels[-1]


class SPIN(nn.Module):
    """Top-level modules ``transform``, ``backbone``, ``neck``, ``head`` name every state-dict key
    exactly as PaddleOCR does (see :mod:`spinrec.weights` for the conversion rules)."""

    def __init__(self, config: SPINConfig | None = None):
        super().__init__()
        cfg = config or SPINConfig()
        self.config = cfg
        self.transform = GASPINTransformer(
            cfg.in_channels, cfg.image_size, cfg.offsets, "BN", cfg.default_type, cfg.loc_lr, cfg.stn
        )
        self.backbone = ResNet32(cfg.in_channels, cfg.backbone_out_channels)
        self.neck = SequenceEncoder(cfg.backbone_out_channels, cfg.neck_hidden_size, cfg.neck_out_channels)
        self.head = SPINAttentionHead(cfg.feature_channels, cfg.num_classes, cfg.head_hidden_size, cfg.max_text_length)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """``[B, C, 32, 100]`` in ``[-1, 1]`` -> ``[B, 26, feature_channels]``."""
        return self.neck(self.backbone(self.transform(image)))

    def decode(self, feats: torch.Tensor, stop_at_eos: bool = False) -> torch.Tensor:
        """``[B, 26, C]`` -> probabilities ``[B, T, num_classes]`` (see :class:`SPINAttentionHead`)."""
        return self.head(feats, stop_at_eos=stop_at_eos)

    def forward(self, image: torch.Tensor, targets: torch.Tensor | None = None, stop_at_eos: bool = False) -> torch.Tensor:
        """Training (``targets`` = labels ``[B, max_text_length + 2]``): logits ``[B, 26, classes]``.
        Inference: probabilities as :meth:`decode`."""
        feats = self.encode(image)
        if targets is not None:
            return self.head(feats, targets=targets)
        return self.decode(feats, stop_at_eos)

    def encoder(self) -> "SPINEncoder":
        """A module view of the encoder half, sharing this model's parameters (for export)."""
        return SPINEncoder(self)


class SPINEncoder(nn.Module):
    """``image [B, C, 32, 100]`` -> ``features [B, 26, C']``: the graph exported to ONNX / TensorRT."""

    def __init__(self, model: SPIN):
        super().__init__()
        self.transform = model.transform
        self.backbone = model.backbone
        self.neck = model.neck

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.neck(self.backbone(self.transform(image)))


def spin_r32(**overrides) -> SPIN:
    """The published configuration (``rec_r32_gaspin_bilstm_att``), optionally with overrides."""
    return SPIN(SPINConfig(**overrides))
