"""PaddleOCR's ``SPINAttentionLoss``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from spinrec.charset import SOS_INDEX


def spin_attention_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the teacher-forced logits ``[B, T, C]`` against ``labels[:, 1:T + 1]``.

    ``labels`` are ``[B, T + 1]`` as :meth:`spinrec.charset.Charset.encode` builds them (``sos`` first);
    step ``t`` predicts ``labels[:, t + 1]``. Targets equal to 0 (``sos``, also the padding after ``eos``)
    are ignored and the mean is over the counted targets, as PaddleOCR's ``ignore_index=0``.
    """
    steps = logits.shape[1]
    if labels.shape[0] != logits.shape[0] or labels.shape[1] < steps + 1:
        raise ValueError(f"labels {tuple(labels.shape)} do not fit logits {tuple(logits.shape)}")
    targets = labels[:, 1 : steps + 1].reshape(-1).long()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets, ignore_index=SOS_INDEX)
