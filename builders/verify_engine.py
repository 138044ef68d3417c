"""Verify a TensorRT engine against ONNX Runtime running the same graph on CPU.

    python -m builders.verify_engine --plan spin_encoder/1/model.plan [--images CROPS]... [--checkpoint W.safetensors]

Feeds random images at the profile's min/opt/max batch and every word crop of each ``--images`` folder (in
chunks that stay inside the profile), compares the ``features`` output with ONNX Runtime (both through :func:`spinrec.runtime.open_encoder`; plugin
graphs run the ``SpinBlend`` node through the kernel's host reference, :mod:`spinrec.runtime.ort_spin_blend`) and, with
``--checkpoint``, decodes both with the model's attention head. Passes when the largest absolute feature error
is within the tolerance (per precision, :data:`TOLERANCE`, or ``--tolerance``) and every crop reads the same text
from both. The graph, plugin and profile default to what the plan's ``.json`` record says. The report is
printed and stored in that record under ``verify``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from builders.engine_record import Profile, read_metadata, record_verification, recorded_precision
from builders.tensorrt_env import BuildError
from spinrec.runtime.tensorrt_encoder import TensorRTError

# Largest absolute feature error accepted (the shipped default's features reach |2.4|): float32 engines differ
# from ONNX Runtime by summation order only; tf32 and fp16 by their rounding. For fp16: the shipped default with
# backbone and neck in float16 end to end (PyTorch on CPU, transform in float32 as in the engine) moved the
# features by at most 1.5e-3 (40 real crops) and 1.9e-3 (300 held-out words) and changed no text.
TOLERANCE = {"fp32": 1e-3, "tf32": 2e-2, "fp16": 5e-2}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}

Run = Callable[[np.ndarray], np.ndarray]


def chunk_indices(n: int, profile: Profile) -> list[np.ndarray]:
    """Row indices covering ``range(n)`` in batches whose sizes all lie in ``[profile.min, profile.max]``.

    A short last batch is filled up with the rows just before it (or, when ``n`` itself is below the minimum,
    by repeating rows); results are scattered back by index, so repeated rows only recompute identical values.
    """
    if n <= 0:
        return []
    chunks = [np.arange(start, min(start + profile.max, n)) for start in range(0, n, profile.max)]
    if len(chunks[-1]) < profile.min:
        chunks[-1] = np.arange(n - profile.min, n) if n >= profile.min else np.resize(np.arange(n), profile.min)
    return chunks


def run_in_chunks(run: Run, batch: np.ndarray, profile: Profile) -> np.ndarray:
    out: np.ndarray | None = None
    for idx in chunk_indices(len(batch), profile):
        got = run(batch[idx])
        if out is None:
            out = np.empty((len(batch), *got.shape[1:]), dtype=got.dtype)
        out[idx] = got
    assert out is not None, "empty batch"
    return out


def image_files(folder: Path) -> list[Path]:
    """The image files in ``folder`` and its subfolders, sorted; refused when there are none."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise BuildError(f"no images in {folder}")
    return paths


def max_abs_error(got: np.ndarray, want: np.ndarray) -> float:
    """The largest absolute difference; inf for NaN (which would slip through max() and <=) or other shapes."""
    if got.shape != want.shape:
        return float("inf")
    err = float(np.max(np.abs(got.astype(np.float32) - want)))
    return err if np.isfinite(err) else float("inf")


def load_images(folder: Path) -> tuple[list[str], np.ndarray]:
    """Names and preprocessed ``[N, 1, 32, 100]`` crops of the image files in ``folder`` (and its subfolders)."""
    from spinrec.preprocess import preprocess_batch

    paths = image_files(folder)
    batch, errors = preprocess_batch([p.read_bytes() for p in paths])
    bad = [str(p) for p, e in zip(paths, errors) if e is not None]
    if bad:
        raise BuildError(f"unreadable images: {bad}")
    return [str(p.relative_to(folder)) for p in paths], batch


