"""Verify the text detector's TensorRT engine, or the served ``spin_detector``, against ONNX Runtime on the CPU.

    python -m builders.verify_detector --plan M/spin_detector/1/model.plan [--images PHOTOS]...
    python -m builders.verify_detector --url HOST:GRPC_PORT --onnx M/spin_detector/1/model.onnx --precision fp16 \\
        [--images PHOTOS]... [--out report.json]

Inputs: the synthetic page (:mod:`spinrec.page.synthetic`) and every photograph of each ``--images`` folder, decoded
and resized as ``spin_page`` does it (:func:`spinrec.preprocess.decode_image`, :func:`spinrec.page.detect.prepare`
with PaddleOCR's options), and, for a plan, random inputs at its profile's min, opt and max sizes. Per input: the
largest absolute difference between the two probability maps; per photograph: how many words each map gives
(:func:`spinrec.page.detect.boxes`). Passes when every difference is within the tolerance (per precision,
:data:`TOLERANCE`, or ``--tolerance``) and every photograph has as many words on both sides. A plan's report is
stored in its record under ``verify`` (``builders.gpu_report`` shows it); ``--out`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from builders.engine_record import ImageProfile, print_verification, read_metadata, record_verification, recorded_precision
from builders.tensorrt_env import BuildError
from builders.verify_engine import image_files, max_abs_error
from spinrec.contract import DETECTOR, DETECTOR_INPUT, DETECTOR_OUTPUT
from spinrec.runtime.tensorrt_encoder import TensorRTError

# Largest absolute difference of the probability map accepted (probabilities, so in [0, 1]). FP32 engines differ
# from ONNX Runtime by summation order only. TF32 and FP16 round to 11 significant bits: on the CPU, this graph with
# its weights and every float activation rounded to half (ONNX Runtime, Cast pairs after each node) moved the map
# by at most 1.26e-2 on the synthetic page and 0.87e-2 to 4.42e-2 on the 10 photographs of real_pages_dev (99.99th
# percentile at most 2.05e-2), and changed no word count; 1e-2 would have failed 10 of those 11 images. What
# the words need is the separate condition (as many on both sides); the tolerance catches a broken engine. The
# real figures come from scripts/gpu_check.sh, which has not run yet.
TOLERANCE = {"fp32": 1e-3, "tf32": 5e-2, "fp16": 5e-2}
SYNTHETIC = "synthetic_page"

Run = Callable[[np.ndarray], np.ndarray]


def photographs(folders: Sequence[Path] = ()) -> dict[str, np.ndarray]:
    """The synthetic page and every photograph of ``folders`` (BGR, decoded as spin_page decodes them), by name."""
    from spinrec.page.synthetic import synthetic_page
    from spinrec.preprocess import ImageError, decode_image

    images = {SYNTHETIC: synthetic_page()[0]}
    for folder in folders:
        for path in image_files(folder):
            try:
                images[f"{folder.name}/{path.relative_to(folder)}"] = decode_image(path.read_bytes())
            except ImageError as e:
                raise BuildError(f"{path}: {e}") from None
    return images


def random_inputs(profile: ImageProfile, seed: int = 0) -> dict[str, np.ndarray]:
    """Random detector inputs at the profile's min, opt and max (height, width)."""
    rng = np.random.default_rng(seed)
    sizes = sorted({profile.min, profile.opt, profile.max})
    return {f"random_{h}x{w}": rng.uniform(-1, 1, (1, 3, h, w)).astype(np.float32) for h, w in sizes}


def compare(
    engine: Run, reference: Run, photos: Mapping[str, np.ndarray], randoms: Mapping[str, np.ndarray], tolerance: float
) -> dict[str, Any]:
    """Probability-map error per input; on photographs, the words each map gives (``words``: ``[engine, reference]``)."""
    from spinrec.page.detect import DetectorOptions, boxes, prepare

    options = DetectorOptions()
    report: dict[str, Any] = {"tolerance": tolerance, "inputs": {}, "max_abs_error": 0.0}
    todo: list[tuple[str, np.ndarray | None, np.ndarray]] = [(name, None, pixels) for name, pixels in randoms.items()]
    todo += [(name, image, prepare(image, options)) for name, image in photos.items()]
    same = 0
    for name, image, pixels in tqdm(todo, desc="verify", file=sys.stderr):
        got, want = engine(pixels), reference(pixels)
        entry: dict[str, Any] = {"size": list(pixels.shape[2:]), "max_abs_error": max_abs_error(got, want)}
        if image is not None:
            words = entry["words"] = [len(boxes(m, image.shape[0], image.shape[1], options)[0]) for m in (got, want)]
            same += words[0] == words[1]
        report["max_abs_error"] = max(report["max_abs_error"], entry["max_abs_error"])
        report["inputs"][name] = entry
    report["photographs_same_words"] = f"{same}/{len(photos)}"
    report["passed"] = report["max_abs_error"] <= tolerance and same == len(photos)
    return report


