"""Real photographed word crops for training, mixed with the synthetic stream.

Sources (:func:`read_labelled`): a folder with ``labels.tsv`` (``relative path<TAB>label``, the layout of
``../shared/real_train/*``), a label file, a folder with ``labels.txt`` (PaddleOCR's), or an LMDB in the layout
of deep-text-recognition-benchmark and PaddleOCR (``num-samples``, ``image-%09d``, ``label-%09d``), so a user
can bring MJSynth, SynthText or their own real LMDBs.

**The label rule** (:func:`training_text`), one for every source: the model emits lowercase letters, digits and
SPIN's 32 punctuation marks, no spaces. A label is lowercased (``Theatre`` -> ``theatre``, as PaddleOCR's
``SPINLabelEncode`` does); spaces are removed (``Genaxis Theatre`` -> ``genaxistheatre``: the crop shows both
words and the model reads them without a gap); a label holding any other character outside the dictionary
(``Café``, ``£5``) is dropped whole, because dropping only the character would teach the model to skip a letter
it sees; empty labels and labels over ``max_length`` characters are dropped too. ``python -m
spinrec.training.real stats DIR...`` counts what each choice loses.

**Tall crops** (:func:`is_tall`: at least 1.5 times taller than wide and two or more characters, so a
squarish crop of a short horizontal word or a single digit is not one; 141 of ICDAR 2015's training crops, 146
in all): mostly letters stacked vertically, which no quarter turn makes readable. The shipped default read 7 of
the 146 as they are, 13 turned counter-clockwise, 17 clockwise (``python -m spinrec.training.real tall``), so
``tall="drop"`` (the default) leaves them out of training and the preprocessor does not turn crops; ``"keep"``
trains on them stretched as they are.

Augmentation (:func:`augment`), for real crops, on the grey image at its own resolution before the served
resize: the crop box jittered (a loose or tight detector box), a small perspective warp and rotation, then
photometric changes (contrast, brightness, inversion), blur (gaussian or motion), low resolution, noise, JPEG.
Every sample is a pure function of ``(seed, index)``, as the synthetic stream's, so a resumed run sees the same
batches.
"""

from __future__ import annotations

import argparse
import collections
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from spinrec.charset import Charset
from spinrec.evaluation.evaluate import read_dataset
from spinrec.preprocess import decode_image, normalize, resize_gray, to_gray
from spinrec.training.scene import motion_kernel
from spinrec.training.synth import WordImages

TALL = ("drop", "keep")


def training_text(label: str, charset: Charset, max_length: int = 25) -> str | None:
    """The text the model is trained to read for ``label`` (the module doc's rule), or None to drop it."""
    text = label.lower().replace(" ", "")
    if not text or len(text) > max_length or not set(text) <= set(charset.symbols):
        return None
    return text


def is_tall(gray: np.ndarray, text: str) -> bool:
    """Vertical or rotated text (the module doc's rule)."""
    return gray.shape[0] >= 1.5 * gray.shape[1] and len(text) >= 2


def read_labelled(path: str | Path) -> list[tuple[bytes, str]]:
    """``(encoded image, raw label)`` of every sample of a source (see the module doc)."""
    path = Path(path)
    if path.is_dir() and (path / "labels.tsv").is_file() and not (path / "data.mdb").exists():
        path = path / "labels.tsv"
    return [(s.image, s.label) for s in read_dataset(path)]


@dataclass(frozen=True)
class RealConfig:
    """Real labelled sources and their share of the training stream. ``sources``: folders, label files or
    LMDBs (relative paths are taken from the working directory); ``fraction``: the share of each batch drawn
    from them (the rest is the synthetic stream); ``augment``: the probability that a real sample is augmented;
    ``tall``: what happens to crops taller than wide (:data:`TALL`)."""

    sources: tuple[str, ...] = ()
    fraction: float = 0.0
    augment: float = 0.8
    tall: str = "drop"

    def __post_init__(self):
        if self.tall not in TALL:
            raise ValueError(f"tall must be one of {TALL}, got {self.tall!r}")
        if not 0 <= self.fraction <= 1 or not 0 <= self.augment <= 1:
            raise ValueError("fraction and augment are probabilities in [0, 1]")
        if self.fraction > 0 and not self.sources:
            raise ValueError("a real-data fraction needs sources")


@dataclass
class RealCrops:
    """The decoded grey crops of ``config.sources`` with their training texts, after the label rule and the
    tall-crop choice; ``dropped`` counts what was left out and why."""

    config: RealConfig
    charset: Charset = field(default_factory=Charset)
    images: list[np.ndarray] = field(init=False, default_factory=list)
    texts: list[str] = field(init=False, default_factory=list)
    dropped: collections.Counter = field(init=False, default_factory=collections.Counter)

    def __post_init__(self):
        for source in self.config.sources:
            for data, label in read_labelled(source):
                text = training_text(label, self.charset)
                if text is None:
                    self.dropped["label"] += 1
                    continue
                gray = to_gray(decode_image(data))
                if self.config.tall == "drop" and is_tall(gray, text):
                    self.dropped["tall"] += 1
                    continue
                self.images.append(gray)
                self.texts.append(text)
        if self.config.sources and not self.images:
            raise ValueError(f"no usable sample in {', '.join(self.config.sources)}")

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """A crop drawn uniformly (augmented with probability ``config.augment``) and its text."""
        i = int(rng.integers(len(self.images)))
        image = self.images[i]
        if rng.random() < self.config.augment:
            image = augment(image, rng)
        return image, self.texts[i]


