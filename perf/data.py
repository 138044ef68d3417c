"""Request data for perf_analyzer: rendered word images, encoded as PNG and JPEG, in ``--input-data`` JSON.

perf_analyzer copies a ``{"b64": ...}`` payload byte for byte into the request tensor, so for a BYTES
(``TYPE_STRING``) tensor the payload must already be Triton's serialized form: per element a 4-byte
little-endian length, then the bytes. Without the prefix the server reads the PNG signature as a
length and rejects (or worse, misreads) every request.

The images come from :class:`spinrec.training.synth.WordImages` (real fonts, words, backgrounds, blur, noise),
at the sizes a detector's crops have: the renderer's own 22-56 px text heights, and a share rescaled
by 0.5-3x, so the preprocessor's decode and resize see small and large inputs, as in production.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from spinrec import contract

FORMATS = ("png", "jpeg")


@dataclass(frozen=True)
class Sample:
    """One request payload: the encoded image, its format, text and decoded size (for the record)."""

    data: bytes
    fmt: str
    text: str
    height: int
    width: int


def serialize_element(value: bytes) -> bytes:
    """One BYTES element in Triton's wire form: ``uint32 little-endian length`` + bytes."""
    return struct.pack("<I", len(value)) + value


def serialize_elements(values: Iterable[bytes]) -> bytes:
    """A BYTES tensor's whole buffer (elements in row-major order), as ``serialize_byte_tensor`` makes it."""
    return b"".join(serialize_element(v) for v in values)


def deserialize_elements(buffer: bytes) -> list[bytes]:
    """The inverse of :func:`serialize_elements`; refuses a truncated buffer instead of guessing."""
    out, pos = [], 0
    while pos < len(buffer):
        if pos + 4 > len(buffer):
            raise ValueError(f"truncated length prefix at byte {pos} of {len(buffer)}")
        (n,) = struct.unpack_from("<I", buffer, pos)
        pos += 4
        if pos + n > len(buffer):
            raise ValueError(f"element at byte {pos - 4} claims {n} bytes, only {len(buffer) - pos} left")
        out.append(bytes(buffer[pos : pos + n]))
        pos += n
    return out


def encode_image(image: np.ndarray, fmt: str, jpeg_quality: int = 90) -> bytes:
    """BGR uint8 -> PNG or JPEG bytes (OpenCV, as a client would)."""
    import cv2

    if fmt == "png":
        ok, buf = cv2.imencode(".png", image)
    elif fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    else:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {image.shape} image as {fmt}")
    return buf.tobytes()


def render_samples(count: int, seed: int = 2026, rescale_share: float = 0.5, progress: bool = True) -> list[Sample]:
    """``count`` word images, alternating PNG and JPEG; a ``rescale_share`` of them is rescaled by a
    random factor in [0.5, 3] (crops from photos of different resolutions). Deterministic in ``seed``."""
    import cv2
    from tqdm import tqdm

    from spinrec.training.synth import SynthConfig, WordImages

    source = WordImages(SynthConfig(split="all", style="plain"))  # the request set of the recorded runs
    rng = np.random.default_rng(seed)
    samples = []
    for i in tqdm(range(count), desc="render request images", disable=not progress, leave=False):
        image, text = source.sample(seed, i)
        if rng.random() < rescale_share:
            f = float(rng.uniform(0.5, 3.0))
            h, w = image.shape[:2]
            size = (max(4, round(w * f)), max(4, round(h * f)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        fmt = FORMATS[i % len(FORMATS)]
        samples.append(Sample(encode_image(image, fmt), fmt, text, image.shape[0], image.shape[1]))
    return samples


def input_data(payloads: Sequence[bytes], name: str = contract.IMAGE) -> dict:
    """perf_analyzer ``--input-data`` document: one entry per payload, each a ``[1]`` BYTES tensor
    (``shape`` excludes the batch dimension of a batching model). perf_analyzer cycles the entries."""
    if not payloads:
        raise ValueError("no payloads")
    return {
        "data": [
            {name: {"content": {"b64": base64.b64encode(serialize_element(p)).decode("ascii")}, "shape": [1]}}
            for p in payloads
        ]
    }


def tensor_input_data(arrays: Sequence[np.ndarray], name: str) -> dict:
    """``--input-data`` for a numeric input (a composing model measured alone): raw little-endian bytes."""
    return {
        "data": [
            {name: {"content": {"b64": base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")}, "shape": list(a.shape)}}
            for a in arrays
        ]
    }


def payloads_from_input_data(doc: dict, name: str = contract.IMAGE) -> list[bytes]:
    """The image bytes back out of an ``--input-data`` document (checks the prefix of every entry)."""
    out = []
    for i, entry in enumerate(doc["data"]):
        elements = deserialize_elements(base64.b64decode(entry[name]["content"]["b64"]))
        if len(elements) != 1:
            raise ValueError(f"entry {i}: expected 1 element, found {len(elements)}")
        out.append(elements[0])
    return out


def write_input_data(path: str | Path, doc: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def describe(samples: Sequence[Sample]) -> dict:
    """Sizes and formats of the request set, for the run record."""
    sizes = np.array([len(s.data) for s in samples])
    hs = np.array([s.height for s in samples])
    ws = np.array([s.width for s in samples])
    return {
        "count": len(samples),
        "formats": {f: sum(s.fmt == f for s in samples) for f in FORMATS},
        "encoded_bytes": {"min": int(sizes.min()), "median": int(np.median(sizes)), "max": int(sizes.max())},
        "height_px": {"min": int(hs.min()), "median": int(np.median(hs)), "max": int(hs.max())},
        "width_px": {"min": int(ws.min()), "median": int(np.median(ws)), "max": int(ws.max())},
    }
