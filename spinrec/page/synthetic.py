"""A synthetic photograph with words at known quadrilaterals: the page the tests read (in process and served) and
the one the detector engine's verification (``builders/verify_detector.py``) runs, so both check the same image."""

from __future__ import annotations

import cv2
import numpy as np

#: A synthetic page: (word, centre, angle in degrees counterclockwise, Hershey scale).
PAGE_WORDS = (
    ("hello", (250, 150), 0, 2.0),
    ("world", (700, 160), 5, 2.0),
    ("triton", (300, 400), -8, 1.8),
    ("server", (850, 450), 0, 2.2),
    ("page", (600, 620), 12, 1.6),
)


def synthetic_page(
    words=PAGE_WORDS, size=(720, 1280), seed=0, background: np.ndarray | None = None, font: int = cv2.FONT_HERSHEY_SIMPLEX, thickness: int = 3
) -> tuple[np.ndarray, list[np.ndarray]]:
    """A light, noisy 1280x720 BGR page (or ``background`` resized to ``size``) with ``words`` drawn at their centres
    and angles, dark unless a word has a fifth element, its BGR colour; and each word's tight quadrilateral (its text
    box rotated with it), corners clockwise from the top left."""
    rng = np.random.default_rng(seed)
    if background is None:
        page = np.full((*size, 3), 230, np.uint8) + rng.integers(0, 16, (*size, 3), dtype=np.uint8)
    else:
        page = cv2.resize(background, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    quads = []
    for word, (cx, cy), angle, scale, *colour in words:
        (w, h), base = cv2.getTextSize(word, font, scale, thickness)
        patch = np.zeros((h + base, w), np.uint8)
        cv2.putText(patch, word, (0, h), font, scale, 255, thickness, cv2.LINE_AA)
        m = cv2.getRotationMatrix2D((w / 2, (h + base) / 2), angle, 1.0)
        m[:, 2] += [cx - w / 2, cy - (h + base) / 2]
        ink = cv2.warpAffine(patch, m, (size[1], size[0]))[:, :, None] / 255.0
        page = (page * (1 - ink) + np.array(colour[0] if colour else (40, 30, 20)) * ink).astype(np.uint8)
        corners = np.array([[0, 0], [w, 0], [w, h + base], [0, h + base]], np.float32)
        quads.append(cv2.transform(corners[None], m)[0])
    return page, quads
