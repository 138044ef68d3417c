"""DB text detection around the network: the photograph -> the detector's input, its probability map -> word
quadrilaterals, as PaddleOCR's ``DBPostProcess`` does it (Liao et al., "Real-time Scene Text Detection with
Differentiable Binarization", AAAI 2020), with OpenCV for contours and pyclipper for the unclip.

The network itself (PP-OCRv6 det small, from the ``rapidocr`` wheel or a path) runs on the runtime layer
(:func:`spinrec.runtime.open_encoder`: OpenVINO on CPU, a TensorRT engine on GPU); everything here is NumPy/OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np


@dataclass(frozen=True)
class DetectorOptions:
    """PaddleOCR's ``DetResizeForTest`` and ``DBPostProcess`` settings, with the values the PP-OCR pipelines
    (and ``rapidocr``'s config) use.

    Resize: a side shorter than ``limit_side_len`` is scaled up to it (``limit_type: min``) and both sides are
    rounded to multiples of 32; unlike PaddleOCR, the scale is capped so that no side exceeds ``max_side_len``
    (rapidocr shrinks larger photographs to 2,000 pixels first), which bounds the detector's memory for any input.
    Post-processing: pixels over ``thresh`` form the binary map (dilated 2x2 with ``use_dilation``); each of
    at most ``max_candidates`` contours gives its minimum-area rectangle, kept when the mean probability inside it
    (``box_thresh``) is high enough, then grown by ``unclip_ratio`` (offset = area x ratio / perimeter, as DB's
    label shrink in reverse) and boxed again.
    """

    limit_side_len: int = 736
    limit_type: str = "min"
    max_side_len: int = 2000
    thresh: float = 0.3
    box_thresh: float = 0.5
    max_candidates: int = 1000
    unclip_ratio: float = 1.6
    use_dilation: bool = True
    min_size: int = 3
    mean: float = 0.5
    std: float = 0.5

    @classmethod
    def from_params(cls, params: dict[str, str]) -> DetectorOptions:
        """Options from string parameters (a Triton config's), unknown keys ignored, types as declared."""
        kinds = {f.name: f.type for f in fields(cls)}
        values: dict = {}
        for key, text in params.items():
            if key in kinds:
                kind = kinds[key]
                values[key] = text if kind == "str" else text.strip().lower() == "true" if kind == "bool" else float(text) if kind == "float" else int(text)
        options = cls(**values)
        if options.limit_type not in ("min", "max"):
            raise ValueError(f"detector limit_type {options.limit_type!r}: expected min or max")
        return options


def input_size(height: int, width: int, options: DetectorOptions) -> tuple[int, int]:
    """The detector's input ``(height, width)`` for a ``height`` x ``width`` photograph: multiples of 32, at least 32."""
    short, long = min(height, width), max(height, width)
    if options.limit_type == "min":
        ratio = options.limit_side_len / short if short < options.limit_side_len else 1.0
    else:
        ratio = options.limit_side_len / long if long > options.limit_side_len else 1.0
    ratio = min(ratio, options.max_side_len / long)
    return tuple(max(32, int(round(int(side * ratio) / 32)) * 32) for side in (height, width))  # type: ignore[return-value]


def prepare(image: np.ndarray, options: DetectorOptions) -> np.ndarray:
    """BGR uint8 ``[H, W, 3]`` -> the detector's input, float32 ``[1, 3, h, w]`` (:func:`input_size`),
    ``(pixel / 255 - mean) / std``, channels in BGR order as PaddleOCR feeds its detector."""
    h, w = input_size(image.shape[0], image.shape[1], options)
    resized = cv2.resize(image, (w, h))
    normalized = (resized.astype(np.float32) * np.float32(1 / 255) - np.float32(options.mean)) / np.float32(options.std)
    return np.ascontiguousarray(normalized.transpose(2, 0, 1)[None])


def _min_area_box(points: np.ndarray) -> tuple[np.ndarray, float]:
    """The minimum-area rectangle of ``points`` as 4 corners (top-left, top-right, bottom-right, bottom-left
    in PaddleOCR's ``get_mini_boxes`` order) and its shorter side."""
    rect = cv2.minAreaRect(points)
    corners = sorted(cv2.boxPoints(rect).tolist(), key=lambda p: p[0])
    left = sorted(corners[:2], key=lambda p: p[1])
    right = sorted(corners[2:], key=lambda p: p[1])
    return np.array([left[0], right[0], right[1], left[1]], np.float32), float(min(rect[1]))


def _box_score(prob: np.ndarray, box: np.ndarray) -> float:
    """Mean probability inside ``box`` (PaddleOCR's ``score_mode: fast``)."""
    h, w = prob.shape
    x0, x1 = (int(np.clip(f(box[:, 0]), 0, w - 1)) for f in (lambda v: np.floor(v.min()), lambda v: np.ceil(v.max())))
    y0, y1 = (int(np.clip(f(box[:, 1]), 0, h - 1)) for f in (lambda v: np.floor(v.min()), lambda v: np.ceil(v.max())))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    cv2.fillPoly(mask, [(box - [x0, y0]).astype(np.int32)], 1)
    return float(cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], mask)[0])


