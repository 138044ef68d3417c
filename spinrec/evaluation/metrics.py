"""Word accuracy and normalized edit distance as PaddleOCR's ``RecMetric`` computes them.

PaddleOCR (``ppocr/metrics/rec_metric.py``), for each (prediction, ground truth) pair: spaces removed
(``ignore_space``, on by default); with ``is_filter`` (set in SPIN's config) only ASCII letters and digits
kept, then lowercased; the pair counts as correct when the strings are equal, and adds
``Levenshtein.normalized_distance(pred, gt)`` = ``distance / max(len(pred), len(gt))`` (0 when both are
empty). Results: ``acc = correct / (n + 1e-5)`` and ``norm_edit_dis = 1 - sum / (n + 1e-5)``; the epsilon
is PaddleOCR's and is kept so the numbers are identical to its reports.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Iterable

EPS = 1e-5
_ALNUM = frozenset(string.digits + string.ascii_letters)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (unit-cost insertions, deletions, substitutions)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def normalized_distance(a: str, b: str) -> float:
    """``edit_distance / max(len(a), len(b))``; 0 for two empty strings."""
    longest = max(len(a), len(b))
    return edit_distance(a, b) / longest if longest else 0.0


def normalize_text(text: str) -> str:
    """PaddleOCR's ``is_filter`` normalisation: ASCII letters and digits only, lowercased."""
    return "".join(c for c in text if c in _ALNUM).lower()


@dataclass
class RecMetric:
    """Accumulates pairs; :meth:`result` returns PaddleOCR's ``acc`` and ``norm_edit_dis``."""

    is_filter: bool = True
    ignore_space: bool = True
    correct: int = 0
    count: int = 0
    distance_sum: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)

    def prepare(self, text: str) -> str:
        if self.ignore_space:
            text = text.replace(" ", "")
        return normalize_text(text) if self.is_filter else text

    def update(self, predictions: Iterable[str], targets: Iterable[str]) -> None:
        for pred, gt in zip(predictions, targets, strict=True):
            p, g = self.prepare(pred), self.prepare(gt)
            self.distance_sum += normalized_distance(p, g)
            self.count += 1
            if p == g:
                self.correct += 1
            else:
                self.errors.append((pred, gt))

    def result(self) -> dict[str, float]:
        return {
            "acc": self.correct / (self.count + EPS),
            "norm_edit_dis": 1 - self.distance_sum / (self.count + EPS),
            "correct": self.correct,
            "count": self.count,
        }
