"""One photograph -> its words: decode -> detect (:mod:`spinrec.page.detect`) -> crop -> recognize, in reading order.

:class:`PageReader` takes the two networks as callables, so the same pipeline runs in process (the detector on
OpenVINO, the recognizer a :class:`spinrec.pipeline.Pipeline`: the reference the tests and the evaluation use)
and inside Triton's ``spin_page`` model (both callables are BLS requests to ``spin_detector`` and ``spin_ocr``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from spinrec.contract import MAX_WORDS
from spinrec.page.detect import DetectorOptions, boxes, crop, is_tall, prepare, reading_order
from spinrec.preprocess import ImageError, ImageInput, decode_image

#: What a word crop is sent to the recognizer as: lossless and the cheapest to encode and decode.
CROP_FORMAT = ".bmp"
#: What to do with a vertical word's crop (:func:`spinrec.page.detect.is_tall`): ``both`` reads it turned 90 degrees
#: either way and keeps the more confident reading (measured best: on synthetic vertical words, 20 of 20 read against
#: PaddleOCR's rule's 10, which reads only words turned clockwise); ``rotate`` turns it counterclockwise (PaddleOCR);
#: ``keep`` reads it as it stands.
TALL = ("both", "rotate", "keep")

#: ``detector``: the network, float32 ``[1, 3, h, w]`` -> probability map ``[1, 1, h, w]``.
Detector = Callable[[np.ndarray], np.ndarray]
#: ``recognizer``: word crops (BGR uint8) -> per crop ``(text, confidence, flag)``, flag empty when fine.
Recognizer = Callable[[Sequence[np.ndarray]], Sequence[tuple[str, float, str]]]


@dataclass
class Word:
    quad: np.ndarray  #: float32 [4, 2], pixel corners clockwise from the word's top left
    text: str
    confidence: float  #: the recognizer's (product of character probabilities)
    score: float  #: the detector's (mean text probability inside the box)
    flag: str = ""  #: empty, or why the reading is doubtful (spinrec.preprocess.FLAGS)


@dataclass
class Page:
    words: list[Word]
    #: Empty, or what the page could not do in full (``words_limited: ...``).
    note: str = ""
    #: Seconds per stage: ``decode``, ``detect`` (network and post-processing), ``crop``, ``recognize``.
    seconds: dict[str, float] = field(default_factory=dict)


class PageReader:
    """``detector`` and ``recognizer`` as above; ``options`` the detector's thresholds; ``tall`` what to do with a
    vertical word (:data:`TALL`); ``max_words`` the contract's :data:`~spinrec.contract.MAX_WORDS` (past it, the words the
    detector is surest of are read and the page's note says how many were left)."""

    def __init__(
        self, detector: Detector, recognizer: Recognizer, options: DetectorOptions = DetectorOptions(), tall: str = "both", max_words: int = MAX_WORDS
    ):
        if tall not in TALL:
            raise ValueError(f"tall={tall!r}: expected one of {', '.join(TALL)}")
        self.detector, self.recognizer, self.options, self.tall, self.max_words = detector, recognizer, options, tall, max_words

    def __call__(self, image: ImageInput) -> Page:
        """Encoded bytes (or a BGR array) -> :class:`Page`; raises :class:`spinrec.preprocess.ImageError` for an image
        that cannot be read (the limits of :func:`spinrec.preprocess.decode_image`). No text is an empty page."""
        clock = [time.perf_counter()]
        seconds: dict[str, float] = {}

        def lap(stage: str) -> None:
            clock.append(time.perf_counter())
            seconds[stage] = clock[-1] - clock[-2]

        bgr = image if isinstance(image, np.ndarray) else decode_image(image)
        if bgr.ndim == 2:
            bgr = np.repeat(bgr[:, :, None], 3, axis=2)
        bgr = bgr[:, :, :3]
        lap("decode")
        height, width = bgr.shape[:2]
        quads, scores = boxes(self.detector(prepare(bgr, self.options)), height, width, self.options)
        note = ""
        if len(quads) > self.max_words:
            keep = np.sort(np.argsort(-scores, kind="stable")[: self.max_words])
            note = f"words_limited: {len(quads)} words found, the {self.max_words} the detector is surest of read (limit {self.max_words})"
            quads, scores = quads[keep], scores[keep]
        order = reading_order(quads)
        quads, scores = quads[order], scores[order]
        lap("detect")
        crops = [crop(bgr, q, "keep" if self.tall == "keep" else "rotate") for q in quads]
        # "both": a vertical word is also read turned the other way (its counterclockwise turn, half a turn further).
        turned = [i for i, q in enumerate(quads) if self.tall == "both" and is_tall(q)]
        crops += [np.ascontiguousarray(np.rot90(crops[i], 2)) for i in turned]
        lap("crop")
        readings = list(self.recognizer(crops)) if crops else []
        for i, other in zip(turned, readings[len(quads) :]):
            if other[1] > readings[i][1]:
                readings[i] = other
        readings = readings[: len(quads)]
        lap("recognize")
        words = [Word(q, text, float(conf), float(s), flag) for q, s, (text, conf, flag) in zip(quads, scores, readings)]
        return Page(words, note, seconds)


def refusal(error: ImageError) -> str:
    """How a photograph that cannot be read is reported, by spin_page and in process alike."""
    return f"image refused ({error.reason}): {error}"


def pipeline_recognizer(pipeline) -> Recognizer:
    """A :class:`spinrec.pipeline.Pipeline` as a :data:`Recognizer` (a crop it refuses reads empty, its reason the flag)."""

    def recognize(crops: Sequence[np.ndarray]) -> list[tuple[str, float, str]]:
        out = []
        for reading, flag in pipeline.read(list(crops)):
            if isinstance(reading, Exception):
                out.append(("", 0.0, f"error: {reading}"))
            else:
                out.append((reading.text, float(reading.confidence), flag or ""))
        return out

    return recognize
