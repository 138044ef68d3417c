"""Preprocessing against a re-derivation with OpenCV, and every kind of bad input."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from spinrec.preprocess import ImageError, MAX_PIXELS, decode_image, preprocess, preprocess_batch


def _reference(bgr: np.ndarray) -> np.ndarray:
    """PaddleOCR's resize_norm_img_spin, restated: gray, 100x32 bilinear, float32 normalisation."""
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    resized = cv2.resize(gray, (100, 32), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return ((resized - np.float32(127.5)) * (np.float32(1) / np.float32(127.5)))[None]


def _random_bgr(rng, h, w):
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.GaussianBlur(base, (3, 3), 0)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tiff", ".webp"])
def test_encoded_formats_match_reference(ext):
    rng = np.random.default_rng(len(ext))
    for h, w in [(32, 100), (17, 203), (80, 40), (1, 1), (300, 900)]:
        bgr = _random_bgr(rng, h, w)
        ok, enc = cv2.imencode(ext, bgr)
        assert ok
        decoded = cv2.imdecode(enc, cv2.IMREAD_COLOR)
        got = preprocess(enc.tobytes())
        assert got.shape == (1, 32, 100) and got.dtype == np.float32
        np.testing.assert_array_equal(got, _reference(decoded))


def test_arrays_gray_bgr_bgra():
    rng = np.random.default_rng(0)
    bgr = _random_bgr(rng, 45, 130)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    bgra[..., 3] = rng.integers(0, 256, bgra.shape[:2])  # alpha is ignored, as IMREAD_COLOR does
    np.testing.assert_array_equal(preprocess(bgr), _reference(bgr))
    np.testing.assert_array_equal(preprocess(bgra), _reference(bgr))
    # Gray passes through PaddleOCR's gray -> BGR -> gray round trip unchanged.
    np.testing.assert_array_equal(preprocess(gray), _reference(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)))
    np.testing.assert_array_equal(preprocess(gray[..., None]), preprocess(gray))


def test_normalisation_range_and_no_aspect_ratio():
    black_white = np.zeros((10, 400, 3), np.uint8)
    black_white[:, 200:] = 255
    out = preprocess(black_white)[0]
    assert out.min() == -1.0 and out.max() == 1.0
    # Stretched, not padded: the edge sits in the middle column of the 100-wide output.
    assert (out[:, :49] == -1).all() and (out[:, 51:] == 1).all()


def test_gray_weights_are_bt601():
    bgr = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[0]
    np.testing.assert_allclose(gray, np.round(255 * np.array([0.114, 0.587, 0.299])), atol=1)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _encoded(ext):
    ok, enc = cv2.imencode(ext, _random_bgr(np.random.default_rng(1), 40, 120))
    return enc.tobytes()


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "empty"),
        (b"hello, I am not an image at all", "not a recognised image"),
        (_encoded(".png")[:200], "corrupt or truncated"),
        (_encoded(".jpg")[:300], "header is truncated"),
        (_encoded(".jpg")[: len(_encoded(".jpg")) * 3 // 5], "truncated JPEG"),
        (_png_header_only(60_000, 60_000), "too large"),
        (_png_header_only(0, 10), "not a recognised image|zero-sized"),
        (b"GIF89a" + b"\0" * 40, "not a recognised|unsupported"),
    ],
)
def test_bad_bytes_raise_image_error(data, message):
    with pytest.raises(ImageError, match=message):
        preprocess(data)


@pytest.mark.parametrize(
    "value,message",
    [
        (np.zeros((0, 10, 3), np.uint8), "zero-sized"),
        (np.zeros((10, 10), np.float32), "uint8"),
        (np.zeros((10, 10, 2), np.uint8), "shape"),
        (np.zeros((4097, 4097), np.uint8), "too large"),
        ("image.png", "expected encoded image bytes"),
        (None, "expected encoded image bytes"),
    ],
)
def test_bad_values_raise_image_error(value, message):
    with pytest.raises(ImageError, match=message):
        preprocess(value)


def test_max_pixels_is_checked_before_decoding():
    with pytest.raises(ImageError, match="too large"):
        decode_image(_png_header_only(4097, 4096), max_pixels=MAX_PIXELS)


def test_batch_isolates_failures():
    good = _encoded(".png")
    batch, errors = preprocess_batch([good, b"", good, b"junk"])
    assert batch.shape == (4, 1, 32, 100)
    assert [e is None for e in errors] == [True, False, True, False]
    np.testing.assert_array_equal(batch[0], preprocess(good))
    np.testing.assert_array_equal(batch[2], batch[0])
    assert not batch[1].any() and not batch[3].any()