def _unclip(box: np.ndarray, ratio: float) -> np.ndarray | None:
    """``box`` grown by ``area x ratio / perimeter`` with round joins (pyclipper); None if nothing is left."""
    import pyclipper

    distance = cv2.contourArea(box) * ratio / cv2.arcLength(box.reshape(-1, 1, 2), True)
    offset = pyclipper.PyclipperOffset()
    # pyclipper works on integers and truncates the float corners, as in PaddleOCR.
    offset.AddPath(box.tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    grown = offset.Execute(distance)
    return np.array(grown[0], np.float32) if len(grown) == 1 else None


def boxes(prob: np.ndarray, height: int, width: int, options: DetectorOptions) -> tuple[np.ndarray, np.ndarray]:
    """The detector's probability map (``[1, 1, h, w]`` or ``[h, w]``) of a ``height`` x ``width`` photograph ->
    word quadrilaterals float32 ``[N, 4, 2]`` in the photograph's pixels (corners clockwise from the top left,
    clipped to the image) and their scores float32 ``[N]``, in contour order."""
    prob = np.asarray(prob, np.float32).reshape(prob.shape[-2:])
    bitmap = (prob > options.thresh).astype(np.uint8)
    if options.use_dilation:
        bitmap = cv2.dilate(bitmap, np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(bitmap * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    map_h, map_w = prob.shape
    scale = np.array([width / map_w, height / map_h], np.float32)
    quads, scores = [], []
    for contour in contours[: options.max_candidates]:
        box, short = _min_area_box(contour)
        if short < options.min_size:
            continue
        score = _box_score(prob, box)
        if score < options.box_thresh:
            continue
        grown = _unclip(box, options.unclip_ratio)
        if grown is None:
            continue
        box, short = _min_area_box(grown)
        if short < options.min_size + 2:
            continue
        quad = np.clip(np.round(box * scale), 0, [width, height])
        quad = np.minimum(_clockwise(quad), [width - 1, height - 1])
        if np.linalg.norm(quad[0] - quad[1]) <= 3 or np.linalg.norm(quad[0] - quad[3]) <= 3:
            continue
        quads.append(quad)
        scores.append(score)
    return np.array(quads, np.float32).reshape(-1, 4, 2), np.array(scores, np.float32)


def _clockwise(quad: np.ndarray) -> np.ndarray:
    """Corners in the order top-left, top-right, bottom-right, bottom-left (the two leftmost are the left side)."""
    by_x = quad[np.argsort(quad[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], np.float32)


#: Boxes whose top-left corners lie closer than this (pixels) vertically are on one line (PaddleOCR's ``sorted_boxes``).
LINE_TOLERANCE = 10


def reading_order(quads: np.ndarray) -> np.ndarray:
    """Indices that put ``quads`` in reading order: top to bottom by the top-left corner, a new line where the
    next corner lies :data:`LINE_TOLERANCE` or more pixels lower, left to right within a line."""
    if len(quads) == 0:
        return np.zeros(0, np.int64)
    by_y = np.argsort(quads[:, 0, 1], kind="stable")
    line = np.concatenate([[0], np.cumsum(np.diff(quads[by_y, 0, 1]) >= LINE_TOLERANCE)])
    return by_y[np.lexsort((quads[by_y, 0, 0], line))]


#: A crop at least this many times as tall as wide is a vertical word (PaddleOCR's rule).
TALL_RATIO = 1.5


def crop_size(quad: np.ndarray) -> tuple[int, int]:
    """``(width, height)`` of the crop of ``quad``: the longer of its top and bottom edges, the longer of its sides."""
    quad = np.asarray(quad, np.float32)
    w = max(1, int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[3] - quad[2]))))
    h = max(1, int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2]))))
    return w, h


def is_tall(quad: np.ndarray) -> bool:
    w, h = crop_size(quad)
    return h >= TALL_RATIO * w


def crop(image: np.ndarray, quad: np.ndarray, tall: str = "rotate") -> np.ndarray:
    """The word inside ``quad`` (float32 ``[4, 2]``, clockwise from its top left) warped upright (:func:`crop_size`),
    bicubic, border replicated. ``tall="rotate"`` turns a crop :data:`TALL_RATIO` times as tall as wide by 90 degrees
    counterclockwise (PaddleOCR's rule: a vertical word is mostly a horizontal one turned); ``"keep"`` leaves it."""
    quad = np.asarray(quad, np.float32)
    w, h = crop_size(quad)
    target = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    warped = cv2.warpPerspective(image, cv2.getPerspectiveTransform(quad, target), (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    if tall == "rotate" and h >= TALL_RATIO * w:
        warped = np.ascontiguousarray(np.rot90(warped))
    return warped
