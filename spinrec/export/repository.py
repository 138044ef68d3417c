"""Assemble the Triton model repository for the CPU server from a safetensors checkpoint.

    python -m spinrec.export.repository [--weights CKPT] [--output DIR] [--if-needed]

(``python -m builders.build_repository`` is the same command.)

Steps: pick the checkpoint (``--weights``; else ``weights/default.safetensors``; else a deterministic
untrained one, with a loud warning), copy it into ``spin_decoder/1/model.safetensors`` (the decoder reads
only its ``head.*`` tensors), export the encoder to ``spin_encoder/1/model.onnx`` and check it against
PyTorch in ONNX Runtime (below), write the charset file, check and copy in the text detector for ``spin_page``
(``--detector``, default PP-OCRv6 det small from the installed ``rapidocr``; :mod:`spinrec.page.detector`), and record
what was built in ``build.json``.

The export check (:func:`spinrec.export.onnx_export.check_encoder`) runs 6 rendered words and 6 noise images
through both encoders, in batches of 1, 3 and 8. It accepts the graph when (1) the head reads the same 26
greedy tokens from the ONNX features as from PyTorch's, on every check image whose tokens PyTorch's own
float32 noise leaves unchanged, and (2) the relative feature error ``||onnx - torch|| / ||torch||`` is at
most ``max(--max-error, --noise-factor x noise)`` (defaults 1e-4 and 3), ``noise`` being how far
PyTorch's features move when 1 % of the input pixels move by one float32 ulp. A converted PaddleOCR
checkpoint is float32-sensitive by construction (PaddleOCR's fp32 TPS grid cancels large terms), so a
fixed 1e-4 refused faithful exports of it; its tolerance now comes from its own measured noise. With ``--output`` elsewhere than ``model_repository/`` the
configs and ``model.py`` files are copied there first. The TensorRT engine (``spin_encoder/1/model.plan``)
is built separately, on a GPU host, by ``builders/build_engine.py``. The layout is
:mod:`spinrec.contract`'s.

This module imports only the standard library at load time, so the launcher can ask
:func:`needs_build` cheaply; torch and the exporter are imported when a build runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

from spinrec.contract import ARTIFACTS, CHARSET, CHECKPOINT, DETECTOR_ONNX, INT8_FILES, ONNX, RECORD

_DATA = Path(__file__).resolve().parents[1] / "data"
#: The configs and Python models (package data; in a checkout, a link to its model_repository/).
SOURCE = (_DATA / "model_repository").resolve()
#: The shipped default checkpoint (package data; in a checkout, a link to weights/default.safetensors).
DEFAULT_WEIGHTS = (_DATA / "default.safetensors").resolve()
#: Where a build goes unless told: a checkout builds in place; an installed package's files are not
#: ours to write, so it builds into the user's cache.
DEFAULT_OUTPUT = (
    SOURCE
    if (_DATA / "model_repository").is_symlink()
    else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spinrec" / "model_repository"
)
UNTRAINED_SEED = 0

# Never copied from the source tree: built per output.
_BUILT_PATTERNS = ("*.onnx", "*.plan", "*.safetensors", "model_int8.*", "charset.txt", "build.json", "__pycache__", "*.tmp")

#: Below this word accuracy on the held-out calibration words (synthetic renders any trained recognizer reads
#: well: the shipped default 65.6 %), a checkpoint is marked as reading nothing usable.
USABLE_ACCURACY = 0.05

DEGENERATE_BANNER = """
{bar}
WARNING: the checkpoint {source} reads {accuracy:.1%} of {images} held-out synthetic words (a trained model
reads most of them): it is untrained or degenerate, and what it returns is garbage (build.json: "reads").
{bar}"""

UNTRAINED_BANNER = """
{bar}
WARNING: no trained weights ({default} is absent and --weights was not given).
Building from an UNTRAINED checkpoint (seed {seed}). THIS MODEL READS NOTHING: every text it returns is
garbage. Pass --weights CKPT.safetensors (see `python -m spinrec convert-paddle`) for a real model.
{bar}"""


class BuildError(RuntimeError):
    """The build cannot go on; the message says why."""


#: What to install when PyTorch is missing, for a wheel and for a checkout.
TORCH_EXTRA = "pip install 'spinrec[torch]' (in a checkout: pip install -e '.[torch]')"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(weights: Path | None) -> Path | None:
    """The checkpoint to build from: ``weights``, else the embedded default, else None (untrained)."""
    if weights is not None:
        if not weights.is_file():
            raise BuildError(f"checkpoint not found: {weights}")
        return weights
    return DEFAULT_WEIGHTS if DEFAULT_WEIGHTS.is_file() else None


def identity(weights: Path | None) -> str:
    """What a build is a function of: the checkpoint's bytes, or the seed and torch version of the untrained one."""
    if weights is None:
        return f"untrained seed={UNTRAINED_SEED} torch={metadata.version('torch')}"
    return f"sha256={_sha256(weights)}"


