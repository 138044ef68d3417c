"""Request bytes -> normalized ``[1, 32, 100]`` tensors, exactly as PaddleOCR's SPIN inference path.

PaddleOCR (``tools/infer/predict_rec.py``, ``resize_norm_img_spin``; ``SPINRecResizeImg`` in training):
decode to BGR uint8 (``cv2.IMREAD_COLOR``), ``cv2.cvtColor(BGR2GRAY)``, ``cv2.resize`` to 100 x 32 with no
aspect-ratio preservation, then ``(x - 127.5) * (1 / 127.5)`` in float32. Its ``cv2.resize`` call passes
``INTER_CUBIC`` as the third *positional* argument, which is ``dst``, so OpenCV's default bilinear
interpolation is what PaddleOCR really uses; so do we.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence, Union

import cv2
import numpy as np
from PIL import Image

from spinrec.contract import MAX_BYTES, MAX_REQUEST_BYTES  # re-exported: the serving contract owns the limits

IMAGE_HEIGHT, IMAGE_WIDTH = 32, 100
#: Largest accepted image, in pixels: word crops are small, and this bounds a decompression bomb. The one
#: pixel limit: Pillow's own (larger) decompression-bomb limit is never reached first (see decode_image).
MAX_PIXELS = 4096 * 4096
FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")
#: Readings of images below these bounds are flagged as doubtful (the image is still read). The model sees
#: every image stretched to 100x32: a side under MIN_SIDE pixels holds no legible stroke, a width/height ratio
#: beyond ASPECT_RANGE is distorted past anything a word crop looks like (the model's own is 3.1), and fewer
#: than MIN_CONTRAST gray levels between the darkest and brightest pixel of what the model sees is blank.
MIN_SIDE = 8
ASPECT_RANGE = (1 / 5, 25.0)
MIN_CONTRAST = 16

ImageInput = Union[bytes, bytearray, memoryview, np.ndarray]


class ImageError(ValueError):
    """An input that is not a usable image; the message says why, ``reason`` names the class of failure
    (one of :data:`REJECTIONS`: counted by that name in the server's metrics)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


#: Every ``ImageError.reason``.
REJECTIONS = ("bad_array", "corrupt", "empty", "too_many_bytes", "too_many_pixels", "unrecognised", "unsupported_format", "zero_sized")
#: Every flag of a doubtful reading (:func:`degenerate`).
FLAGS = ("tiny", "aspect_ratio", "blank")


def too_many_pixels(width: int, height: int) -> ImageError:
    """The one message for an image over :data:`MAX_PIXELS`, whichever check found it."""
    return ImageError(f"image too large: {width}x{height} = {width * height} pixels (limit {MAX_PIXELS})", "too_many_pixels")


@contextmanager
def native_stderr(messages: list[str]) -> Iterator[None]:
    """Collect what native code (libpng, libjpeg, libtiff) prints to file descriptor 2 inside the block
    into ``messages`` instead of letting it reach the log as bare lines without context.

    Redirects the process's descriptor 2, so use it only where nothing else writes there meanwhile
    (the server's preprocessor processes, one request batch at a time)."""
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            messages += [line for line in sink.read().decode("utf-8", "replace").splitlines() if line.strip()]


def decode_image(data: bytes | bytearray | memoryview, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded PNG/JPEG/BMP/TIFF/WebP bytes -> BGR uint8 ``[H, W, 3]``.

    The header is read first (no pixel data), so oversized images are refused before any allocation.
    Raises :class:`ImageError` for empty, unknown, truncated, zero-sized or oversized images.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError(f"expected encoded image bytes, got {type(data).__name__}", "bad_array")
    data = bytes(data)
    if not data:
        raise ImageError("empty image: 0 bytes", "empty")
    if len(data) > MAX_BYTES:
        raise ImageError(f"encoded image too large: {len(data)} bytes (limit {MAX_BYTES})", "too_many_bytes")
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit (5x ours) and raises above twice that; ours decides below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                fmt, (width, height) = probe.format, probe.size
    except Image.DecompressionBombError:
        # Only past twice Pillow's limit, where Pillow stops before telling the size (the server turns its check off).
        raise ImageError(f"image too large: over {2 * Image.MAX_IMAGE_PIXELS} pixels (limit {max_pixels})", "too_many_pixels") from None
    except Exception:
        raise ImageError(
            f"not a recognised image, or its header is truncated ({len(data)} bytes starting {data[:8]!r})", "unrecognised"
        ) from None
    if fmt not in FORMATS:
        raise ImageError(f"unsupported image format {fmt}; supported: {', '.join(FORMATS)}", "unsupported_format")
    if width <= 0 or height <= 0:
        raise ImageError(f"zero-sized image: {width}x{height}", "zero_sized")
    if width * height > max_pixels:
        raise too_many_pixels(width, height)
    if fmt == "JPEG" and b"\xff\xd9" not in data[-4096:]:
        # libjpeg fills a truncated scan with gray and only warns; refuse it instead.
        raise ImageError("truncated JPEG: no end-of-image marker", "corrupt")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageError(f"corrupt or truncated {fmt} image ({width}x{height}, {len(data)} bytes)", "corrupt")
    return image


def to_gray(image: np.ndarray) -> np.ndarray:
    """Gray ``[H, W]`` / ``[H, W, 1]``, BGR ``[H, W, 3]`` or BGRA ``[H, W, 4]`` uint8 -> gray ``[H, W]``.

    BGR uses OpenCV's fixed-point ``BGR2GRAY`` as PaddleOCR does; gray passes through unchanged, which is
    what PaddleOCR's gray -> BGR -> gray round trip gives; alpha is ignored, as ``IMREAD_COLOR`` does.
    """
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(image).__name__}", "bad_array")
    if image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image, got {image.dtype}", "bad_array")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ImageError(f"expected gray [H,W], BGR [H,W,3] or BGRA [H,W,4], got shape {image.shape}", "bad_array")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"zero-sized image: {image.shape[1]}x{image.shape[0]}", "zero_sized")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise too_many_pixels(image.shape[1], image.shape[0])
    if image.ndim == 2:
        return image
    code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
    return cv2.cvtColor(np.ascontiguousarray(image), code)


def resize_gray(gray: np.ndarray) -> np.ndarray:
    """Gray ``[H, W]`` uint8 -> ``[32, 100]`` uint8, bilinear, aspect ratio not kept."""
    return cv2.resize(gray, (IMAGE_WIDTH, IMAGE_HEIGHT), interpolation=cv2.INTER_LINEAR)


def normalize(resized: np.ndarray) -> np.ndarray:
    """uint8 ``[..., 32, 100]`` -> float32 in ``[-1, 1]``: ``(x - 127.5) * float32(1 / 127.5)``."""
    scale = np.float32(1) / np.float32(127.5)
    return (resized.astype(np.float32) - np.float32(127.5)) * scale


def _load(image: ImageInput) -> tuple[np.ndarray, tuple[int, int]]:
    """Encoded bytes or an image array -> (resized gray ``[32, 100]`` uint8, the original (width, height))."""
    gray = to_gray(image if isinstance(image, np.ndarray) else decode_image(image))
    return resize_gray(gray), (gray.shape[1], gray.shape[0])


def load(image: ImageInput) -> np.ndarray:
    """Encoded bytes or an image array -> resized gray ``[32, 100]`` uint8 (raises :class:`ImageError`)."""
    return _load(image)[0]


def degenerate(width: int, height: int, resized: np.ndarray) -> str | None:
    """Why the reading of a ``width`` x ``height`` image that resized to ``resized`` is doubtful, or None.

    The message starts with the flag's name (one of :data:`FLAGS`)."""
    if min(width, height) < MIN_SIDE:
        return f"tiny: {width}x{height} image (sides under {MIN_SIDE} pixels hold no legible word)"
    aspect = width / height
    if not ASPECT_RANGE[0] <= aspect <= ASPECT_RANGE[1]:
        low, high = ASPECT_RANGE
        return f"aspect_ratio: {width}x{height} image, width/height {aspect:.3g} outside [{low:.3g}, {high:.3g}]"
    contrast = int(resized.max()) - int(resized.min())
    if contrast < MIN_CONTRAST:
        return f"blank: {contrast} gray levels between darkest and brightest pixel (under {MIN_CONTRAST})"
    return None


def preprocess(image: ImageInput) -> np.ndarray:
    """One image -> ``[1, 32, 100]`` float32 (raises :class:`ImageError`)."""
    return normalize(load(image))[None]


@dataclass
class Outcomes:
    """A batch's preprocessed images and, per image, its :class:`ImageError` (the row is then all zeros)
    or the :func:`degenerate` flag of a doubtful image (None for both when the image is fine)."""

    batch: np.ndarray
    errors: list[ImageError | None]
    flags: list[str | None]


def preprocess_outcomes(images: Sequence[ImageInput], capture_native_stderr: bool = False) -> Outcomes:
    """Images -> :class:`Outcomes`; one failed image leaves the others unaffected. Normalisation runs
    once over the whole batch.

    ``capture_native_stderr`` folds what the image codecs print while decoding an image into that
    image's error message (and drops it for images that decode), see :func:`native_stderr`.
    """
    resized = np.zeros((len(images), IMAGE_HEIGHT, IMAGE_WIDTH), dtype=np.uint8)
    errors: list[ImageError | None] = [None] * len(images)
    flags: list[str | None] = [None] * len(images)
    for i, image in enumerate(images):
        printed: list[str] = []
        try:
            if capture_native_stderr:
                with native_stderr(printed):
                    resized[i], size = _load(image)
            else:
                resized[i], size = _load(image)
            flags[i] = degenerate(*size, resized[i])
        except ImageError as e:
            errors[i] = ImageError(f"{e} [{'; '.join(printed)}]", e.reason) if printed else e
    batch = normalize(resized)[:, None]
    for i, e in enumerate(errors):
        if e is not None:
            batch[i] = 0.0
    return Outcomes(batch, errors, flags)


def preprocess_batch(images: Sequence[ImageInput]) -> tuple[np.ndarray, list[ImageError | None]]:
    """Images -> ``[N, 1, 32, 100]`` float32 and one error slot per image (see :func:`preprocess_outcomes`)."""
    outcomes = preprocess_outcomes(images)
    return outcomes.batch, outcomes.errors
