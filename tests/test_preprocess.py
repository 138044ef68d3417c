"""Preprocessing against a re-derivation with OpenCV, and every kind of bad input."""

import cv2
import numpy as np
import pytest

from conftest import png_header_only
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
        (png_header_only(60_000, 60_000), "too large"),
        (png_header_only(0, 10), "not a recognised image|zero-sized"),
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
        decode_image(png_header_only(4097, 4096), max_pixels=MAX_PIXELS)


def test_batch_isolates_failures():
    good = _encoded(".png")
    batch, errors = preprocess_batch([good, b"", good, b"junk"])
    assert batch.shape == (4, 1, 32, 100)
    assert [e is None for e in errors] == [True, False, True, False]
    np.testing.assert_array_equal(batch[0], preprocess(good))
    np.testing.assert_array_equal(batch[2], batch[0])
    assert not batch[1].any() and not batch[3].any()


def test_every_error_names_a_known_reason():
    from spinrec.preprocess import REJECTIONS

    cases = [b"", b"junk", _encoded(".png")[:200], png_header_only(60_000, 60_000), np.zeros((4, 4), np.float32), np.zeros((0, 4), np.uint8)]
    _, errors = preprocess_batch(cases)
    assert [e.reason for e in errors] == ["empty", "unrecognised", "corrupt", "too_many_pixels", "bad_array", "zero_sized"]
    assert all(e.reason in REJECTIONS for e in errors)


def test_one_pixel_limit_one_message(monkeypatch):
    from PIL import Image

    # Bytes and arrays over MAX_PIXELS are refused in the same words.
    for image in (png_header_only(4097, 4097), np.zeros((4097, 4097), np.uint8)):
        with pytest.raises(ImageError, match=r"^image too large: 4097x4097 = 16785409 pixels \(limit 16777216\)$"):
            preprocess(image)
    # Far past Pillow's own bomb limit, Pillow refuses first: same prefix and limit, without the size...
    with pytest.raises(ImageError, match=r"^image too large: over \d+ pixels \(limit 16777216\)$"):
        preprocess(png_header_only(60_000, 60_000))
    # ...unless its check is off, as in the server's preprocessor processes.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ImageError, match=r"^image too large: 60000x60000 = 3600000000 pixels \(limit 16777216\)$"):
        preprocess(png_header_only(60_000, 60_000))


def test_codec_messages_join_the_image_error(capfd):
    from spinrec.preprocess import preprocess_outcomes

    truncated = _encoded(".png")[:200]
    captured = preprocess_outcomes([truncated, _encoded(".png")], capture_native_stderr=True)
    assert "[libpng error: " in str(captured.errors[0]) and captured.errors[1] is None
    assert "libpng" not in capfd.readouterr().err  # nothing reached stderr bare
    plain = preprocess_outcomes([truncated]).errors[0]
    assert "libpng" not in str(plain) and str(plain) in str(captured.errors[0])


def test_degenerate_images_are_flagged_not_refused():
    from spinrec.preprocess import FLAGS, preprocess_outcomes

    rng = np.random.default_rng(0)
    images = {
        None: _encoded(".png"),
        "tiny": np.zeros((1, 1), np.uint8),
        "aspect_ratio": rng.integers(0, 256, (20, 20000), dtype=np.uint8),
        "aspect_ratio ": rng.integers(0, 256, (20000, 20), dtype=np.uint8),
        "blank": np.full((40, 120, 3), 255, np.uint8),
    }
    outcomes = preprocess_outcomes(list(images.values()))
    assert outcomes.errors == [None] * len(images)
    assert outcomes.flags[0] is None
    for want, flag in zip(list(images)[1:], outcomes.flags[1:]):
        assert flag.split(":")[0] == want.strip() and flag.split(":")[0] in FLAGS
    # The flagged rows are preprocessed like any other.
    np.testing.assert_array_equal(outcomes.batch[4], preprocess(images["blank"]))
