"""What an engine is built for and the record beside it, shared by builders.build_engine (which writes them) and
builders.verify_engine (which reads and extends them), so neither imports the other's internals."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from builders.tensorrt_env import BuildError
from spinrec.runtime.tensorrt_encoder import read_record as read_metadata
from spinrec.runtime.tensorrt_encoder import record_path as metadata_path

__all__ = ["Profile", "read_metadata", "write_metadata", "metadata_path"]


@dataclass
class Profile:
    """The optimization profile of the batch dimension (the engine serves min..max)."""

    min: int = 1
    opt: int = 16
    max: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise BuildError(f"need 1 <= min <= opt <= max batch, got {self.min}/{self.opt}/{self.max}")

    def shapes(self, item_shape: Sequence[int]) -> list[list[int]]:
        """min/opt/max shapes of an input whose per-item shape is ``item_shape``."""
        return [[b, *item_shape] for b in (self.min, self.opt, self.max)]


def write_metadata(plan: Path, metadata: dict[str, Any]) -> None:
    metadata_path(plan).write_text(json.dumps(metadata, indent=2) + "\n")
