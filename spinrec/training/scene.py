"""Scene-text effects for synthetic word crops: what makes a rendered word look photographed.

:mod:`spinrec.training.synth` lays out the text (the word's ink, neighbouring glyphs) and calls :func:`scene_image`,
which styles, bends, crops, places, lights and degrades it. Every random choice comes from the caller's
``numpy.random.Generator`` and every share is a field of :class:`SceneMix`, so a sample stays a pure function
of ``(seed, index)`` and a run's config records the whole mix.

Layers travel through the geometry together as one ``uint8 [H, W, 4]`` array: 0 the fill (all ink,
neighbours included), 1 the outline, 2 the shadow or 3D extrusion, 3 the target word alone (the crop box is
taken from it, so neighbouring glyphs end up clipped at the crop's edge). Backgrounds are procedural (noise
fields, gradients, stripes, grids, blotches, shapes, lines, blobs, fragments of other text) or, in
``SceneMix.natural``, crops of the nine public-domain and CC0 photos shipped in ``spinrec/training/backgrounds/`` (see
its ``SOURCES.md``); nothing is downloaded at run time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

FILL, OUTLINE, SHADOW, TARGET = range(4)
#: ``fragment(rng, height)`` -> ``uint8 [h, w]`` ink of some other text, for backgrounds.
Fragment = Callable[[np.random.Generator, int], np.ndarray]
PHOTO_DIR = Path(__file__).with_name("backgrounds")


@dataclass(frozen=True)
class SceneMix:
    """Probability of each scene effect per sample (independent draws unless a field says otherwise)."""

    plain: float = 0.1  #: share rendered by the plain pre-scene renderer (``synth.render``) instead
    script_font: float = 0.06  #: draw from the script families (Kristi, Z003, ...) instead of the regular ones
    neighbours: float = 0.25  #: glyphs of neighbouring words beside the target, clipped by the crop
    outline: float = 0.2  #: a stroke around the glyphs in another color
    shadow: float = 0.15  #: soft drop shadow
    extrude: float = 0.08  #: 3D extrusion (stacked offset copies in a darker shade); excludes ``shadow``
    emboss: float = 0.1  #: bevel shading from the ink's gradient, often with fill close to the background
    arc: float = 0.12  #: text on a circle (logos), up or down, spanning 25-150 degrees
    wave: float = 0.08  #: sine baseline; excludes ``arc``
    perspective: float = 0.45  #: corner jitter and trapezoid (a sign seen from the side)
    rotate: float = 0.15  #: rotation uniform in +-30 degrees (otherwise a few degrees)
    square_crop: float = 0.1  #: crop widened to a square around a short word (round logos, detector boxes)
    tight_crop: float = 0.3  #: per side: cut into the ink by up to 6 % of the text height
    natural: float = 0.2  #: background from a photo crop (brick, grass, gravel, ...); else procedural
    texture: float = 0.6  #: procedural background: noise, stripes, grids or blotches instead of plain or gradient
    clutter: float = 0.45  #: shapes, lines and blobs in the background
    fragments: float = 0.3  #: pieces of other text in the background (lines above and below)
    light: float = 0.4  #: uneven lighting: vignette, light gradient, specular spot
    low_res: float = 0.35  #: downsampled to 14-36 px crop height (or text height in tall crops), maybe upsampled
    defocus: float = 0.15  #: disk blur
    motion: float = 0.1  #: line blur
    gaussian: float = 0.25  #: gaussian blur
    noise: float = 0.35  #: additive sensor noise
    jpeg: float = 0.45  #: JPEG at quality 10-85

    def __post_init__(self):
        bad = {k: v for k, v in vars(self).items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"SceneMix probabilities must lie in [0, 1], got {bad}")


# ------------------------------------------------------------------------------------------------ colour


def luminance(rgb: np.ndarray) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


_LUMA = np.float32([0.299, 0.587, 0.114])


def _contrasting(color: np.ndarray, rng: np.random.Generator, min_diff: float, away_from: np.ndarray | None = None) -> np.ndarray:
    """A random RGB whose luminance differs from ``color``'s by ``min_diff`` or more and that lies 60 or
    more from ``away_from`` (the first of 32 candidates that does, else black or white)."""
    candidates = rng.integers(0, 256, (32, 3)).astype(np.float32)
    good = np.abs(candidates @ _LUMA - luminance(color)) >= min_diff
    if away_from is not None:
        good &= np.linalg.norm(candidates - away_from, axis=1) >= 60
    ok = np.flatnonzero(good)
    if ok.size:
        return candidates[ok[0]]
    return np.full(3, 0.0 if luminance(color) > 127 else 255.0, np.float32)


def _saturated(rng: np.random.Generator) -> np.ndarray:
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(120, 256), rng.integers(70, 256)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def colors(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Background and text RGB: sign-like pairs (near-white or near-black on a saturated color, or the
    reverse) in half the samples, otherwise any two colors whose luminance differs by a random contrast,
    low (15-50 levels) in 15 % of those."""
    r = rng.random()
    if r < 0.5:
        loud = _saturated(rng)
        quiet = np.full(3, rng.uniform(0, 45) if luminance(loud) > 110 else rng.uniform(215, 255), np.float32)
        quiet += rng.uniform(-10, 10, 3).astype(np.float32)
        return (loud, quiet) if r < 0.3 else (quiet, loud)
    bg = rng.integers(0, 256, 3).astype(np.float32)
    return bg, _contrasting(bg, rng, rng.uniform(15, 50) if rng.random() < 0.15 else rng.uniform(60, 200))


