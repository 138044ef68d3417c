"""Synthetic word images for training and testing the recognizer.

Each sample is a pure function of ``(seed, index)``: the same pair renders the same image and text in any
process and any order, so training data needs no storage and a resumed run sees the same stream.

Text: words from a word list (Debian ``wamerican``), random alphanumeric strings and numbers, with mixed
case and occasional punctuation. Fonts: every TrueType/OpenType file under the font directories that
covers the letters and digits, grouped by family; a fixed, hash-chosen share of the families is held out
(never rendered in the ``train`` split) so evaluation measures unseen typefaces. Images: PIL renders the
text mask, OpenCV bends (curved baseline), rotates and warps it, composites it over a plain, gradient or
textured background with a foreground color of controlled contrast, then blurs, adds noise, lowers the
resolution and JPEG-compresses.

Styles (``SynthConfig.style``): ``plain`` is the renderer above, bit for bit as before issue 13;
``scene`` (the default) sends most samples through :mod:`spinrec.training.scene` instead (outlines, shadows, 3D and
embossed text, arcs and waves, strong rotation, neighbouring glyphs clipped by the crop, cluttered procedural
backgrounds, uneven light, defocus, low resolution) and mixes in script fonts, with every share in
``SynthConfig.mix`` (:class:`spinrec.training.scene.SceneMix`); ``trdg`` hands the same texts and fonts to the
trdg package's renderer (:mod:`spinrec.training.trdg_style`, an optional dependency) for comparison.

Labels are the rendered text; the training label is ``Charset.encode(text)`` (PaddleOCR's SPINLabelEncode:
lowercased, symbols outside the dictionary dropped, too-long or empty samples skipped).

Command: ``python -m spinrec.training.synth OUT --count N --seed S --split heldout [--lmdb]`` writes ``OUT/images/``,
``OUT/labels.txt`` (``path<TAB>text``, PaddleOCR's format) and optionally ``OUT/lmdb`` (benchmark format);
``--style plain`` renders the pre-scene stream.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import string
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from spinrec.charset import Charset
from spinrec.preprocess import load as load_gray, normalize
from spinrec.training.scene import SceneMix, luminance, motion_kernel, scene_image

FONT_DIRS = ("/usr/share/fonts",)
WORD_LIST = "/usr/share/dict/words"
#: Families whose glyphs for ASCII are symbols, keycaps or decorative initials.
EXCLUDED_FAMILIES = (
    "standard symbols",
    "d050000l",
    "libertine initials",
    "biolinum keyboard",
    "stixintegrals",
    "stixsize",
    "stixnonunicode",
    "stixvariants",
)
#: Connected scripts: left out of the regular families, drawn in ``SceneMix.script_font`` of scene samples.
SCRIPT_FAMILIES = ("kristi", "isabella", "z003", "chorus")
REQUIRED_GLYPHS = string.digits + string.ascii_letters
PRINTABLE = string.digits + string.ascii_letters + string.punctuation
SPLITS = ("train", "heldout", "all")


class SynthError(RuntimeError):
    """Missing fonts or word list; the message says what to install."""


# ------------------------------------------------------------------------------------------------ fonts


@dataclass(frozen=True)
class Font:
    path: str
    family: str
    glyphs: frozenset[str]


def _glyph_signature(font: ImageFont.FreeTypeFont, ch: str) -> tuple:
    mask = font.getmask(ch)
    return mask.size, bytes(mask)


@functools.lru_cache(maxsize=None)
def _probe_font(path: str, scripts: bool = False) -> Font | None:
    """The font's family and the printable ASCII it really draws (a glyph that renders exactly like the
    missing-glyph box is missing), or None when it cannot be used or is (``scripts``: is not) a script."""
    try:
        font = ImageFont.truetype(path, 20)
    except OSError:
        return None
    family = font.getname()[0] or Path(path).stem
    if any(x in family.lower() for x in EXCLUDED_FAMILIES):
        return None
    if any(x in family.lower() for x in SCRIPT_FAMILIES) != scripts:
        return None
    missing = _glyph_signature(font, "\uffff")
    glyphs = frozenset(c for c in PRINTABLE if _glyph_signature(font, c) != missing)
    if not set(REQUIRED_GLYPHS) <= glyphs:
        return None
    return Font(path, family, glyphs)


def family_is_heldout(family: str, heldout_fraction: float) -> bool:
    """A family's split depends only on its name, so adding fonts never moves existing families."""
    h = int.from_bytes(hashlib.sha256(family.lower().encode()).digest()[:8], "big") / 2**64
    return h < heldout_fraction