def _jitter_box(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The crop's box moved edge by edge by up to 15 % of the height (outwards: replicated border)."""
    h, w = gray.shape
    pad = max(2, int(np.ceil(0.15 * h)))
    padded = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    top, bottom, left, right = (int(v) for v in rng.integers(-pad, pad // 2 + 1, size=4))
    y0, y1 = pad - max(-pad, top), pad + h + max(-pad, bottom)
    x0, x1 = pad - max(-pad, left), pad + w + max(-pad, right)
    if y1 - y0 < max(4, h // 2) or x1 - x0 < max(4, w // 2):
        return gray
    return padded[y0:y1, x0:x1]


def _warp(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small perspective warp and rotation (corners moved by up to 10 % of the height, up to 6 degrees)."""
    h, w = gray.shape
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = src + rng.uniform(-0.1, 0.1, size=(4, 2)).astype(np.float32) * h
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-6, 6), 1.0)
    dst = np.hstack([dst, np.ones((4, 1), np.float32)]) @ rot.T.astype(np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    return cv2.warpPerspective(gray, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def augment(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random augmentation of a grey ``uint8 [H, W]`` crop (the module doc lists the effects)."""
    if rng.random() < 0.6:
        gray = _jitter_box(gray, rng)
    if rng.random() < 0.5:
        gray = _warp(gray, rng)
    image = gray.astype(np.float32)
    if rng.random() < 0.5:
        mean = image.mean()
        image = (image - mean) * rng.uniform(0.5, 1.3) + mean + rng.uniform(-40, 40)
    if rng.random() < 0.1:
        image = 255 - image
    h, w = gray.shape
    if rng.random() < 0.25:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.0) * max(1.0, h / 32))
    elif rng.random() < 0.15:
        image = cv2.filter2D(image, -1, motion_kernel(int(rng.integers(3, max(4, h // 6) + 1)), rng.uniform(0, 180)))
    if rng.random() < 0.2 and h > 12:
        scale = rng.uniform(10, max(11, min(h, 28))) / h
        small = cv2.resize(image, (max(4, round(w * scale)), max(4, round(h * scale))), interpolation=cv2.INTER_AREA)
        image = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.25:
        image = image + rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(2, 12)
    out = np.clip(image, 0, 255).astype(np.uint8)
    if rng.random() < 0.2:
        _, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 80))])
        out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return out


class MixedDataset:
    """Map-style dataset: item ``i`` is real with probability ``real.config.fraction`` (decided by a generator
    seeded with ``(seed, i)``), else item ``i`` of the synthetic stream ``seed``; each is the preprocessed
    image ``[1, 32, 100]`` and its SPIN label."""

    def __init__(self, synthetic: WordImages, real: RealCrops, seed: int, length: int = 2**62):
        self.synthetic, self.real, self.seed, self.length = synthetic, real, seed, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, index, 1])
        if len(self.real) and rng.random() < self.real.config.fraction:
            gray, text = self.real.sample(rng)
            return normalize(resize_gray(gray))[None], self.synthetic.charset.encode(text)
        return self.synthetic.dataset(self.seed)[index]


def label_stats(sources: Sequence[str | Path], charset: Charset | None = None) -> dict[str, collections.Counter]:
    """Per source: samples, kept by the rule, and what the alternatives would keep or lose (the model card's table)."""
    charset = charset or Charset()
    known = set(charset.symbols)
    out = {}
    for source in sources:
        c: collections.Counter = collections.Counter()
        for data, label in read_labelled(source):
            low = label.lower()
            c["samples"] += 1
            c["kept (rule)"] += training_text(label, charset) is not None
            c["has a space"] += " " in label
            c["other out-of-charset character"] += bool(set(low.replace(" ", "")) - known)
            c["not [A-Za-z0-9] only"] += not (label.isascii() and label.isalnum())
            gray = to_gray(decode_image(data))
            c["tall (is_tall)"] += is_tall(gray, low)
        out[str(source)] = c
    return out


def tall_readings(sources: Sequence[str | Path], weights: str | Path) -> dict[str, int]:
    """How many of the sources' tall crops ``weights`` reads right as they are and turned either way."""
    from spinrec.evaluation.metrics import normalize_text
    from spinrec.pipeline import Pipeline

    charset = Charset()
    crops = []
    for source in sources:
        for data, label in read_labelled(source):
            text = training_text(label, charset)
            image = decode_image(data)
            if text is not None and is_tall(image, text):
                crops.append((image, text))
    pipeline = Pipeline.open(weights)
    turns = {"as they are": None, "counter-clockwise": cv2.ROTATE_90_COUNTERCLOCKWISE, "clockwise": cv2.ROTATE_90_CLOCKWISE}
    out = {"tall crops": len(crops)}
    for name, turn in turns.items():
        readings = pipeline.recognize([image if turn is None else cv2.rotate(image, turn) for image, _ in crops])
        out[name] = sum(normalize_text(getattr(r, "text", "")) == normalize_text(t) for r, (_, t) in zip(readings, crops))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spinrec.training.real", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("stats", help="what the label rule keeps and drops, per source")
    s.add_argument("sources", nargs="+")
    t = sub.add_parser("tall", help="how many tall crops a checkpoint reads as they are and turned a quarter either way")
    t.add_argument("sources", nargs="+")
    t.add_argument("--weights", default="weights/default.safetensors")
    args = parser.parse_args(argv)
    if args.command == "tall":
        print(tall_readings(args.sources, args.weights))
        return 0
    stats = label_stats(args.sources)
    keys = sorted({k for c in stats.values() for k in c})
    print("| source | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for source, c in stats.items():
        print(f"| {source} | " + " | ".join(str(c[k]) for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
