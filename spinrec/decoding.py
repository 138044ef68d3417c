"""Class probabilities -> text and confidence, as PaddleOCR's ``SPINLabelDecode``, or stopping at eos."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spinrec.charset import EOS_INDEX, SOS_INDEX, Charset


@dataclass
class Reading:
    """One decoded word: ``text``, sequence ``confidence`` and the probability of each character."""

    text: str
    confidence: float
    char_probs: np.ndarray  # float32 [len(text)]


def decode(probs: np.ndarray, charset: Charset | None = None, stop_at_eos: bool = True) -> list[Reading]:
    """Greedy readings of ``probs`` ``[B, T, classes]`` (softmax outputs of the head).

    Per step the class is the argmax and its probability the max. ``stop_at_eos=False`` is PaddleOCR's
    exact behaviour: ``sos`` and ``eos`` are skipped wherever they occur and decoding never stops, so
    characters after an ``eos`` are kept; the confidence is the mean probability of the kept characters,
    NaN when none is kept. ``stop_at_eos=True`` (serving default) keeps the characters before the first
    ``eos`` (skipping ``sos``); the confidence of an empty reading is 0.
    """
    charset = charset or Charset()
    probs = np.asarray(probs)
    index = probs.argmax(axis=2)
    conf = probs.max(axis=2).astype(np.float32)
    keep = index != SOS_INDEX
    if stop_at_eos:
        keep &= np.cumsum(index == EOS_INDEX, axis=1) == 0
    else:
        keep &= index != EOS_INDEX
    readings = []
    for ids, c, k in zip(index, conf, keep):
        kept = c[k]
        text = "".join(charset.classes[i] for i in ids[k])
        if kept.size:
            score = float(np.mean(kept))
        else:
            score = 0.0 if stop_at_eos else float("nan")
        readings.append(Reading(text, score, kept))
    return readings