def verify_plan(plan: Path, onnx_path: Path, precision: str, folders: Sequence[Path] = (), tolerance: float | None = None) -> dict[str, Any]:
    """The engine (:class:`~spinrec.runtime.tensorrt_encoder.EngineRunner`, no plugin) against ONNX Runtime on the
    graph it was built from, on the photographs and at its profile's corners."""
    from spinrec.page.detect import DetectorOptions, input_size
    from spinrec.runtime import open_encoder
    from spinrec.runtime.tensorrt_encoder import EngineRunner

    build = read_metadata(plan).get("build", {})
    profile = ImageProfile(*(tuple(side) for side in build["profile"]))
    photos = photographs(folders)
    outside = [n for n, image in photos.items() if not profile.covers(*input_size(*image.shape[:2], DetectorOptions()))]
    if outside:
        raise BuildError(f"{plan}: the profile {profile.key()} does not cover the detector input of {', '.join(outside)}")
    reference = open_encoder("onnxruntime", onnx_path)
    with EngineRunner(plan, None) as runner:
        return compare(
            lambda pixels: runner({DETECTOR_INPUT: pixels})[DETECTOR_OUTPUT],
            reference,
            photos,
            random_inputs(profile),
            TOLERANCE[precision] if tolerance is None else tolerance,
        )


def served(url: str) -> Run:
    """The served ``spin_detector`` (Triton's gRPC endpoint ``url``) as a run: pixels -> probability map."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)

    def run(pixels: np.ndarray) -> np.ndarray:
        request = grpcclient.InferInput(DETECTOR_INPUT, list(pixels.shape), "FP32")
        request.set_data_from_numpy(pixels)
        return client.infer(DETECTOR, [request]).as_numpy(DETECTOR_OUTPUT)

    return run


def verify_served(url: str, onnx_path: Path, tolerance: float, folders: Sequence[Path] = ()) -> dict[str, Any]:
    """The served detector against ONNX Runtime on the photographs (the served profile is not known here)."""
    from spinrec.runtime import open_encoder

    return compare(served(url), open_encoder("onnxruntime", onnx_path), photographs(folders), {}, tolerance)


def verify_and_record(plan: Path, onnx_path: Path, folders: Sequence[Path] = (), tolerance: float | None = None) -> int:
    """Verify the plan, store the report in its record, print it; 0 when it passed, 1 when not."""
    precision = recorded_precision(plan, TOLERANCE, "builders.build_detector_engine")
    report = verify_plan(plan, onnx_path, precision, folders, tolerance)
    return record_verification(plan, report, "verify_detector", words_detail(report))


def words_detail(report: dict[str, Any]) -> str:
    return f", same words on {report['photographs_same_words']} photographs"


def add_verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", type=Path, action="append", default=[], help="folder of photographs, besides the synthetic page (repeatable)")
    p.add_argument("--tolerance", type=float, default=None, help=f"largest abs probability error accepted (default per precision: {TOLERANCE})")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m builders.verify_detector", description=__doc__.split("\n\n")[0])
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--plan", type=Path, help="spin_detector/1/model.plan (graph and precision from its record)")
    target.add_argument("--url", help="a server's gRPC host:port: verify the served spin_detector")
    p.add_argument("--onnx", type=Path, default=None, help="the graph the engine was built from (default: the plan's record)")
    p.add_argument("--precision", choices=sorted(TOLERANCE), default=None, help="with --url: the served engine's, for its tolerance")
    p.add_argument("--out", type=Path, default=None, help="also write the report here (JSON)")
    add_verify_args(p)
    args = p.parse_args(argv)
    try:
        if args.plan is not None:
            onnx_path = args.onnx or Path(read_metadata(args.plan).get("onnx", ""))
            if not onnx_path.is_file():
                raise BuildError(f"the detector graph {onnx_path} is missing (--onnx, or build the plan with python -m builders.build_detector_engine)")
            code = verify_and_record(args.plan, onnx_path, args.images, args.tolerance)
            report = read_metadata(args.plan).get("verify")
        else:
            if args.onnx is None or (args.precision is None and args.tolerance is None):
                p.error("--url needs --onnx and --precision (or --tolerance)")
            tolerance = args.tolerance if args.tolerance is not None else TOLERANCE[args.precision]
            report = verify_served(args.url, args.onnx, tolerance, args.images)
            code = print_verification(report, "verify_detector", words_detail(report))
        if args.out is not None:
            args.out.write_text(json.dumps(report, indent=2) + "\n")
    except TensorRTError as e:
        print(f"verify_detector: error: {e}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
