"""The SPIN character set and label encoding, in PaddleOCR's order.

PaddleOCR's ``SPINLabelDecode`` builds its class list as ``["sos", "eos"] + spin_dict``: 70 classes,
``sos`` = 0 (also the padding value of training labels), ``eos`` = 1, then the 68 dictionary symbols.
The model can emit neither uppercase letters nor spaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: The 68 lines of PaddleOCR's ``ppocr/utils/dict/spin_dict.txt``, in file order.
SPIN_DICT: tuple[str, ...] = tuple("0123456789abcdefghijklmnopqrstuvwxyz") + tuple(
    ":('-,%>.[?)\"=_*];&+$@/|!<#`{~\\}^"
)

SOS, EOS = "sos", "eos"
SOS_INDEX, EOS_INDEX = 0, 1


@dataclass(frozen=True)
class Charset:
    """Index <-> symbol mapping of the attention head's classes (``sos``, ``eos``, then the dictionary)."""

    symbols: tuple[str, ...] = SPIN_DICT
    classes: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("charset symbols must be unique")
        object.__setattr__(self, "classes", (SOS, EOS) + tuple(self.symbols))

    @classmethod
    def from_file(cls, path: str) -> "Charset":
        """Read a PaddleOCR dictionary file: one symbol per line, no special tokens."""
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8").splitlines()
        return cls(tuple(line for line in lines if line))

    def to_file(self, path: str) -> None:
        """Write the dictionary in PaddleOCR's format (no trailing newline, as ``spin_dict.txt``)."""
        with open(path, "wb") as f:
            f.write("\n".join(self.symbols).encode("utf-8"))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def encode(self, text: str, max_length: int = 25) -> np.ndarray | None:
        """Training label as PaddleOCR's ``SPINLabelEncode`` builds it, or None for a skipped sample.

        The text is lowercased and characters outside the dictionary are dropped. Samples that are empty,
        longer than ``max_length`` before filtering, or empty after it are skipped (None).
        Returns int64 ``[max_length + 2]``: ``[sos, c1..cn, eos, 0, ...]``.
        """
        if not text or len(text) > max_length:
            return None
        index = {c: i for i, c in enumerate(self.classes)}
        ids = [index[c] for c in text.lower() if c in index and c not in (SOS, EOS)]
        if not ids:
            return None
        label = np.zeros(max_length + 2, dtype=np.int64)
        label[1 : len(ids) + 1] = ids
        label[len(ids) + 1] = EOS_INDEX
        return label

    def filter_text(self, text: str) -> str:
        """The text the model is trained to emit for ``text``: lowercased, unknown symbols dropped."""
        known = set(self.symbols)
        return "".join(c for c in text.lower() if c in known)
