"""Build the text detector's TensorRT engine, ``spin_detector/1/model.plan``, from the graph the repository builder installed.

    python -m builders.build_detector_engine --models /models [--precision fp16] \\
        [--min-shape 32x32] [--opt-shape 736x1312] [--max-shape 2048x2048] [--workspace-mib 1024] \\
        [--timing-cache /models/.timing_cache] [--if-needed] [--verify [--images PHOTOS]...]

The graph is ``spin_detector/1/model.onnx``: PaddleOCR's PP-OCRv6 det small (DB), which the repository builder
copies from the ``rapidocr`` wheel with the contract's tensor names (``pixels`` -> ``probability``,
:mod:`spinrec.page.detector`). No plugin. One optimization profile on ``pixels``: one photograph ``[1, 3, H, W]``,
height and width from ``--min-shape`` to ``--max-shape`` (default 32 to 2,048 a side: spin_page sends 32 to 1,984,
multiples of 32), tuned at ``--opt-shape`` (736x1312: a 1280x720 photograph, the size of the config's warmup).
Precision ``fp16`` (default; the whole network, it has no part kept in FP32), ``tf32`` or ``fp32``, as
:mod:`builders.build_engine` obtains them on TensorRT 10 and 11.

The build itself is :func:`builders.build_engine.build_engine`'s: the plan and its record ``model.plan.json`` (the
graph's hash, every option, GPU and TensorRT version; ``--if-needed`` rebuilds when any of them differs), the
timing cache (one from another GPU or TensorRT is discarded with a warning) and the progress bars. ``--verify``
then compares the engine with ONNX Runtime (:mod:`builders.verify_detector`) and stores the report in the record.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from builders.build_engine import PRECISIONS, BuildOptions, run_builder
from builders.engine_record import ImageProfile
from builders.tensorrt_env import BuildError
from builders import verify_detector
from spinrec.contract import DETECTOR_ONNX, DETECTOR_PLAN


def detector_build(
    models: Path, precision: str = "fp16", profile: ImageProfile = ImageProfile(), workspace_mib: int = 1024, timing_cache: Path | None = None
) -> BuildOptions:
    """The build of the model repository ``models``' detector engine: its installed graph, no plugin, ``profile``."""
    return BuildOptions(
        onnx=models / DETECTOR_ONNX,
        plugin=None,
        output=models / DETECTOR_PLAN,
        precision=precision,
        profile=profile,
        workspace_mib=workspace_mib,
        timing_cache=timing_cache,
    )


def shape(text: str) -> tuple[int, int]:
    """``HEIGHTxWIDTH`` (e.g. ``736x1312``) -> ``(height, width)``."""
    height, sep, width = text.lower().partition("x")
    if not sep or not height.strip().isdigit() or not width.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HEIGHTxWIDTH, e.g. 736x1312")
    return int(height), int(width)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = ImageProfile()
    p = argparse.ArgumentParser(prog="python -m builders.build_detector_engine", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, required=True, help=f"the model repository (reads {DETECTOR_ONNX}, writes {DETECTOR_PLAN} and its .json)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16")
    for name, default in (("min", defaults.min), ("opt", defaults.opt), ("max", defaults.max)):
        p.add_argument(f"--{name}-shape", type=shape, default=default, metavar="HxW", help=f"{name} photograph input (default {default[0]}x{default[1]})")
    p.add_argument("--workspace-mib", type=int, default=1024)
    p.add_argument("--timing-cache", type=Path, default=None, help="read if it fits this GPU/TensorRT, written after the build")
    p.add_argument("--if-needed", action="store_true", help="keep an existing plan with the same graph, options, GPU and TensorRT")
    p.add_argument("--verify", action="store_true", help="then compare the engine with ONNX Runtime (builders.verify_detector)")
    verify_detector.add_verify_args(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def options() -> BuildOptions:
        profile = ImageProfile(args.min_shape, args.opt_shape, args.max_shape)
        opts = detector_build(args.models, args.precision, profile, args.workspace_mib, args.timing_cache)
        if not opts.onnx.is_file():
            raise BuildError(
                f"no detector graph at {opts.onnx}: the repository builder installs it "
                f"(python -m builders.build_repository --output {args.models}; the graph comes with rapidocr==3.10.0)"
            )
        return opts

    def verify(opts: BuildOptions) -> int:
        return verify_detector.verify_and_record(opts.output, opts.onnx, args.images, args.tolerance)

    return run_builder("build_detector_engine", options, args.if_needed, verify if args.verify else None)


if __name__ == "__main__":
    sys.exit(main())