def compare(
    engine: Run,
    reference: Run,
    random_sets: dict[str, np.ndarray],
    image_sets: dict[str, tuple[list[str], np.ndarray]],
    profile: Profile,
    tolerance: float,
    decode: Callable[[np.ndarray], list[str]] | None = None,
) -> dict[str, Any]:
    """Feature error per set; on image sets with ``decode``, the texts both read and every disagreement."""
    report: dict[str, Any] = {"tolerance": tolerance, "sets": {}, "max_abs_error": 0.0}
    same_total = total = 0
    todo: list[tuple[str, list[str] | None, np.ndarray]] = [(name, None, batch) for name, batch in random_sets.items()]
    todo += [(name, names, batch) for name, (names, batch) in image_sets.items()]
    for name, names, batch in tqdm(todo, desc="verify", file=sys.stderr):
        got, want = run_in_chunks(engine, batch, profile), run_in_chunks(reference, batch, profile)
        err = max_abs_error(got, want)
        entry: dict[str, Any] = {"images": len(batch), "max_abs_error": err}
        report["max_abs_error"] = max(report["max_abs_error"], err)
        if names is not None and decode is not None:
            texts_got, texts_want = decode(got.astype(np.float32)), decode(want)
            differ = {n: [a, b] for n, a, b in zip(names, texts_got, texts_want) if a != b}
            entry["texts_identical"] = f"{len(batch) - len(differ)}/{len(batch)}"
            entry["text_differences"] = differ  # name -> [engine, ONNX Runtime]
            same_total, total = same_total + len(batch) - len(differ), total + len(batch)
        report["sets"][name] = entry
    report["texts_identical"] = f"{same_total}/{total}" if total else None
    report["passed"] = report["max_abs_error"] <= tolerance and same_total == total
    return report


def decoder_of(checkpoint: Path) -> Callable[[np.ndarray], list[str]]:
    """features -> texts with the checkpoint's attention head (PyTorch on CPU, the reference decoder)."""
    from spinrec import weights
    from spinrec.decoding import decode
    from spinrec.runtime.torch_encoder import TorchDecoder

    head = TorchDecoder(weights.load(checkpoint))
    return lambda features: [r.text for r in decode(head(features, stop_at_eos=False))]


def verify_engine(
    plan: Path,
    plugin: Path | None,
    onnx_path: Path,
    profile: Profile,
    precision: str,
    images: Sequence[Path] = (),
    checkpoint: Path | None = None,
    tolerance: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    from spinrec.runtime import open_encoder
    from spinrec.runtime.tensorrt_encoder import TensorRTEncoder

    reference = open_encoder("onnxruntime", onnx_path, blend_reference=True)
    rng = np.random.default_rng(seed)
    random_sets = {
        f"random_b{b}": rng.uniform(-1, 1, size=(b, 1, 32, 100)).astype(np.float32) for b in sorted({profile.min, profile.opt, profile.max})
    }
    image_sets = {str(folder): load_images(folder) for folder in images}
    decode = decoder_of(checkpoint) if checkpoint is not None else None
    with TensorRTEncoder(plan, plugin, precision) as engine:
        return compare(
            engine,
            reference,
            random_sets,
            image_sets,
            profile,
            TOLERANCE[precision] if tolerance is None else tolerance,
            decode,
        )


def add_verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", type=Path, action="append", default=[], help="folder of word crops (repeatable)")
    p.add_argument("--checkpoint", type=Path, default=None, help="weights whose head decodes both outputs to texts")
    p.add_argument("--tolerance", type=float, default=None, help=f"largest abs feature error accepted (default per precision: {TOLERANCE})")


def verify_and_record(plan: Path, plugin: Path | None, onnx_path: Path, profile: Profile, args: argparse.Namespace) -> int:
    """Verify, store the report in the plan's record, print it; 0 when it passed, 1 when not."""
    precision = recorded_precision(plan, TOLERANCE, "builders.build_engine")
    report = verify_engine(plan, plugin, onnx_path, profile, precision, args.images, args.checkpoint, args.tolerance)
    return record_verification(plan, report, "verify_engine", f", identical texts {report['texts_identical']}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m builders.verify_engine", description=__doc__.split("\n\n")[0])
    p.add_argument("--plan", type=Path, required=True)
    p.add_argument("--onnx", type=Path, default=None, help="the graph the plan was built from (default: its record)")
    p.add_argument("--plugin", type=Path, default=None, help="libspin_plugin.so (default: its record)")
    add_verify_args(p)
    args = p.parse_args(argv)
    try:
        record = read_metadata(args.plan)
        build = record.get("build")
        if not isinstance(build, dict):
            raise BuildError(f"{args.plan} has no build record: build it with python -m builders.build_engine")
        onnx_path = args.onnx or Path(record["onnx"])
        plugin = args.plugin or (Path(record["plugin"]) if record.get("plugin") else None)
        return verify_and_record(args.plan, plugin, onnx_path, Profile(*build["profile"]), args)
    except TensorRTError as e:
        print(f"verify_engine: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