@functools.lru_cache(maxsize=None)
def discover_fonts(
    dirs: tuple[str, ...] = FONT_DIRS, split: str = "all", heldout_fraction: float = 0.2, scripts: bool = False
) -> tuple[Font, ...]:
    """Usable fonts under ``dirs`` of one split (``train``, ``heldout`` or ``all``), sorted by path; the
    regular families, or with ``scripts`` only the script families (which may be none)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    paths = sorted({str(p) for d in dirs for ext in ("ttf", "otf", "TTF", "OTF") for p in Path(d).rglob(f"*.{ext}")})
    fonts = [f for f in (_probe_font(p, scripts) for p in paths) if f is not None]
    if split != "all":
        fonts = [f for f in fonts if family_is_heldout(f.family, heldout_fraction) == (split == "heldout")]
    if not fonts and not scripts:
        raise SynthError(
            f"no usable {split} fonts under {', '.join(dirs)}; install Debian font packages (see scripts/setup.sh)"
        )
    return tuple(fonts)


@functools.lru_cache(maxsize=4096)
def _truetype(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


# ------------------------------------------------------------------------------------------------- text


@functools.lru_cache(maxsize=None)
def read_words(path: str = WORD_LIST, max_length: int = 16) -> tuple[str, ...]:
    """Words of the list that are printable ASCII (accented entries are dropped) and not too long;
    possessives (a quarter of wamerican) are left out so that apostrophes stay rare."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="ignore").split()
    except OSError as e:
        raise SynthError(f"word list {path} unreadable ({e}); install Debian's wamerican") from None
    allowed = set(PRINTABLE)
    words = tuple(sorted({w for w in lines if 0 < len(w) <= max_length and set(w) <= allowed and not w.endswith("'s")}))
    if not words:
        raise SynthError(f"word list {path} has no usable words")
    return words


def _case(word: str, rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.4:
        return word.lower()
    if r < 0.7:
        return word[:1].upper() + word[1:].lower()
    if r < 0.93:
        return word.upper()
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in word)


def _number(rng: np.random.Generator) -> str:
    digits = lambda n: "".join(rng.choice(list(string.digits), n))  # noqa: E731
    kind = rng.integers(7)
    if kind == 0:
        return str(rng.integers(0, 10 ** rng.integers(1, 7)))
    if kind == 1:
        return f"{rng.integers(0, 1000)}.{digits(2)}"
    if kind == 2:
        return f"${rng.integers(0, 500)}.{digits(2)}"
    if kind == 3:
        return f"{rng.integers(0, 101)}%"
    if kind == 4:
        return f"{digits(3)}-{digits(4)}"
    if kind == 5:
        return str(rng.integers(1900, 2040))
    return f"{rng.integers(0, 24)}:{digits(2)}"


def random_text(words: tuple[str, ...], rng: np.random.Generator, max_length: int = 16) -> str:
    """A dictionary word (70 %), random alphanumerics (15 %) or a number (15 %), mixed case, sometimes
    wrapped in punctuation."""
    r = rng.random()
    if r < 0.7:
        text = _case(words[rng.integers(len(words))], rng)
    elif r < 0.85:
        pool = list(string.ascii_letters + string.digits)
        text = "".join(rng.choice(pool, rng.integers(1, 11)))
    else:
        text = _number(rng)
    r = rng.random()
    if r < 0.05:
        text = rng.choice(list("\"'([")) + text
    elif r < 0.12:
        text = text + rng.choice(list(".,:;!?\"')"))
    return text[:max_length]


