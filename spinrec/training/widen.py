"""Grow a trained SPIN without changing what it computes: a wider backbone (Net2WiderNet) and GA-SPIN's
TPS and offset branches turned on.

The compact default was trained with ``backbone_out_channels`` 64 on CPU cores; a GPU lease is long enough
to train a wider backbone but not to train one from scratch to the same accuracy. Widening by an integer
factor ``k`` keeps the trained function: every backbone channel ``c`` of the small model becomes ``k``
replicas ``c, c + C, ..., c + (k - 1) C`` carrying the same activation, so each consumer of a widened
tensor (a backbone convolution, or the first neck LSTM's input weights) splits each weight over the ``k``
replicas with proportions that sum to one. The proportions are random, not ``1/k``: replicas with equal
outgoing weights would receive equal gradients forever and never become different features.

Batch norm keeps every replica identical in training mode too (same batch statistics), and residual sums
add tensors with the same replica layout, so the widened model equals the small one to rounding.

Turning on ``stn`` or ``offsets`` (:func:`add_transform_branches`) appends rows to ``stucture_fc2`` with zero
weights: the gate's bias is PaddleOCR's -5 (a blend share of sigmoid(-5) = 0.7 %), the fiducials' bias the
canonical fiducials C, whose TPS warp is the identity up to the lattice's sub-pixel resampling (see
``tests/test_model.py``), not PaddleOCR's from-scratch RARE start, which halves and shears the word.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import torch

from spinrec.models.spin import SPINConfig
from spinrec.models.tps import fiducials

#: Config fields that :func:`grow_state` may switch from False to True.
BRANCHES = ("stn", "offsets")

_NECK_INPUTS = ("neck.encoder.encoder.0.rnn.weight_ih_l0", "neck.encoder.encoder.0.rnn.weight_ih_l0_reverse")


def widening_factor(small: SPINConfig, large: SPINConfig) -> int:
    """``k`` when ``large`` is ``small`` with ``backbone_out_channels`` times an integer ``k`` >= 1, else a
    ValueError naming what differs."""
    differs = [
        f.name
        for f in dataclasses.fields(SPINConfig)
        if f.name not in ("backbone_out_channels", *BRANCHES) and getattr(small, f.name) != getattr(large, f.name)
    ]
    differs += [b for b in BRANCHES if getattr(small, b) and not getattr(large, b)]
    if differs:
        raise ValueError(f"only backbone_out_channels can grow and stn/offsets turn on; these differ too: {differs}")
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


def add_transform_branches(
    state: Mapping[str, torch.Tensor], small: SPINConfig, large: SPINConfig, fresh: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``state`` (of ``small``) with the ``stn`` / ``offsets`` branches that ``large`` adds, keeping its function.

    ``fresh`` is the state of a newly initialised ``SPIN(large)``: new modules (the offset convolutions, the
    TPS generator's frozen ``fc``) start from it. ``stucture_fc2``'s rows are laid out as
    [curve weights, gate (offsets), fiducials (stn)]; old rows are kept, new rows start as described above.
    """
    out = {k: v for k, v in state.items()}
    for name, t in fresh.items():
        if name not in out:
            out[name] = t.clone()
    w, b = state["transform.stucture_fc2.weight"].float(), state["transform.stucture_fc2.bias"].float()
    k = 2 * large.default_type + 1
    rows_w, rows_b = [w[:k]], [b[:k]]
    if large.offsets:
        rows_w.append(w[k : k + 1] if small.offsets else torch.zeros(1, w.shape[1]))
        rows_b.append(b[k : k + 1] if small.offsets else torch.tensor([-5.0]))
    if large.stn:
        start = k + int(small.offsets)
        canonical = torch.from_numpy(fiducials(20).reshape(-1)).float()
        rows_w.append(w[start:] if small.stn else torch.zeros(canonical.numel(), w.shape[1]))
        rows_b.append(b[start:] if small.stn else canonical)
    out["transform.stucture_fc2.weight"] = torch.cat(rows_w)
    out["transform.stucture_fc2.bias"] = torch.cat(rows_b)
    return out


def grow_state(
    state: Mapping[str, torch.Tensor], small: SPINConfig, large: SPINConfig, fresh: Mapping[str, torch.Tensor], seed: int = 0
) -> dict[str, torch.Tensor]:
    """``state`` of ``small`` as a state of ``large``: backbone widened, then transform branches added."""
    grown = widen_state(state, small, large, seed)
    if any(getattr(small, b) != getattr(large, b) for b in BRANCHES):
        grown = add_transform_branches(grown, small, large, fresh)
    return grown
