"""Grow a trained SPIN's backbone wider without changing what it computes (Net2WiderNet).

The compact default was trained with ``backbone_out_channels`` 64 on CPU cores; a GPU lease is long enough
to train a wider backbone but not to train one from scratch to the same accuracy. Widening by an integer
factor ``k`` keeps the trained function: every backbone channel ``c`` of the small model becomes ``k``
replicas ``c, c + C, ..., c + (k - 1) C`` carrying the same activation, so each consumer of a widened
tensor (a backbone convolution, or the first neck LSTM's input weights) splits each weight over the ``k``
replicas with proportions that sum to one. The proportions are random, not ``1/k``: replicas with equal
outgoing weights would receive equal gradients forever and never become different features.

Batch norm keeps every replica identical in training mode too (same batch statistics), and residual sums
add tensors with the same replica layout, so the widened model equals the small one to rounding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import torch

from spinrec.models.spin import SPINConfig

_NECK_INPUTS = ("neck.encoder.encoder.0.rnn.weight_ih_l0", "neck.encoder.encoder.0.rnn.weight_ih_l0_reverse")


def widening_factor(small: SPINConfig, large: SPINConfig) -> int:
    """``k`` when ``large`` is ``small`` with ``backbone_out_channels`` times an integer ``k`` >= 1, else a
    ValueError naming what differs."""
    differs = [
        f.name
        for f in dataclasses.fields(SPINConfig)
        if f.name != "backbone_out_channels" and getattr(small, f.name) != getattr(large, f.name)
    ]
    if differs:
        raise ValueError(f"only backbone_out_channels can grow; these differ too: {differs}")
    k, rest = divmod(large.backbone_out_channels, small.backbone_out_channels)
    if k < 1 or rest:
        raise ValueError(
            f"backbone_out_channels {large.backbone_out_channels} is not a multiple of {small.backbone_out_channels}"
        )
    return k


def _split(shape: tuple[int, ...], k: int, rng: np.random.Generator) -> torch.Tensor:
    """Proportions ``[k, *shape]`` that sum to 1 over the first axis, each within [0.5/k, 1.5/k]."""
    p = rng.uniform(0.5, 1.5, (k, *shape))
    return torch.from_numpy(p / p.sum(0, keepdims=True)).float()


def _widen_input(w: torch.Tensor, k: int, rng: np.random.Generator) -> torch.Tensor:
    """Input axis 1 of ``w`` from C to k*C, each weight split over its replicas."""
    shares = _split(tuple(w.shape), k, rng)
    return torch.cat([w * shares[r] for r in range(k)], dim=1)


def widen_state(state: Mapping[str, torch.Tensor], small: SPINConfig, large: SPINConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of ``small`` (a :class:`SPIN` state) as a state of ``large`` computing the same function.

    Every backbone tensor is widened on its channel axes (the stem's image input stays as it is); the first
    neck BiLSTM's input weights are split; everything else is copied.
    """
    k = widening_factor(small, large)
    rng = np.random.default_rng(seed)
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        t = t.float() if t.is_floating_point() else t
        if name.startswith("backbone.") and t.dim() == 4:  # convolution [out, in, kh, kw]
            if ".conv0_1." not in name:
                t = _widen_input(t, k, rng)
            t = t.repeat(k, 1, 1, 1)
        elif name.startswith("backbone.") and t.dim() == 1:  # batch-norm weight, bias and running stats
            t = t.repeat(k)
        elif name in _NECK_INPUTS:
            t = _widen_input(t, k, rng)
        out[name] = t
    return out