# -------------------------------------------------------------------------------------------- rendering


def _colors(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Background and foreground RGB whose luminance differs by at least a random contrast; low contrast
    (20-50 gray levels) in 15 % of the samples."""
    min_contrast = rng.uniform(20, 50) if rng.random() < 0.15 else rng.uniform(60, 200)
    for _ in range(100):
        bg, fg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        if abs(luminance(bg) - luminance(fg)) >= min_contrast:
            return bg.astype(np.float32), fg.astype(np.float32)
    bg = np.full(3, 235.0 if rng.random() < 0.5 else 20.0, np.float32)
    return bg, 255.0 - bg


def _texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field in [-1, 1], ``[h, w]``: upsampled low-resolution noise, sometimes with stripes."""
    cells = (int(rng.integers(2, 8)), int(rng.integers(2, 16)))
    field = cv2.resize(rng.standard_normal(cells).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.3:
        x = np.arange(w, dtype=np.float32)[None, :] * rng.uniform(0.2, 1.2) + np.arange(h, dtype=np.float32)[:, None] * rng.uniform(-1, 1)
        field = field + np.sin(x + rng.uniform(0, 6.3))
    return np.clip(field / (np.abs(field).max() + 1e-6), -1, 1)


def _layer(color: np.ndarray, h: int, w: int, rng: np.random.Generator, strength: float) -> np.ndarray:
    """``[h, w, 3]`` float color plane: plain, a linear gradient, or textured."""
    plane = np.broadcast_to(color, (h, w, 3)).astype(np.float32)
    r = rng.random()
    if r < 0.3:
        t = np.linspace(-1, 1, w, dtype=np.float32)[None, :, None] * rng.uniform(-1, 1)
        plane = plane + t * rng.uniform(0, strength) * (rng.uniform(-1, 1, 3).astype(np.float32))
    elif r < 0.6:
        plane = plane + _texture(h, w, rng)[:, :, None] * rng.uniform(0, strength)
    return plane


def _text_mask(text: str, font: ImageFont.FreeTypeFont, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Anti-aliased mask ``[H, W]`` uint8 of ``text`` with a margin, and the stroke width used."""
    size = font.size
    stroke = int(rng.integers(1, max(2, size // 12) + 1)) if rng.random() < 0.1 else 0
    spacing = rng.uniform(-0.04, 0.25) * size if rng.random() < 0.3 else 0.0
    widths = [font.getlength(c) for c in text]
    width = int(sum(widths) + spacing * (len(text) - 1) + 2 * stroke) if spacing else int(font.getlength(text) + 2 * stroke)
    ascent, descent = font.getmetrics()
    margin = size
    image = Image.new("L", (max(width, 1) + 2 * margin, ascent + descent + 2 * margin), 0)
    draw = ImageDraw.Draw(image)
    if spacing:
        x = float(margin)
        for c, w in zip(text, widths):
            draw.text((x, margin), c, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
            x += w + spacing
    else:
        draw.text((margin, margin), text, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
    return np.asarray(image), stroke


def _bend(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Curved baseline: shift each column vertically along a sine arc."""
    h, w = mask.shape
    amplitude = rng.uniform(0.05, 0.2) * h
    periods = rng.uniform(0.3, 1.0)
    phase = rng.uniform(0, 2 * np.pi)
    xs = np.arange(w, dtype=np.float32)
    dy = amplitude * np.sin(2 * np.pi * periods * xs / w + phase)
    map_x = np.broadcast_to(xs[None, :], (h, w)).astype(np.float32)
    map_y = (np.arange(h, dtype=np.float32)[:, None] + dy[None, :]).astype(np.float32)
    return cv2.remap(mask, map_x, map_y, cv2.INTER_LINEAR, borderValue=0)


def _warp(mask: np.ndarray, rng: np.random.Generator, text_height: float) -> np.ndarray:
    """Rotation (up to +-6 degrees, rarely +-15), shear and perspective: the mask's corners are moved
    and the whole mask is warped into a canvas that holds the result."""
    h, w = mask.shape
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    jitter = rng.uniform(-0.12, 0.12, (4, 2)).astype(np.float32) * text_height if rng.random() < 0.4 else 0
    dst = src + jitter
    if rng.random() < 0.3:
        dst[:, 0] += (dst[:, 1] - h / 2) * rng.uniform(-0.3, 0.3)  # shear (italic-like slant)
    angle = np.deg2rad(rng.normal(0, 2.5) if rng.random() < 0.9 else rng.uniform(-15, 15))
    rot = np.float32([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = (dst - dst.mean(0)) @ rot.T
    dst -= dst.min(0)
    out_w, out_h = int(np.ceil(dst[:, 0].max())) + 1, int(np.ceil(dst[:, 1].max())) + 1
    m = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    return cv2.warpPerspective(mask, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderValue=0)


def _crop(mask: np.ndarray, rng: np.random.Generator, text_height: float) -> np.ndarray:
    """Crop around the ink with per-side padding jitter (a pixel or so may be cut, up to 40 % added)."""
    ys, xs = np.nonzero(mask > 40)
    if ys.size == 0:
        return mask
    pads = rng.uniform(-0.02, 0.4, 4) * text_height
    pads[rng.random(4) < 0.3] *= 0.2  # tight crops are common in real detections
    y0 = int(round(ys.min() - pads[0]))
    y1 = int(round(ys.max() + 1 + pads[1]))
    x0 = int(round(xs.min() - pads[2]))
    x1 = int(round(xs.max() + 1 + pads[3]))
    padded = cv2.copyMakeBorder(mask, mask.shape[0], mask.shape[0], mask.shape[1], mask.shape[1], cv2.BORDER_CONSTANT, value=0)
    return padded[y0 + mask.shape[0] : y1 + mask.shape[0], x0 + mask.shape[1] : x1 + mask.shape[1]]


def _degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur, resolution loss, noise and JPEG artifacts on a BGR uint8 image."""
    h, w = image.shape[:2]
    if rng.random() < 0.35:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.2) * h / 32)
    elif rng.random() < 0.1:
        k = int(rng.integers(2, max(3, h // 14) + 1))
        image = cv2.filter2D(image, -1, motion_kernel(k, rng.uniform(0, 180)))
    if rng.random() < 0.3:
        scale = rng.uniform(0.35, 0.8)
        small = cv2.resize(image, (max(4, int(w * scale)), max(4, int(h * scale))), interpolation=cv2.INTER_AREA)
        image = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.4:
        noise = rng.normal(0, rng.uniform(2, 14), image.shape).astype(np.float32)
        image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 90))])
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return image


def _with_neighbours(target: np.ndarray, font: ImageFont.FreeTypeFont, glyphs: frozenset[str], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Put 1-3 glyphs of other words a word space to the left and/or right of the target mask (made by
    :func:`_text_mask`, margin ``font.size``) on the same baseline: ``(target, ink)`` on the wider canvas."""
    size = font.size
    pool = [c for c in NEIGHBOUR_GLYPHS if c in glyphs]
    sides = ("left", "right")[rng.integers(2)] if rng.random() < 0.7 else "both"
    left = "".join(rng.choice(pool, rng.integers(1, 4))) if sides in ("left", "both") else ""
    right = "".join(rng.choice(pool, rng.integers(1, 4))) if sides in ("right", "both") else ""
    gap = rng.uniform(0.3, 0.5) * size  # a word space or more: the crop's padding shows at most part of a glyph
    cols = np.flatnonzero(target.max(0) > 40)
    x0, x1 = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (size, target.shape[1] - size)
    extra_left = int(np.ceil(font.getlength(left) + gap)) if left else 0
    extra_right = int(np.ceil(font.getlength(right) + gap)) if right else 0
    h, w = target.shape
    wide = np.zeros((h, w + extra_left + extra_right), np.uint8)
    wide[:, extra_left : extra_left + w] = target
    image = Image.new("L", (wide.shape[1], h), 0)
    draw = ImageDraw.Draw(image)
    if left:
        draw.text((extra_left + x0 - gap - font.getlength(left), size), left, font=font, fill=255)
    if right:
        draw.text((extra_left + x1 + gap, size), right, font=font, fill=255)
    return wide, np.maximum(wide, np.asarray(image))


def render(text: str, font_path: str, rng: np.random.Generator) -> np.ndarray:
    """One word image (BGR uint8 ``[H, W, 3]``) of ``text`` in the font at ``font_path``."""
    size = int(rng.integers(22, 56))
    font = _truetype(font_path, size)
    mask, stroke = _text_mask(text, font, rng)
    if rng.random() < 0.2:
        mask = _bend(mask, rng)
    mask = _crop(_warp(mask, rng, size), rng, size)
    h, w = mask.shape
    bg, fg = _colors(rng)
    contrast = abs(luminance(bg) - luminance(fg))
    # Textures weaker than the contrast so the text stays the strongest structure in the crop.
    background = _layer(bg, h, w, rng, 0.6 * contrast)
    foreground = _layer(fg, h, w, rng, 0.3 * contrast)
    alpha = mask.astype(np.float32)[:, :, None] / 255.0
    if stroke == 0 and rng.random() < 0.1:
        # Drop shadow / outline in a third color, under the text.
        shift = rng.integers(-max(1, size // 15), max(1, size // 15) + 1, 2)
        shadow = np.roll(alpha, (int(shift[0]), int(shift[1])), axis=(0, 1))
        background = background * (1 - shadow) + rng.integers(0, 256, 3).astype(np.float32) * shadow
    image = background * (1 - alpha) + foreground * alpha
    image = np.clip(image, 0, 255).astype(np.uint8)[:, :, ::-1]  # RGB -> BGR, OpenCV's order
    return _degrade(np.ascontiguousarray(image), rng)


# ----------------------------------------------------------------------------------------------- source


STYLES = ("scene", "plain", "trdg")
#: Wide glyphs for neighbouring words: a clipped piece of one is not mistaken for a whole thin glyph.
NEIGHBOUR_GLYPHS = "ABCDEGHKMNOPRSUVWXYZabdeghkmnopqsuvwxyz02345689"


@dataclass(frozen=True)
class SynthConfig:
    """Where text and fonts come from, which split of the font families to use, the rendering style
    (``scene``, ``plain`` or ``trdg``) and the scene effects' shares (a dict is accepted, as read from a run's JSON)."""

    split: str = "train"
    heldout_fraction: float = 0.2
    font_dirs: tuple[str, ...] = FONT_DIRS
    word_list: str = WORD_LIST
    max_text_length: int = 16
    style: str = "scene"
    mix: SceneMix = SceneMix()

    def __post_init__(self):
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {self.style!r}")
        if isinstance(self.mix, dict):
            object.__setattr__(self, "mix", SceneMix(**self.mix))


class WordImages:
    """Deterministic word images: ``sample(seed, index)`` -> ``(BGR image, text)``.

    ``dataset(seed)`` gives a map-style PyTorch dataset of ``(image [1, 32, 100] float32, label [27])``
    pairs for training.
    """

    def __init__(self, config: SynthConfig | None = None, charset: Charset | None = None):
        self.config = config or SynthConfig()
        self.charset = charset or Charset()
        cfg = self.config
        self.fonts = discover_fonts(tuple(cfg.font_dirs), cfg.split, cfg.heldout_fraction)
        self.families: dict[str, list[Font]] = {}
        for f in self.fonts:
            self.families.setdefault(f.family, []).append(f)
        self.family_names = sorted(self.families)
        self.scripts = discover_fonts(tuple(cfg.font_dirs), cfg.split, cfg.heldout_fraction, scripts=True)
        self.words = read_words(cfg.word_list, cfg.max_text_length)
        if cfg.style == "trdg":
            from spinrec.training.trdg_style import trdg_modules

            trdg_modules()  # a missing trdg fails here, not later in a data worker

    def _font(self, rng: np.random.Generator) -> Font:
        """A family drawn uniformly, then one of its files, so families with many weights are not favoured."""
        family = self.families[self.family_names[rng.integers(len(self.family_names))]]
        return family[rng.integers(len(family))]

    def sample(self, seed: int, index: int) -> tuple[np.ndarray, str]:
        """The image and raw text of sample ``index`` of stream ``seed``."""
        rng = np.random.default_rng([seed, index])
        mix = self.config.mix
        scene = self.config.style == "scene" and rng.random() >= mix.plain
        while True:
            text = random_text(self.words, rng, self.config.max_text_length)
            if self.charset.encode(text) is None:
                continue
            if scene and self.scripts and rng.random() < mix.script_font:
                font = self.scripts[rng.integers(len(self.scripts))]
            else:
                font = self._font(rng)
            if set(text) <= font.glyphs:
                image = self._render(text, font, rng, scene)
                if image is not None:
                    return image, text

    def _render(self, text: str, font: Font, rng: np.random.Generator, scene: bool) -> np.ndarray | None:
        if self.config.style == "trdg":
            from spinrec.training.trdg_style import render_trdg  # an experiment dependency, imported on use

            return render_trdg(text, font.path, rng)
        return self._scene(text, font, rng) if scene else render(text, font.path, rng)

    def _scene(self, text: str, font: Font, rng: np.random.Generator) -> np.ndarray:
        """``text`` laid out (with neighbouring glyphs in ``mix.neighbours``) and photographed by
        :func:`spinrec.training.scene.scene_image`."""
        size = int(rng.integers(22, 56))
        face = _truetype(font.path, size)
        target, _ = _text_mask(text, face, rng)
        ink = target
        if rng.random() < self.config.mix.neighbours:
            target, ink = _with_neighbours(target, face, font.glyphs, rng)
        return scene_image(ink, target, size, rng, self.config.mix, self._fragment)

    def _fragment(self, rng: np.random.Generator, height: int) -> np.ndarray:
        """Ink ``uint8 [h, w]`` of some other word at about ``height`` pixels, for backgrounds."""
        word = self.words[rng.integers(len(self.words))]
        face = _truetype(self._font(rng).path, max(6, height))
        left, top, right, bottom = face.getbbox(word)
        image = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
        ImageDraw.Draw(image).text((-left, -top), word, font=face, fill=255)
        return np.asarray(image)

    def clean_sample(self, seed: int, index: int) -> tuple[np.ndarray, str]:
        """A clean printed word: a dictionary word of 3-12 letters, lower case, capitalised and upper case in
        turn (by ``index``), black on white at 40 px with an 8 px margin, no augmentation at all."""
        rng = np.random.default_rng([seed, index])
        while True:
            word = self.words[rng.integers(len(self.words))]
            font = self._font(rng)
            if word.isalpha() and 3 <= len(word) <= 12 and set(word) <= font.glyphs:
                break
        text = (word.lower(), word.capitalize(), word.upper())[index % 3]
        font = _truetype(font.path, 40)
        left, top, right, bottom = font.getbbox(text)
        image = Image.new("L", (right - left + 16, bottom - top + 16), 255)
        ImageDraw.Draw(image).text((8 - left, 8 - top), text, font=font, fill=0)
        return cv2.cvtColor(np.asarray(image), cv2.COLOR_GRAY2BGR), text

    def dataset(self, seed: int, length: int = 2**62) -> "SynthDataset":
        return SynthDataset(self, seed, length)


class SynthDataset:
    """Map-style dataset over the stream ``seed``: item ``i`` is the preprocessed image and SPIN label of
    ``WordImages.sample(seed, i)``."""

    def __init__(self, source: WordImages, seed: int, length: int):
        self.source = source
        self.seed = seed
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, text = self.source.sample(self.seed, index)
        return normalize(load_gray(image))[None], self.source.charset.encode(text)


# -------------------------------------------------------------------------------------------- writers


def write_folder(out: str | Path, samples: list[tuple[np.ndarray, str]], lmdb_path: str | Path | None = None) -> Path:
    """Write ``images/%09d.png`` and ``labels.txt`` (``images/...png<TAB>text``); with ``lmdb_path`` also a
    benchmark-format LMDB (PNG bytes under ``image-%09d``, text under ``label-%09d``, 1-based)."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    encoded = []
    with open(out / "labels.txt", "w", encoding="utf-8") as labels:
        for i, (image, text) in enumerate(samples):
            ok, buf = cv2.imencode(".png", image)
            if not ok:
                raise SynthError(f"PNG encoding failed for sample {i}")
            name = f"images/{i:09d}.png"
            (out / name).write_bytes(buf.tobytes())
            labels.write(f"{name}\t{text}\n")
            encoded.append((buf.tobytes(), text))
    if lmdb_path is not None:
        write_lmdb(lmdb_path, encoded)
    return out / "labels.txt"


def write_lmdb(path: str | Path, samples: list[tuple[bytes, str]]) -> None:
    """The LMDB layout of the standard benchmarks: ``num-samples``, ``image-%09d``, ``label-%09d``
    (1-based, ASCII keys, UTF-8 labels)."""
    import lmdb

    Path(path).mkdir(parents=True, exist_ok=True)
    size = sum(len(b) + len(t) + 64 for b, t in samples) * 2 + (1 << 20)
    env = lmdb.open(str(path), map_size=size)
    with env.begin(write=True) as txn:
        for i, (data, text) in enumerate(samples, start=1):
            txn.put(b"image-%09d" % i, data)
            txn.put(b"label-%09d" % i, text.encode("utf-8"))
        txn.put(b"num-samples", str(len(samples)).encode())
    env.close()


def main(argv: list[str] | None = None, prog: str = "python -m spinrec.training.synth") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="render a synthetic word-image set")
    parser.add_argument("out", help="output folder (images/, labels.txt)")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1_000_003, help="stream seed (training uses small seeds)")
    parser.add_argument("--split", choices=SPLITS, default="heldout", help="font families to draw from")
    parser.add_argument("--heldout-fraction", type=float, default=SynthConfig.heldout_fraction)
    parser.add_argument("--lmdb", action="store_true", help="also write OUT/lmdb in the benchmark format")
    parser.add_argument("--style", choices=STYLES, default=SynthConfig.style, help="scene effects, or the plain pre-scene renderer")
    parser.add_argument("--clean", action="store_true", help="clean printed dictionary words, black on white, no augmentation")
    args = parser.parse_args(argv)
    from tqdm import tqdm

    try:
        source = WordImages(SynthConfig(split=args.split, heldout_fraction=args.heldout_fraction, style=args.style))
    except SynthError as e:
        print(f"synth: error: {e}", file=sys.stderr)
        return 2
    draw = source.clean_sample if args.clean else source.sample
    samples = [draw(args.seed, i) for i in tqdm(range(args.count), desc="render", unit="img")]
    labels = write_folder(args.out, samples, Path(args.out) / "lmdb" if args.lmdb else None)
    print(f"wrote {len(samples)} images from {len(source.family_names)} {args.split} font families -> {labels}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