# ----------------------------------------------------------------------------------------------- surfaces


def noise_field(h: int, w: int, rng: np.random.Generator, octaves: int = 3) -> np.ndarray:
    """Fractal noise ``float32 [h, w]`` in [-1, 1]: upsampled random grids, each octave twice as fine and
    half as strong."""
    field = np.zeros((h, w), np.float32)
    cells = rng.uniform(1.5, 6)
    for k in range(octaves):
        gy, gx = max(2, int(cells * 2**k * h / max(h, w)) + 1), max(2, int(cells * 2**k * w / max(h, w)) + 1)
        grid = rng.standard_normal((gy, gx)).astype(np.float32)
        field += cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC) * 0.5**k
    return field / (np.abs(field).max() + 1e-6)


def _pattern(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Man-made texture ``float32 [h, w]`` in [-1, 1]: stripes, a grid (tiles, bricks) or grain."""
    kind = rng.integers(3)
    y, x = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    angle = rng.uniform(0, np.pi)
    u = x * np.cos(angle) + y * np.sin(angle)
    period = rng.uniform(3, max(4.0, h / 1.5))
    if kind == 0:
        return np.sin(2 * np.pi * u / period + rng.uniform(0, 6.3)).astype(np.float32)
    if kind == 1:
        v = -x * np.sin(angle) + y * np.cos(angle)
        lines = np.minimum(np.abs(np.sin(np.pi * u / period)), np.abs(np.sin(np.pi * v / (period * rng.uniform(0.5, 2)))))
        return (1 - 2 * (lines < rng.uniform(0.08, 0.3))).astype(np.float32)
    grain = rng.standard_normal((h, w)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(grain, (0, 0), rng.uniform(0.5, 2.0)) * 2, -1, 1)


def surface(color: np.ndarray, h: int, w: int, rng: np.random.Generator, strength: float, textured: bool) -> np.ndarray:
    """``float32 [h, w, 3]`` plane of ``color``: plain, a linear or radial gradient towards another color,
    or (``textured``) modulated by noise or a pattern of amplitude ``strength``."""
    plane = np.empty((h, w, 3), np.float32)
    plane[:] = color
    if textured:
        field = noise_field(h, w, rng) if rng.random() < 0.55 else _pattern(h, w, rng)
        tint = rng.uniform(0.3, 1.0, 3).astype(np.float32) if rng.random() < 0.5 else np.ones(3, np.float32)
        return plane + field[:, :, None] * tint * rng.uniform(0.2, 1.0) * strength
    r = rng.random()
    if r < 0.35:
        other = color + rng.uniform(-1, 1, 3).astype(np.float32) * strength
        y, x = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
        if r < 0.25:
            angle = rng.uniform(0, 2 * np.pi)
            t = (x - w / 2) * np.cos(angle) + (y - h / 2) * np.sin(angle)
            t = (t - t.min()) / (np.ptp(t) + 1e-6)
        else:
            t = np.hypot((x - rng.uniform(0, w)) / w, (y - rng.uniform(0, h)) / h)
            t = t / (t.max() + 1e-6)
        plane += t[:, :, None] * (other - color)
    return plane


def _clutter(image: np.ndarray, rng: np.random.Generator, size: int, fg: np.ndarray, contrast: float) -> None:
    """Draw 1-6 shapes (rectangles and frames, ellipses, thick lines, blobs) in place, in colors that keep
    at least 60 % of the text's contrast."""
    h, w = image.shape[:2]
    for _ in range(int(rng.integers(1, 7))):
        color = tuple(float(c) for c in _contrasting(fg, rng, 0.6 * contrast))
        kind = rng.integers(4)
        p = (int(rng.integers(-w // 4, w + w // 4)), int(rng.integers(-h // 4, h + h // 4)))
        thickness = -1 if rng.random() < 0.5 else int(rng.integers(1, max(2, size // 6)))
        if kind == 0:
            q = (p[0] + int(rng.integers(-w, w)), p[1] + int(rng.integers(-h, h)))
            cv2.rectangle(image, p, q, color, thickness, cv2.LINE_AA)
        elif kind == 1:
            axes = (int(rng.integers(2, max(3, w // 2))), int(rng.integers(2, max(3, h))))
            cv2.ellipse(image, p, axes, float(rng.uniform(0, 180)), 0, 360, color, thickness, cv2.LINE_AA)
        elif kind == 2:
            q = (int(rng.integers(-w // 4, w + w // 4)), int(rng.integers(-h // 4, h + h // 4)))
            cv2.line(image, p, q, color, int(rng.integers(1, max(2, size // 4))), cv2.LINE_AA)
        else:
            n = int(rng.integers(4, 9))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radius = rng.uniform(0.2, 0.8) * size * rng.uniform(0.6, 1.4, n)
            pts = np.stack([p[0] + radius * np.cos(angles), p[1] + radius * np.sin(angles)], 1).astype(np.int32)
            cv2.fillPoly(image, [pts], color, cv2.LINE_AA)


def _paste_fragments(image: np.ndarray, rng: np.random.Generator, size: int, fragment: Fragment, bg: np.ndarray) -> None:
    """Put 1-3 pieces of other text in the background as lines above and below the word, at most half of
    their height inside the crop, fainter than the word."""
    h, w = image.shape[:2]
    for _ in range(int(rng.integers(1, 4))):
        ink = fragment(rng, int(size * rng.uniform(0.5, 1.3)))
        fh, fw = ink.shape
        x = int(rng.integers(-fw + 1, w)) if fw < 4 * w else int(rng.integers(-fw + w, 1))
        y = -int(fh * rng.uniform(0.5, 0.95)) if rng.random() < 0.5 else h - int(fh * rng.uniform(0.05, 0.5))
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + fw, w), min(y + fh, h)
        if x0 >= x1 or y0 >= y1:
            continue
        alpha = ink[y0 - y : y1 - y, x0 - x : x1 - x, None].astype(np.float32) / 255 * rng.uniform(0.3, 0.8)
        color = _contrasting(bg, rng, 40)
        image[y0:y1, x0:x1] = image[y0:y1, x0:x1] * (1 - alpha) + color * alpha


@functools.lru_cache(maxsize=1)
def photos() -> tuple[np.ndarray, ...]:
    """The shipped background photos, RGB float32, in file-name order."""
    paths = sorted(PHOTO_DIR.glob("*.jpg"))
    if not paths:
        raise FileNotFoundError(f"no background photos under {PHOTO_DIR}; the package is incomplete")
    return tuple(cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32) for p in paths)


def _photo_crop(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of a random shipped photo, at a random scale, maybe mirrored, resized to ``[h, w, 3]``."""
    photo = photos()[rng.integers(len(photos()))]
    ph, pw = photo.shape[:2]
    scale = rng.uniform(0.3, 2.0)
    wh, ww = h / scale, w / scale
    fit = min(1.0, ph / wh, pw / ww)
    wh, ww = max(2, int(wh * fit)), max(2, int(ww * fit))
    y, x = int(rng.integers(0, ph - wh + 1)), int(rng.integers(0, pw - ww + 1))
    window = photo[y : y + wh, x : x + ww]
    if rng.random() < 0.5:
        window = window[:, ::-1]
    return cv2.resize(np.ascontiguousarray(window), (w, h), interpolation=cv2.INTER_LINEAR)


def background(h: int, w: int, bg: np.ndarray, fg: np.ndarray, rng: np.random.Generator, mix: SceneMix, size: int, fragment: Fragment) -> np.ndarray:
    """The crop's background around ``bg``, ``float32 [h, w, 3]``; textures and photos stay weaker than the
    contrast to the text color ``fg`` so the word remains the strongest structure."""
    contrast = abs(luminance(bg) - luminance(fg))
    strength = rng.uniform(0.15, 0.45) * max(contrast, 30)
    textured = False
    if rng.random() < mix.natural:
        detail = _photo_crop(h, w, rng)
        detail -= detail.mean((0, 1))
        image = bg + detail * (strength / (2 * float(detail.std()) + 1e-6))
    else:
        textured = rng.random() < mix.texture
        image = surface(bg, h, w, rng, strength, textured)
    if textured and rng.random() < 0.3:  # blotches of a second color (foliage, sky, stains, camouflage)
        t = np.clip(noise_field(h, w, rng) * rng.uniform(1.5, 4) + rng.uniform(-0.5, 0.5), 0, 1)
        image += t[:, :, None] * (_contrasting(fg, rng, 0.6 * contrast) - bg)
    if rng.random() < mix.clutter:
        _clutter(image, rng, size, fg, contrast)
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.5)) if rng.random() < 0.5 else image
    if rng.random() < mix.fragments:
        _paste_fragments(image, rng, size, fragment, bg)
    return image


# ------------------------------------------------------------------------------------------------ styling


def style_layers(ink: np.ndarray, target: np.ndarray, rng: np.random.Generator, mix: SceneMix, size: int) -> tuple[np.ndarray, str]:
    """Stack ``[H, W, 4]`` (fill, outline, shadow/extrusion, target) from the ink masks, and the kind of
    layer 2: ``"none"``, ``"shadow"`` or ``"extrude"``."""
    layers = np.zeros((*ink.shape, 4), np.uint8)
    layers[:, :, FILL] = ink
    layers[:, :, TARGET] = target
    body = ink
    if rng.random() < mix.outline:
        k = 2 * int(rng.integers(1, max(2, size // 9) + 1)) + 1
        body = cv2.dilate(ink, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        layers[:, :, OUTLINE] = body
    kind = "none"
    reach = max(1, size // 8)
    if rng.random() < mix.extrude:
        kind = "extrude"
        step = rng.uniform(-1, 1, 2)
        step /= np.abs(step).max() + 1e-6
        depth = int(rng.integers(2, reach + 2))
        stack = body.copy()
        for d in range(1, depth + 1):
            m = np.float32([[1, 0, step[0] * d], [0, 1, step[1] * d]])
            stack = np.maximum(stack, cv2.warpAffine(body, m, body.shape[::-1]))
        layers[:, :, SHADOW] = stack
    elif rng.random() < mix.shadow:
        kind = "shadow"
        dx, dy = rng.integers(-reach, reach + 1, 2)
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        shadow = cv2.warpAffine(body, m, body.shape[::-1])
        layers[:, :, SHADOW] = cv2.GaussianBlur(shadow, (0, 0), rng.uniform(0.3, 0.15 * size))
    return layers, kind


def _bevel(fill: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Shading ``float32 [H, W]`` in about [-1, 1]: the slope of the blurred ink along a light direction,
    bright on one side of each stroke and dark on the other."""
    soft = cv2.GaussianBlur(fill, (0, 0), max(0.8, size / 25))
    gx = cv2.Sobel(soft, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(soft, cv2.CV_32F, 0, 1, ksize=3)
    angle = rng.uniform(0, 2 * np.pi)
    shade = gx * np.cos(angle) + gy * np.sin(angle)
    return shade / (np.abs(shade).max() + 1e-6)


# ----------------------------------------------------------------------------------------------- geometry


def _remap(layers: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    return cv2.remap(layers, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _ink_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)`` of the pixels above 40, end-exclusive, or None when there is no ink."""
    _, ink = cv2.threshold(np.ascontiguousarray(mask), 40, 255, cv2.THRESH_BINARY)
    x, y, w, h = cv2.boundingRect(ink)
    return (y, y + h, x, x + w) if w else None


def arc(layers: np.ndarray, rng: np.random.Generator, up: bool, span: float) -> np.ndarray:
    """Bend the line onto a circle: the target's ink, ``span`` radians of arc long, runs along the circle
    with its middle row on the radius; ``up`` puts the text on top of the circle (letters pointing
    outwards), otherwise under it (letters pointing inwards, read left to right)."""
    h, w = layers.shape[:2]
    y0, y1, x0, x1 = _ink_box(layers[:, :, TARGET]) or (0, h, 0, w)
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    radius = (x1 - x0) / span
    sign = 1.0 if up else -1.0
    # Forward map of the layer's border gives the output canvas.
    t = np.linspace(0, 1, 64)
    border_x = np.concatenate([t * w, t * w, np.zeros(64), np.full(64, w)])
    border_y = np.concatenate([np.zeros(64), np.full(64, h), t * h, t * h])
    r = np.maximum(radius + sign * (ym - border_y), 1.0)
    phi = (border_x - xm) / radius
    fx, fy = r * np.sin(phi), -sign * r * np.cos(phi)
    left, top = fx.min() - 1, fy.min() - 1
    out_w, out_h = int(np.ceil(fx.max() - left)) + 2, int(np.ceil(fy.max() - top)) + 2
    v, u = np.mgrid[0:out_h, 0:out_w].astype(np.float32)
    dx, dy = u + left, v + top
    rr = np.hypot(dx, dy)
    pp = np.arctan2(dx, -sign * dy)
    map_x = xm + radius * pp
    map_y = ym + sign * (radius - rr)
    return _remap(layers, map_x, map_y)


def wave(layers: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Sine baseline: each column shifted vertically, amplitude up to 35 % of the text height."""
    h, w = layers.shape[:2]
    amplitude = rng.uniform(0.1, 0.35) * size
    pad = int(np.ceil(amplitude)) + 1
    xs = np.arange(w, dtype=np.float32)
    dy = amplitude * np.sin(2 * np.pi * rng.uniform(0.4, 1.5) * xs / w + rng.uniform(0, 2 * np.pi))
    map_x = np.broadcast_to(xs[None, :], (h + 2 * pad, w))
    map_y = np.arange(-pad, h + pad, dtype=np.float32)[:, None] + dy[None, :]
    return _remap(layers, map_x, map_y)


def perspective(layers: np.ndarray, rng: np.random.Generator, mix: SceneMix, size: int) -> np.ndarray:
    """Corner jitter, trapezoid, slant and rotation (a few degrees, or up to +-30 in ``mix.rotate``)."""
    h, w = layers.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = src.copy()
    if rng.random() < mix.perspective:
        dst += rng.uniform(-0.2, 0.2, (4, 2)).astype(np.float32) * size
        if rng.random() < 0.5:  # one end farther away: its edge shorter
            shrink = rng.uniform(0, 0.35) * h / 2
            side = [1, 2] if rng.random() < 0.5 else [0, 3]
            dst[side, 1] += np.float32([shrink, -shrink])
        if rng.random() < 0.3:
            dst[:, 0] += (dst[:, 1] - h / 2) * rng.uniform(-0.35, 0.35)
    angle = np.deg2rad(rng.uniform(-30, 30) if rng.random() < mix.rotate else rng.normal(0, 3))
    rot = np.float32([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = (dst - dst.mean(0)) @ rot.T
    dst -= dst.min(0)
    size_out = (int(np.ceil(dst[:, 0].max())) + 1, int(np.ceil(dst[:, 1].max())) + 1)
    m = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    return cv2.warpPerspective(layers, m, size_out, flags=cv2.INTER_LINEAR, borderValue=0)


def crop(layers: np.ndarray, rng: np.random.Generator, mix: SceneMix, size: int) -> np.ndarray:
    """Crop around the target's ink: per side from 6 % into the ink (``mix.tight_crop``) to half a text
    height out, sometimes widened to a square; whatever else is inside (neighbours, outline) is kept."""
    box = _ink_box(layers[:, :, TARGET])
    if box is None:
        return layers
    y0, y1, x0, x1 = box
    pads = rng.uniform(0.0, 0.5, 4) * size
    pads[rng.random(4) < 0.4] *= 0.15
    tight = rng.random(4) < mix.tight_crop
    pads[tight] = -rng.uniform(0, 0.06, int(tight.sum())) * size
    y0, y1, x0, x1 = int(y0 - pads[0]), int(y1 + pads[1]), int(x0 - pads[2]), int(x1 + pads[3])
    if rng.random() < mix.square_crop and x1 - x0 <= 2 * (y1 - y0):
        side = max(y1 - y0, x1 - x0)
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        y0, y1, x0, x1 = cy - side // 2, cy - side // 2 + side, cx - side // 2, cx - side // 2 + side
    h, w = layers.shape[:2]
    out = np.zeros((max(y1 - y0, 4), max(x1 - x0, 4), 4), np.uint8)
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = layers[sy0:sy1, sx0:sx1]
    return out


# -------------------------------------------------------------------------------------- light, camera


def light(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uneven lighting on a float RGB image: a vignette, a light gradient and/or a specular spot."""
    h, w = image.shape[:2]
    y, x = np.ogrid[0:h, 0:w]
    y, x = (y.astype(np.float32) / h - 0.5), (x.astype(np.float32) / w - 0.5)
    gain = np.ones((h, w), np.float32)
    if rng.random() < 0.5:
        gain *= 1 - rng.uniform(0.2, 0.7) * np.minimum((x**2 + y**2) * 2, 1)
    if rng.random() < 0.6:
        angle = rng.uniform(0, 2 * np.pi)
        gain *= 1 + rng.uniform(0.2, 0.7) * (x * np.cos(angle) + y * np.sin(angle))
    image = image * gain[:, :, None]
    if rng.random() < 0.35:
        cx, cy, radius = rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), rng.uniform(0.05, 0.3)
        spot = np.exp(-((x - cx) ** 2 * (w / h) ** 2 + (y - cy) ** 2) / (2 * radius**2))
        image = image + spot[:, :, None] * rng.uniform(60, 220)
    return image


def _disk(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    kernel = (x**2 + y**2 <= radius**2 + 0.5).astype(np.float32)
    return kernel / kernel.sum()


def motion_kernel(k: int, degrees: float) -> np.ndarray:
    """``k x k`` line of unit sum through the centre at ``degrees``: the blur of a camera moving that way."""
    kernel = np.zeros((k, k), np.float32)
    kernel[k // 2] = 1.0 / k
    rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), degrees, 1.0)
    kernel = cv2.warpAffine(kernel, rot, (k, k))
    return kernel / max(kernel.sum(), 1e-6)


def camera(image: np.ndarray, rng: np.random.Generator, mix: SceneMix, size: int) -> np.ndarray:
    """Optics and sensor on a BGR uint8 crop: defocus, motion or gaussian blur, low resolution then
    upsampling (or not), noise, JPEG."""
    h, w = image.shape[:2]
    if rng.random() < mix.defocus:
        image = cv2.filter2D(image, -1, _disk(rng.uniform(1, max(1.5, size / 12))))
    if rng.random() < mix.motion:
        image = cv2.filter2D(image, -1, motion_kernel(int(rng.integers(3, max(4, size // 5) + 1)), rng.uniform(0, 180)))
    if rng.random() < mix.gaussian:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.2) * size / 32)
    if rng.random() < mix.low_res:
        scale = min(1.0, rng.uniform(14, 36) / min(h, 1.3 * size))
        image = cv2.resize(image, (max(4, round(w * scale)), max(4, round(h * scale))), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.6:
            interpolation = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC)[rng.integers(3)]
            image = cv2.resize(image, (w, h), interpolation=interpolation)
    if rng.random() < mix.noise:
        noise = rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(2, 16)
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
    if rng.random() < mix.jpeg:
        _, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(10, 86))])
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return image


# ------------------------------------------------------------------------------------------------- scene


def _over(image: np.ndarray, color: np.ndarray | float, alpha: np.ndarray) -> np.ndarray:
    return image * (1 - alpha[:, :, None]) + color * alpha[:, :, None]


def scene_image(ink: np.ndarray, target: np.ndarray, size: int, rng: np.random.Generator, mix: SceneMix, fragment: Fragment) -> np.ndarray:
    """The photographed-looking crop (BGR uint8) of a laid-out line: ``ink`` holds every glyph (the word and
    its neighbours), ``target`` the word alone, both ``uint8 [H, W]`` with a margin of about ``size``."""
    layers, under = geometry(ink, target, size, rng, mix)
    return paint(layers, under, size, rng, mix, fragment)


def geometry(ink: np.ndarray, target: np.ndarray, size: int, rng: np.random.Generator, mix: SceneMix) -> tuple[np.ndarray, str]:
    """Styled layers (:func:`style_layers`) bent by an arc or a wave, put in perspective and cropped."""
    box = _ink_box(ink)
    if box is not None:  # the layout's margin beyond what outline, shadow and crop can reach only costs time
        m = (3 * size) // 4 + 2
        rows, cols = slice(max(box[0] - m, 0), box[1] + m), slice(max(box[2] - m, 0), box[3] + m)
        ink, target = ink[rows, cols], target[rows, cols]
    layers, under = style_layers(ink, target, rng, mix, size)
    if rng.random() < mix.arc:
        span = rng.uniform(0.45, 2.6)
        box = _ink_box(target)
        if box is not None:  # keep the radius above 1.2 text heights so short words stay legible
            span = min(span, (box[3] - box[2]) / (1.2 * size))
        layers = arc(layers, rng, up=rng.random() < 0.5, span=span)
    elif rng.random() < mix.wave:
        layers = wave(layers, rng, size)
    return crop(perspective(layers, rng, mix, size), rng, mix, size), under


def paint(layers: np.ndarray, under: str, size: int, rng: np.random.Generator, mix: SceneMix, fragment: Fragment) -> np.ndarray:
    """Colors, background, bevel and light for the cropped layers, then the camera: BGR uint8."""
    h, w = layers.shape[:2]
    alpha = layers.astype(np.float32) / 255.0
    bg, fg = colors(rng)
    image = background(h, w, bg, fg, rng, mix, size, fragment)
    if under == "extrude":
        image = _over(image, fg * rng.uniform(0.25, 0.7) if rng.random() < 0.7 else _contrasting(fg, rng, 60), alpha[:, :, SHADOW])
    elif under == "shadow":
        image = _over(image, rng.uniform(0, 60, 3).astype(np.float32), alpha[:, :, SHADOW] * rng.uniform(0.4, 0.9))
    if layers[:, :, OUTLINE].any():
        image = _over(image, _contrasting(fg, rng, 80, away_from=bg), alpha[:, :, OUTLINE])
    embossed = rng.random() < mix.emboss
    if embossed and rng.random() < 0.5:  # carved or raised in the same material: only the bevel shows
        fg = bg + rng.uniform(-25, 25, 3).astype(np.float32)
    fill = surface(fg, h, w, rng, rng.uniform(10, 50), rng.random() < 0.4) if rng.random() < 0.4 else fg
    image = _over(image, fill, alpha[:, :, FILL])
    if embossed:
        image += _bevel(layers[:, :, FILL], rng, size)[:, :, None] * rng.uniform(50, 130)
    if rng.random() < mix.light:
        image = light(image, rng)
    image = np.clip(image, 0, 255).astype(np.uint8)[:, :, ::-1]  # RGB -> BGR, OpenCV's order
    return camera(np.ascontiguousarray(image), rng, mix, size)