def read_record(output: Path) -> dict | None:
    try:
        return json.loads((output / RECORD).read_text())
    except (OSError, ValueError):
        return None


def needs_build(output: Path, weights: Path | None = None, int8: bool = True, detector: Path | None = None) -> str | None:
    """Why ``output`` must be (re)built for ``weights`` (resolved as :func:`resolve_weights`), or None;
    ``int8``: the served precision needs the INT8 encoders (a build with ``--no-int8`` lacks them); ``detector``:
    the text detector's graph (default: the one :func:`spinrec.page.detector.find_detector` finds)."""
    missing = [str(a) for a in ARTIFACTS if not (output / a).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    wanted = identity(resolve_weights(weights))
    record = read_record(output) or {}
    if record.get("identity") != wanted:
        return f"built from [{record.get('identity')}], wanted [{wanted}]"
    if int8 and record.get("int8_gate") is None:  # a gate that failed is an answer; no gate means never tried
        return "no INT8 encoders"
    from spinrec.page.detector import DetectorError, find_detector, sha256

    try:
        wanted_detector = sha256(find_detector(detector))
    except DetectorError:
        return None  # the build would fail the same way; what is built still serves
    if (record.get("detector") or {}).get("sha256") != wanted_detector:
        return "the text detector differs"
    return None


def export_check_options(max_error: float | None = None, noise_factor: float | None = None) -> list[str]:
    """This builder's command-line options for the export check (``--max-error``, ``--noise-factor``), for
    the callers that run it as a command (the launcher, the GPU image's start); None leaves the default."""
    out: list[str] = []
    for option, value in (("--max-error", max_error), ("--noise-factor", noise_factor)):
        if value is not None:
            out += [option, repr(float(value))]
    return out


def _copy_sources(output: Path) -> None:
    if output.resolve() == SOURCE.resolve():
        return
    shutil.copytree(SOURCE, output, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*_BUILT_PATTERNS))


