"""Sequence encoder of SPIN: Im2Seq and the cascaded BiLSTM (PaddleOCR ``SequenceEncoder``,
``encoder_type: cascadernn``)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class BidirectionalLSTM(nn.Module):
    """One BiLSTM (hidden ``hidden_size`` per direction) followed by a Linear to ``output_size``."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.rnn = nn.LSTM(input_size, hidden_size, batch_first=True, bidirectional=True)
        self.linear = nn.Linear(2 * hidden_size, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, input_size]`` -> ``[B, T, output_size]``."""
        return self.linear(self.rnn(x)[0])


class EncoderWithCascadeRNN(nn.Module):
    def __init__(self, in_channels: int, hidden_size: int, out_channels: Sequence[int]):
        super().__init__()
        sizes = [in_channels, *out_channels]
        self.encoder = nn.ModuleList(
            BidirectionalLSTM(sizes[i], hidden_size, sizes[i + 1]) for i in range(len(out_channels))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.encoder:
            x = layer(x)
        return x


class SequenceEncoder(nn.Module):
    """``[B, C, 1, T]`` feature map -> ``[B, T, out_channels[-1]]`` sequence (time = image columns).

    Args mirror the YAML: ``in_channels`` (512), ``hidden_size`` (256), ``out_channels`` ([256, 512]).
    ``with_linear`` is always on in SPIN's config and the only supported value.
    """

    def __init__(
        self, in_channels: int = 512, hidden_size: int = 256, out_channels: Sequence[int] = (256, 512), with_linear: bool = True
    ):
        super().__init__()
        if not with_linear:
            raise NotImplementedError("SPIN's cascade RNN always has its Linear layers")
        self.encoder = EncoderWithCascadeRNN(in_channels, hidden_size, out_channels)
        self.out_channels = out_channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] != 1:
            raise ValueError(f"feature map height must be 1, got {x.shape[2]}")
        return self.encoder(x.squeeze(2).permute(0, 2, 1))
