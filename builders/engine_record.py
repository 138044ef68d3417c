"""What an engine is built for and the record beside it, shared by the builders (build_engine.py and
build_detector_engine.py, which write them) and the verifiers (verify_engine.py, verify_detector.py, which read
and extend them), so none imports another's internals.

An engine's optimization profile is a :class:`Profile` (the encoder's: every input batched on dimension 0, the
rest fixed) or an :class:`ImageProfile` (the text detector's: one photograph ``[1, C, H, W]`` whose height and
width vary); both say which graph inputs they can serve, the shapes TensorRT gets and what the build record keeps.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence, Union

from builders.tensorrt_env import BuildError
from spinrec.runtime.tensorrt_encoder import read_record as read_metadata
from spinrec.runtime.tensorrt_encoder import record_path as metadata_path

__all__ = ["Profile", "ImageProfile", "ShapeProfile", "read_metadata", "write_metadata", "metadata_path", "recorded_precision", "record_verification", "print_verification"]

#: A graph input's dimensions as :func:`builders.build_engine.graph_inputs` reads them: None where dynamic.
Dims = Sequence[Union[int, None]]


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

    def input_shapes(self, dims: Sequence[int]) -> list[list[int]]:
        """min/opt/max shapes of a network input of dimensions ``dims`` (the batch first)."""
        return self.shapes(dims[1:])

    def key(self) -> list[Any]:
        """The profile as the build record keeps it."""
        return [self.min, self.opt, self.max]

    def check_inputs(self, inputs: Mapping[str, Dims], graph: Path) -> None:
        """Refuse, before TensorRT is involved, a graph whose inputs do not have a dynamic first (batch) dimension
        and fixed other dimensions: one engine must serve every batch of the profile."""
        for name, dims in inputs.items():
            if not dims:
                raise BuildError(f"{graph}: input {name!r} has no shape; export it with a batch dimension")
            if dims[0] is not None and dims[0] > 0:
                raise BuildError(
                    f"{graph}: input {name!r} has a static batch of {dims[0]}; export it with a "
                    "dynamic batch axis (spinrec.export.onnx_export does: dynamic_axes {0: 'batch'})"
                )
            if any(d is None for d in dims[1:]):
                raise BuildError(f"{graph}: input {name!r} must have fixed dimensions after the batch")


@dataclass(frozen=True)
class ImageProfile:
    """The optimization profile of one photograph ``[1, C, H, W]``: (height, width) at min, opt and max. The
    defaults cover every input spin_page sends the text detector (:func:`spinrec.page.detect.input_size`: 32 to
    1,984 pixels a side with its ``max_side_len`` of 2,000), tuned for a 1280x720 photograph (736x1312)."""

    min: tuple[int, int] = (32, 32)
    opt: tuple[int, int] = (736, 1312)
    max: tuple[int, int] = (2048, 2048)

    def __post_init__(self) -> None:
        for side, name in enumerate(("height", "width")):
            if not 1 <= self.min[side] <= self.opt[side] <= self.max[side]:
                raise BuildError(f"need 1 <= min <= opt <= max {name}, got {self.min[side]}/{self.opt[side]}/{self.max[side]}")

    def input_shapes(self, dims: Sequence[int]) -> list[list[int]]:
        """min/opt/max shapes of the network input ``[N, C, H, W]``: one photograph, its channels as the graph's."""
        return [[1, dims[1], *hw] for hw in (self.min, self.opt, self.max)]

    def key(self) -> list[Any]:
        return [list(self.min), list(self.opt), list(self.max)]

    def covers(self, height: int, width: int) -> bool:
        return self.min[0] <= height <= self.max[0] and self.min[1] <= width <= self.max[1]

    def check_inputs(self, inputs: Mapping[str, Dims], graph: Path) -> None:
        """Refuse, before TensorRT is involved, a graph that is not one input ``[N, C, H, W]`` with fixed channels
        and a dynamic height and width (a static batch other than 1 is refused too: the engine runs one photograph)."""
        if len(inputs) != 1:
            raise BuildError(f"{graph}: expected one input [N, C, H, W], got {sorted(inputs)}")
        ((name, dims),) = inputs.items()
        shown = ["?" if d is None else d for d in dims]
        if len(dims) != 4 or dims[1] is None:
            raise BuildError(f"{graph}: input {name!r} must be [N, C, H, W] with fixed channels, got {shown}")
        if dims[0] is not None and dims[0] > 1:
            raise BuildError(f"{graph}: input {name!r} has a static batch of {dims[0]}; the engine runs one photograph")
        if any(d is not None and d > 0 for d in dims[2:]):
            raise BuildError(f"{graph}: input {name!r} has a fixed height or width ({shown}); export it with dynamic H and W")


#: What :class:`builders.build_engine.BuildOptions` takes as its profile.
ShapeProfile = Union[Profile, ImageProfile]


def write_metadata(plan: Path, metadata: dict[str, Any]) -> None:
    metadata_path(plan).write_text(json.dumps(metadata, indent=2) + "\n")


def recorded_precision(plan: Path, known: Collection[str], builder: str) -> str:
    """The precision the plan's build record names (one of ``known``); refused when there is none (``builder``:
    the module that writes such records)."""
    build = read_metadata(plan).get("build")
    precision = build.get("precision") if isinstance(build, dict) else None
    if precision not in known:
        raise BuildError(f"{plan}: no build record with a precision (build it with python -m {builder})")
    return str(precision)


def record_verification(plan: Path, report: dict[str, Any], prog: str, detail: str = "") -> int:
    """Store a verification ``report`` in the plan's record under ``verify`` and print it; 0 when it passed, else 1
    with a line naming the largest error, the tolerance and ``detail``."""
    metadata = read_metadata(plan)
    metadata["verify"] = report
    write_metadata(plan, metadata)
    return print_verification(report, prog, detail)


def print_verification(report: dict[str, Any], prog: str, detail: str = "") -> int:
    """Print a verification ``report``; 0 when it passed, else 1 with a line naming the largest error, the tolerance and ``detail``."""
    print(json.dumps(report, indent=2))
    if not report["passed"]:
        print(f"{prog}: FAILED: max abs error {report['max_abs_error']:.3g} (tolerance {report['tolerance']}){detail}", file=sys.stderr)
        return 1
    return 0