def _place(src: Path, dst: Path) -> None:
    """Copy via a temporary name, so an interrupted copy never looks like an artifact."""
    if dst.exists() and dst.resolve() == src.resolve():
        return
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def build(
    output: Path = DEFAULT_OUTPUT,
    weights: Path | None = None,
    max_error: float | None = None,
    noise_factor: float | None = None,
    int8: bool = True,
    detector: Path | None = None,
) -> dict:
    """Build ``output`` from ``weights`` (see the module doc) and return the record written to build.json.

    ``max_error`` and ``noise_factor`` default to :data:`spinrec.export.onnx_export.ERROR_FLOOR` and
    :data:`~spinrec.export.onnx_export.NOISE_FACTOR`. ``int8`` also writes the INT8 encoders
    (:func:`spinrec.export.quantize.build_int8`) that the served precision ``int8`` runs; without them it runs fp32.
    ``detector``: the text detector's ONNX graph for ``spin_page`` (default: PP-OCRv6 det small from the installed
    ``rapidocr`` package; :mod:`spinrec.page.detector`), checked and copied in."""
    from tqdm import tqdm

    from spinrec.page.detector import DetectorError, find_detector, install

    weights = resolve_weights(weights)
    try:
        detector = find_detector(detector)
    except DetectorError as e:
        raise BuildError(str(e)) from None
    steps = tqdm(total=6, desc="build repository", unit="step", file=sys.stderr)
    output.mkdir(parents=True, exist_ok=True)
    (output / RECORD).unlink(missing_ok=True)  # an interrupted build must not look complete
    _copy_sources(output)

    steps.set_postfix_str("checkpoint")
    import onnxruntime

    try:
        import torch
    except ModuleNotFoundError:
        raise BuildError(f"building the model repository exports the network with PyTorch, which is not installed: {TORCH_EXTRA}") from None

    from spinrec import __version__, weights as spin_weights
    from spinrec.charset import Charset
    from spinrec.export.onnx_export import ERROR_FLOOR, NOISE_FACTOR, OPSET, check_encoder, export_encoder

    checkpoint = output / CHECKPOINT
    if weights is None:
        print(UNTRAINED_BANNER.format(bar="!" * 100, default=DEFAULT_WEIGHTS, seed=UNTRAINED_SEED), file=sys.stderr)
        tmp = checkpoint.with_name(checkpoint.name + ".tmp")
        spin_weights.save_untrained(tmp, UNTRAINED_SEED)
        os.replace(tmp, checkpoint)
    source = weights or checkpoint
    try:
        model = spin_weights.load(source)
    except Exception as e:  # safetensors, JSON and shape errors alike: the file is not a SPIN checkpoint
        raise BuildError(f"{source}: not a usable SPIN checkpoint: {e}") from None
    if weights is not None:
        _place(weights, checkpoint)
    charset = Charset()
    if charset.num_classes != model.config.num_classes:
        raise BuildError(f"the checkpoint predicts {model.config.num_classes} classes, the charset has {charset.num_classes}")
    steps.update()

    steps.set_postfix_str("export ONNX")
    onnx_path = output / ONNX
    tmp = onnx_path.with_name(onnx_path.name + ".tmp")
    with warnings.catch_warnings():
        # The tracer's notes on shape checks and constants are expected; check_encoder is the real check.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        export_encoder(model, tmp)
    steps.update()

    steps.set_postfix_str("verify ONNX")
    check = check_encoder(model, tmp, ERROR_FLOOR if max_error is None else max_error, NOISE_FACTOR if noise_factor is None else noise_factor)
    if not check.ok:
        tmp.unlink()
        raise BuildError(f"ONNX encoder differs from PyTorch: {check.reason} (--max-error, --noise-factor)")
    os.replace(tmp, onnx_path)
    steps.update()

    for name in INT8_FILES.values():  # an INT8 encoder of an earlier checkpoint must not outlive its float graph
        for stale in (onnx_path.with_name(name), onnx_path.with_name(name).with_suffix(".bin")):
            stale.unlink(missing_ok=True)
    int8_files: dict[str, str] = {}
    int8_gate: dict | None = None
    precision = {"served": "fp32", "reason": "built with --no-int8"}
    if int8:
        from spinrec.export.quantize import build_gate, build_int8

        steps.set_postfix_str("quantize INT8")
        try:
            built = build_int8(onnx_path)
            steps.set_postfix_str("INT8 gate")
            int8_gate = build_gate(onnx_path, checkpoint)
        except (RuntimeError, ValueError) as e:  # NNCF's and ONNX Runtime's quantizers say what failed; the float build stands
            raise BuildError(f"INT8 quantization failed: {e}") from e
        if int8_gate["passes"]:
            int8_files = {runtime: str(path.relative_to(output)) for runtime, path in built.items()}
            precision = {"served": "int8", "reason": f"passed the INT8 gate ({100 * int8_gate['identical']:.1f} % identical texts)"}
        else:
            # Served int8 would read differently from the checkpoint: remove it, so the encoder serves fp32.
            for path in built.values():
                path.unlink()
                path.with_suffix(".bin").unlink(missing_ok=True)
            precision = {"served": "fp32", "reason": f"failed the INT8 gate: {int8_gate['reason']}"}
        print(f"build_repository: INT8 gate: {'pass' if int8_gate['passes'] else 'FAIL'}, {precision['reason']}", file=sys.stderr)

    steps.set_postfix_str("reading check")
    reads = reading_check(model, int8_gate)
    if not reads["usable"] and weights is not None:
        print(DEGENERATE_BANNER.format(bar="!" * 100, source=weights, accuracy=reads["word_accuracy"], images=reads["images"]), file=sys.stderr)

    steps.set_postfix_str("charset")
    charset.to_file(str(output / CHARSET))
    steps.update()

    steps.set_postfix_str("text detector")
    try:
        detector_record = install(detector, output / DETECTOR_ONNX)
    except DetectorError as e:
        raise BuildError(str(e)) from None
    steps.update()

    steps.set_postfix_str("record")
    meta = spin_weights.read_metadata(checkpoint)
    record = {
        "identity": identity(weights),
        "untrained": weights is None,
        "reads": reads,
        "checkpoint": {
            "source": str(weights.resolve()) if weights else None,
            "description": meta.get("source", ""),
            "sha256": _sha256(checkpoint),
        },
        "spin_config": model.config.to_dict(),
        "onnx": {
            "opset": OPSET,
            "max_relative_error_vs_torch": check.error,
            "torch_float32_noise": check.noise,
            "tolerance": check.tolerance,
            "tokens_compared_on": check.compared,
        },
        "artifacts": {str(a): (output / a).stat().st_size for a in ARTIFACTS if a != RECORD},
        "detector": detector_record,
        "int8": int8_files,
        "int8_gate": int8_gate,
        "precision": precision,
        "versions": {
            "spinrec": __version__,
            "torch": torch.__version__,
            "onnx": metadata.version("onnx"),
            "onnxruntime": onnxruntime.__version__,
        },
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (output / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    steps.update()
    steps.close()
    return record


def reading_check(model, int8_gate: dict | None = None) -> dict:
    """Word accuracy of the checkpoint on the held-out part of the package's calibration words, and whether that
    is a usable recognizer (:data:`USABLE_ACCURACY`): the INT8 gate's fp32 reading where it ran (the same images,
    the exported graph the export check matched to PyTorch), else ``model`` in PyTorch."""
    from spinrec.export.quantize import held_out_set, read_held_out
    from spinrec.pipeline import Pipeline

    if int8_gate is not None:
        images, accuracy = int8_gate["images"], int8_gate["fp32_word_accuracy"]
    else:
        images, accuracy = len(held_out_set()[1]), read_held_out(Pipeline.open(model, batch_size=64))[1]
    return {"images": images, "word_accuracy": accuracy, "usable": accuracy >= USABLE_ACCURACY}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spinrec.export.repository", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help=f"safetensors checkpoint (default: {DEFAULT_WEIGHTS} if present, else untrained)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="model repository to build (default: %(default)s)")
    parser.add_argument(
        "--max-error", type=float,
        help="ONNX-vs-PyTorch relative error of the encoder features always accepted (default: 1e-4, spinrec.export.onnx_export.ERROR_FLOOR)",
    )
    parser.add_argument(
        "--noise-factor", type=float,
        help="also accept up to this multiple of PyTorch's own float32 feature noise (default: 3, spinrec.export.onnx_export.NOISE_FACTOR)",
    )
    parser.add_argument(
        "--int8", action=argparse.BooleanOptionalAction, default=True,
        help="write the INT8 encoders (NNCF and ONNX Runtime QDQ) that the served precision int8 runs (default); "
        "--no-int8 skips the calibration and the CPU encoder serves fp32",
    )
    parser.add_argument(
        "--detector", type=Path,
        help="the text detector's ONNX graph for spin_page, a PaddleOCR DB export (default: PP-OCRv6 det small from the installed rapidocr package)",
    )
    parser.add_argument("--if-needed", action="store_true", help="do nothing when OUTPUT is already built from the same checkpoint")
    args = parser.parse_args(argv)
    try:
        if args.if_needed:
            reason = needs_build(args.output, args.weights, args.int8, args.detector)
            if reason is None:
                print(f"build_repository: {args.output} is up to date")
                return 0
            print(f"build_repository: building {args.output}: {reason}", file=sys.stderr)
        record = build(args.output, args.weights, args.max_error, args.noise_factor, args.int8, args.detector)
    except BuildError as e:
        print(f"build_repository: error: {e}", file=sys.stderr)
        return 1
    kind = "UNTRAINED (reads nothing)" if record["untrained"] else record["checkpoint"]["source"]
    print(
        f"build_repository: built {args.output} from {kind}; CPU encoder serves {record['precision']['served']} "
        f"({record['precision']['reason']}); "
        f"ONNX vs PyTorch relative error {record['onnx']['max_relative_error_vs_torch']:.2e} "
        f"(tolerance {record['onnx']['tolerance']:.2e}; PyTorch's float32 noise {record['onnx']['torch_float32_noise']:.2e})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
