"""Draw words on their photograph (Pillow): each quadrilateral outlined, its text on a filled label above it."""

from __future__ import annotations

import io
from typing import Iterable, Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

#: Outline and label colour of a word drawn without one of its own.
GREEN = (0, 170, 0)


def _font(size: int):
    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def draw_words(
    image: bytes, words: Iterable[tuple[Sequence[Sequence[float]], str, tuple[int, int, int] | None]], caption: str | None = None
) -> Image.Image:
    """``image`` (encoded bytes) with every ``(quad, text, colour)`` of ``words`` drawn; ``colour`` None is
    :data:`GREEN`. Labels scale with the photograph (a 1280-pixel-wide one gets 18-pixel text); ``caption``
    goes in a band at the top."""
    with Image.open(io.BytesIO(image)) as opened:
        picture = ImageOps.exif_transpose(opened).convert("RGB")
    size = max(12, round(picture.width / 70))
    font, line = _font(size), max(3, size // 6)
    pen = ImageDraw.Draw(picture)
    for quad, text, colour in words:
        colour = colour or GREEN
        corners = [(float(x), float(y)) for x, y in quad]
        pen.polygon(corners, outline=colour, width=line)
        if text:
            x, y = min(p[0] for p in corners), min(p[1] for p in corners)
            left, top, right, bottom = pen.textbbox((x, y), text, font=font, anchor="lb")
            pen.rectangle((left - 2, top - 2, right + 2, bottom + 1), fill=colour)
            pen.text((x, y), text, fill="white", font=font, anchor="lb")
    if caption:
        band = size + 12
        framed = Image.new("RGB", (picture.width, picture.height + band), "white")
        framed.paste(picture, (0, band))
        ImageDraw.Draw(framed).text((6, 6), caption, fill="black", font=font)
        picture = framed
    return picture
