"""Fuzz the server's decode path (``preprocess_outcomes`` as ``spin_preprocess`` runs it) with hypothesis.

Seeds are small word crops encoded as PNG (8-bit, 16-bit, palette, RGBA), JPEG (baseline, progressive),
WebP (lossy, lossless), TIFF (raw, LZW, deflate) and BMP; each example applies 1-4 mutations (bit flips,
byte writes biased to the header, insertions, deletions, truncation, splicing another seed's tail).
Property: every input ends as an :class:`~spinrec.preprocess.ImageError` with a known reason, or as a
finite row in [-1, 1]; anything else raised fails the run, a crash kills it, a hang trips the caller's
timeout (tests/test_fuzz_decode.py runs it in a child process).

    python tests/fuzz_decode.py --examples 20000 --json perf/results/fuzz_decode/fuzz.json
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections import Counter

import cv2
import numpy as np
from hypothesis import HealthCheck, given, seed as hypothesis_seed, settings, strategies as st
from PIL import Image
from tqdm import tqdm

from spinrec.preprocess import REJECTIONS, preprocess_outcomes


def seeds() -> dict[str, bytes]:
    """One small word crop in every format and common variant the decoder accepts."""
    bgr = np.full((40, 120, 3), 235, np.uint8)
    cv2.putText(bgr, "fuzz", (6, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (20, 40, 10), 2)
    rgb = Image.fromarray(bgr[:, :, ::-1])

    def pil(image, fmt, **kw):
        out = io.BytesIO()
        image.save(out, fmt, **kw)
        return out.getvalue()

    return {
        "png": cv2.imencode(".png", bgr)[1].tobytes(),
        "png16": cv2.imencode(".png", bgr.astype(np.uint16) * 257)[1].tobytes(),
        "png_palette": pil(rgb.convert("P"), "PNG"),
        "png_rgba": pil(rgb.convert("RGBA"), "PNG"),
        "jpeg": cv2.imencode(".jpg", bgr)[1].tobytes(),
        "jpeg_progressive": pil(rgb, "JPEG", progressive=True),
        "webp": cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, 80])[1].tobytes(),
        "webp_lossless": cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes(),
        "tiff": pil(rgb, "TIFF"),
        "tiff_lzw": pil(rgb, "TIFF", compression="tiff_lzw"),
        "tiff_deflate": pil(rgb, "TIFF", compression="tiff_adobe_deflate"),
        "bmp": cv2.imencode(".bmp", bgr)[1].tobytes(),
    }


SEEDS = seeds()
MUTATIONS = ("flip", "write", "insert", "delete", "truncate", "splice")


@st.composite
def mutated(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(MUTATIONS))
        end = max(len(data) - 1, 0)
        # Half the positions fall in bytes 8-63, past the signatures, where the headers (sizes, formats,
        # offsets) live: a broken signature only ever meets Pillow's format detection.
        pos = draw(st.one_of(st.integers(min(8, end), min(63, end)), st.integers(0, end)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "write" and data:
            data[pos] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[pos:]
        elif op == "splice":
            other = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
            data[pos:] = other[draw(st.integers(0, len(other) - 1)) :]
    return name, bytes(data)


def run(examples: int, seed: int) -> dict:
    """Fuzz ``examples`` inputs; returns the outcome counts (raises on the first broken property)."""
    counts: Counter = Counter()
    bar = tqdm(total=examples, desc="fuzz decode", unit="input", mininterval=1)

    @hypothesis_seed(seed)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), print_blob=True)  # fmt: skip
    @given(mutated())
    def check(case):
        name, data = case
        out = preprocess_outcomes([data], capture_native_stderr=True)
        error = out.errors[0]
        if error is None:
            row = out.batch[0]
            assert np.isfinite(row).all() and row.min() >= -1 and row.max() <= 1, name
            counts["read"] += 1
            counts["read_flagged"] += out.flags[0] is not None
        else:
            assert error.reason in REJECTIONS, (name, error.reason)
            counts[f"error:{error.reason}"] += 1
        counts[f"seed:{name}"] += 1
        bar.update()

    start = time.perf_counter()
    check()
    bar.close()
    return {"examples": sum(v for k, v in counts.items() if k.startswith("seed:")), "seconds": round(time.perf_counter() - start, 1),
            "random_seed": seed, "counts": dict(sorted(counts.items()))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the counts here")
    args = parser.parse_args(argv)
    result = run(args.examples, args.seed)
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
