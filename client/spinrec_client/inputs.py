"""Command-line image arguments -> ``(path, bytes or the error reading it)`` pairs, in argument order."""

from __future__ import annotations

import glob
import sys
from pathlib import Path
from typing import BinaryIO, Iterable

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
STDIN = "-"


def _read(path: Path) -> bytes | Exception:
    try:
        return path.read_bytes()
    except OSError as e:
        return OSError(f"cannot read {path}: {e.strerror or e}")


def expand(spec: str) -> list[Path] | None:
    """Files named by ``spec``: a directory (image files below it, sorted), a glob, or a file.
    None when nothing matches."""
    path = Path(spec)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if glob.has_magic(spec):
        return [Path(p) for p in sorted(glob.glob(spec, recursive=True)) if Path(p).is_file()] or None
    return [path]


def collect(specs: Iterable[str], stdin: BinaryIO | None = None) -> list[tuple[str, bytes | Exception]]:
    """``-`` is one image read from ``stdin``; see :func:`expand` for the others."""
    items: list[tuple[str, bytes | Exception]] = []
    for spec in specs:
        if spec == STDIN:
            items.append((STDIN, (stdin or sys.stdin.buffer).read()))
            continue
        paths = expand(spec)
        if paths is None:
            items.append((spec, FileNotFoundError(f"no file matches {spec}")))
        elif not paths and Path(spec).is_dir():
            items.append((spec, FileNotFoundError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {spec}")))
        else:
            items += [(str(p), _read(p)) for p in paths]
    return items
