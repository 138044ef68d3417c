"""Request bytes -> normalized ``[1, 32, 100]`` tensors, exactly as PaddleOCR's SPIN inference path.

PaddleOCR (``tools/infer/predict_rec.py``, ``resize_norm_img_spin``; ``SPINRecResizeImg`` in training):
decode to BGR uint8 (``cv2.IMREAD_COLOR``), ``cv2.cvtColor(BGR2GRAY)``, ``cv2.resize`` to 100 x 32 with no
aspect-ratio preservation, then ``(x - 127.5) * (1 / 127.5)`` in float32. Its ``cv2.resize`` call passes
``INTER_CUBIC`` as the third *positional* argument, which is ``dst``, so OpenCV's default bilinear
interpolation is what PaddleOCR really uses; so do we.
"""

from __future__ import annotations

import io
from typing import Sequence, Union

import cv2
import numpy as np
from PIL import Image

IMAGE_HEIGHT, IMAGE_WIDTH = 32, 100
#: Largest accepted image, in pixels: word crops are small, and this bounds a decompression bomb.
MAX_PIXELS = 4096 * 4096
#: Largest accepted encoded image, in bytes.
MAX_BYTES = 32 * 1024 * 1024
FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")

ImageInput = Union[bytes, bytearray, memoryview, np.ndarray]


class ImageError(ValueError):
    """An input that is not a usable image; the message says why."""


def decode_image(data: bytes | bytearray | memoryview, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded PNG/JPEG/BMP/TIFF/WebP bytes -> BGR uint8 ``[H, W, 3]``.

    The header is read first (no pixel data), so oversized images are refused before any allocation.
    Raises :class:`ImageError` for empty, unknown, truncated, zero-sized or oversized images.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError(f"expected encoded image bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ImageError("empty image: 0 bytes")
    if len(data) > MAX_BYTES:
        raise ImageError(f"encoded image too large: {len(data)} bytes (limit {MAX_BYTES})")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt, (width, height) = probe.format, probe.size
    except Image.DecompressionBombError as e:
        raise ImageError(f"image too large: {e}") from None
    except Exception:
        raise ImageError(
            f"not a recognised image, or its header is truncated ({len(data)} bytes starting {data[:8]!r})"
        ) from None
    if fmt not in FORMATS:
        raise ImageError(f"unsupported image format {fmt}; supported: {', '.join(FORMATS)}")
    if width <= 0 or height <= 0:
        raise ImageError(f"zero-sized image: {width}x{height}")
    if width * height > max_pixels:
        raise ImageError(f"image too large: {width}x{height} = {width * height} pixels (limit {max_pixels})")
    if fmt == "JPEG" and b"\xff\xd9" not in data[-4096:]:
        # libjpeg fills a truncated scan with gray and only warns; refuse it instead.
        raise ImageError("truncated JPEG: no end-of-image marker")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageError(f"corrupt or truncated {fmt} image ({width}x{height}, {len(data)} bytes)")
    return image


def to_gray(image: np.ndarray) -> np.ndarray:
    """Gray ``[H, W]`` / ``[H, W, 1]``, BGR ``[H, W, 3]`` or BGRA ``[H, W, 4]`` uint8 -> gray ``[H, W]``.

    BGR uses OpenCV's fixed-point ``BGR2GRAY`` as PaddleOCR does; gray passes through unchanged, which is
    what PaddleOCR's gray -> BGR -> gray round trip gives; alpha is ignored, as ``IMREAD_COLOR`` does.
    """
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ImageError(f"expected gray [H,W], BGR [H,W,3] or BGRA [H,W,4], got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"zero-sized image: {image.shape[1]}x{image.shape[0]}")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageError(f"image too large: {image.shape[1]}x{image.shape[0]} (limit {MAX_PIXELS} pixels)")
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


def load(image: ImageInput) -> np.ndarray:
    """Encoded bytes or an image array -> resized gray ``[32, 100]`` uint8 (raises :class:`ImageError`)."""
    if isinstance(image, np.ndarray):
        return resize_gray(to_gray(image))
    return resize_gray(to_gray(decode_image(image)))


def preprocess(image: ImageInput) -> np.ndarray:
    """One image -> ``[1, 32, 100]`` float32 (raises :class:`ImageError`)."""
    return normalize(load(image))[None]


def preprocess_batch(images: Sequence[ImageInput]) -> tuple[np.ndarray, list[ImageError | None]]:
    """Images -> ``[N, 1, 32, 100]`` float32 and one error slot per image.

    A failed image leaves an all-zero row and its :class:`ImageError` in the list; the others are
    unaffected. Normalisation runs once over the whole batch.
    """
    resized = np.zeros((len(images), IMAGE_HEIGHT, IMAGE_WIDTH), dtype=np.uint8)
    errors: list[ImageError | None] = [None] * len(images)
    for i, image in enumerate(images):
        try:
            resized[i] = load(image)
        except ImageError as e:
            errors[i] = e
    batch = normalize(resized)[:, None]
    for i, e in enumerate(errors):
        if e is not None:
            batch[i] = 0.0
    return batch, errors
