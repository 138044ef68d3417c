"""Word images rendered by trdg (TextRecognitionDataGenerator, PyPI ``trdg``), for comparing its renderer
with ours (issue 13): ``SynthConfig(style="trdg")`` draws the text and font exactly as the other styles do and
hands them to trdg's ``FakeTextDataGenerator.generate``, with trdg's own options (skew, blur, its four
backgrounds: gaussian noise, white, quasicrystal, its bundled photos; sine/cosine/random distortion; text
colour range, character spacing, margins, outline) drawn from the sample's generator.

trdg is an experiment dependency, not installed by ``scripts/setup.sh``. Install it without its declared
dependencies (``opencv-python`` would shadow our ``opencv-python-headless``; ``wikipedia``, ``requests``,
``arabic-reshaper``, ``python-bidi`` and ``diffimg`` serve code paths not used here):
``pip install --no-deps trdg==1.8.0``. Nothing is downloaded at run time: the backgrounds are the photos
shipped in the wheel.
"""

from __future__ import annotations

import contextlib
import functools
import io
import random
from pathlib import Path

import cv2
import numpy as np
from PIL import ImageFont

INSTALL = "pip install --no-deps trdg==1.8.0"


class TrdgMissing(ImportError):
    """trdg is not installed; the message says how to install it."""


@functools.lru_cache(maxsize=None)
def trdg_modules():
    """trdg's generator and the modules whose ``rnd`` (the stdlib ``random`` module) it draws from."""
    try:
        # data_generator prints a notice when its handwriting model (TensorFlow) cannot be imported.
        with contextlib.redirect_stdout(io.StringIO()):
            from trdg import background_generator, computer_text_generator, data_generator, distorsion_generator
    except ImportError as e:
        raise TrdgMissing(f"style 'trdg' needs the trdg package ({e}); install it with `{INSTALL}`") from None
    if not hasattr(ImageFont.FreeTypeFont, "getsize"):
        # trdg 1.8.0 (its latest release) measures line height with FreeTypeFont.getsize, removed in
        # Pillow 10; getsize's height was the bottom of the ink box drawn from the origin.
        computer_text_generator.get_text_height = lambda font, text: font.getbbox(text)[3]
    return data_generator.FakeTextDataGenerator, (background_generator, computer_text_generator, data_generator, distorsion_generator)


def trdg_dir() -> Path:
    """The installed trdg package folder (bundled fonts under ``fonts/latin``, photos under ``images``)."""
    trdg_modules()
    import trdg

    return Path(trdg.__file__).parent


def render_trdg(text: str, font_path: str, rng: np.random.Generator) -> np.ndarray | None:
    """``text`` in the font at ``font_path`` rendered by trdg as a BGR uint8 ``[H, W, 3]`` image, or None
    where trdg refuses the sample (text and background too close in mean brightness)."""
    generator, modules = trdg_modules()
    # trdg draws from the global `random` module (and OpenCV's RNG for the noise background): a private
    # generator seeded from the sample makes the image a function of (seed, index) like the other styles.
    seed = int(rng.integers(2**31))
    private = random.Random(seed)
    for module in modules:
        module.rnd = private
    cv2.setRNGSeed(seed)
    stroke = rng.random() < 0.1
    with contextlib.redirect_stdout(io.StringIO()):
        image = generator.generate(
            index=0,
            text=text,
            font=font_path,
            out_dir=None,
            size=int(rng.integers(32, 65)),
            extension="png",
            skewing_angle=int(rng.integers(0, 6)),
            random_skew=True,
            blur=int(rng.integers(0, 3)),
            random_blur=True,
            background_type=int(rng.integers(4)),
            distorsion_type=int(rng.choice([0, 0, 1, 2, 3])),
            distorsion_orientation=int(rng.integers(3)),
            is_handwritten=False,
            name_format=0,
            width=-1,
            alignment=1,
            text_color="#000000,#888888",
            orientation=0,
            space_width=1.0,
            character_spacing=int(rng.integers(0, 4)),
            margins=tuple(int(m) for m in rng.integers(0, 8, 4)),
            fit=bool(rng.random() < 0.5),
            output_mask=0,
            word_split=False,
            image_dir=str(trdg_dir() / "images"),
            stroke_width=int(rng.integers(1, 3)) if stroke else 0,
            stroke_fill="#000000,#ffffff",
        )
    if image is None:
        return None
    return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
