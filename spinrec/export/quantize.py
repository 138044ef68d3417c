"""INT8 encoders for the CPU by post-training quantization, and the accuracy gate that decides which
precision (fp32 / bf16 / int8) a served configuration may use.

Two quantizers over the same exported ONNX encoder and the same calibration images:

- :func:`quantize_openvino`: OpenVINO's NNCF (``nncf.quantize``) -> an OpenVINO IR with
  FakeQuantize nodes, run by the CPU plugin with int8 kernels (VNNI / AMX where present);
- :func:`quantize_onnxruntime`: ONNX Runtime's ``quantize_static`` in QDQ format (int8 weights per
  channel, uint8 activations), for comparison.

Calibration images are a fixed set versioned with the package (:data:`CALIBRATION_SET`, made once by
``python -m spinrec.export.quantize calibration-set`` from the synthetic generator's *training* split with a fixed
seed, never from an evaluation set), so building reads no system word list or font and every machine builds the
same INT8 encoder from the same weights. Its first :data:`CALIBRATION_COUNT` images calibrate; the other
:data:`BUILD_GATE_COUNT` are held out for the builder's per-checkpoint gate (:func:`build_gate`). The parts that the
accuracy gate showed to be
sensitive stay in float32 (:data:`KEEP_FLOAT`: the GA-SPIN transform with its power curves, instance norm
and TPS grid sample, and the BiLSTM neck); only the ResNet backbone's convolutions are quantized.

The gate (``python -m spinrec.export.quantize gate --weights W``) reads the held-out synthetic words and the
real development crops through every candidate with :func:`spinrec.evaluation.evaluate.evaluate` and passes a
candidate when its word accuracy on *each* set is within :data:`GATE_POINTS` of fp32's; it also reports
the share of texts identical to fp32's and writes a markdown table (``OUT.md``) and everything
(``OUT.json``, with per-image readings).

Each candidate is also a backend of :mod:`spinrec.evaluation.evaluate`::

    python -m spinrec.evaluation.evaluate DATASET --backend spinrec.export.quantize:backend \\
        --backend-option weights=W --backend-option candidate=int8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from spinrec.contract import INT8_FILES

#: The calibration set: resized grey images ``uint8 [N, 32, 100]`` (what :func:`spinrec.preprocess.load` gives)
#: and their texts, package data. Made by :func:`make_calibration_set` from this seed of the synthetic stream.
CALIBRATION_SET = Path(__file__).resolve().parents[1] / "data" / "int8_calibration.npz"
CALIBRATION_SEED = 20261203
CALIBRATION_COUNT = 512
#: The held-out part of the set that the builder's gate reads (after the calibration images).
BUILD_GATE_COUNT = 512
#: The builder's gate: int8 is served only when it reads at least this share of the held-out images exactly
#: as fp32 does and loses at most :data:`GATE_POINTS` of word accuracy there. Measured on these 512 images:
#: the shipped synthetic-only default 95.3 % identical (65.6 % word accuracy both), the random-weight test
#: checkpoint 36.9 %; scene-style images with low-confidence readings flip more often than plain ones (98.9 %
#: identical on 2,000 plain held-out words), so the bar sits below the first with room, far above the second.
BUILD_GATE_IDENTICAL = 0.90
CALIBRATION_BATCH = 32
#: ONNX node-name prefixes (module paths of :class:`spinrec.models.spin.SPIN`) kept in float32.
KEEP_FLOAT = ("/transform/", "/neck/")
#: OpenVINO operation types kept in float32 too: converting the kept modules renames some operations
#: (the LSTMs become ``LSTMSequence_<n>``, instance norm ``MVN_<n>``), so their ONNX names no longer match.
KEEP_FLOAT_TYPES = ("LSTMSequence", "MVN")
#: Largest drop of word accuracy from fp32, in percentage points, on each gate dataset.
GATE_POINTS = 0.5


def make_calibration_set(path: str | Path = CALIBRATION_SET, count: int = CALIBRATION_COUNT + BUILD_GATE_COUNT,
                         seed: int = CALIBRATION_SEED) -> Path:
    """Render ``count`` words of the synthetic training split (stream ``seed``) and store them as served
    preprocessing sees them after the resize (a developer's command: it needs the word list and fonts that
    ``scripts/setup.sh --dev`` installs; building reads only its result)."""
    from tqdm import tqdm

    from spinrec.preprocess import load
    from spinrec.training.synth import SynthConfig, WordImages

    source = WordImages(SynthConfig(split="train"))
    samples = [source.sample(seed, i) for i in tqdm(range(count), desc="calibration set", unit="img")]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path, images=np.stack([load(image) for image, _ in samples]), texts=np.array([text for _, text in samples]),
        seed=seed, made_by="python -m spinrec.export.quantize calibration-set",
    )  # fmt: skip
    return path


def calibration_set(path: str | Path = CALIBRATION_SET) -> tuple[np.ndarray, list[str]]:
    """The stored set: preprocessed images ``[N, 1, 32, 100]`` float32 and their texts."""
    from spinrec.preprocess import normalize

    try:
        with np.load(path, allow_pickle=False) as stored:
            images, texts = stored["images"], [str(t) for t in stored["texts"]]
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"INT8 calibration set {path} unreadable ({e}); the package is incomplete") from None
    return normalize(images)[:, None], texts


def calibration_images(count: int = CALIBRATION_COUNT) -> np.ndarray:
    """The first ``count`` images of the stored set, ``[N, 1, 32, 100]``: what NNCF and ONNX Runtime calibrate on."""
    images, _ = calibration_set()
    if count > len(images):
        raise ValueError(f"{count} calibration images asked for, the stored set has {len(images)}")
    return images[:count]


def _batches(images: np.ndarray, size: int = CALIBRATION_BATCH) -> list[np.ndarray]:
    return [images[i : i + size] for i in range(0, len(images), size)]


def quantize_openvino(onnx_path: str | Path, out_xml: str | Path, images: np.ndarray, keep: Sequence[str] = KEEP_FLOAT) -> Path:
    """NNCF post-training quantization of the ONNX encoder -> OpenVINO IR ``out_xml`` (+ ``.bin``).

    Operations whose names start with one of ``keep`` are left in float32 (NNCF's ignored scope)."""
    import nncf
    import openvino as ov

    from spinrec.export.onnx_export import INPUT_NAME

    model = ov.Core().read_model(str(onnx_path))
    patterns = [f"^{p}.*" for p in keep]
    batches = _batches(images)
    quantized = nncf.quantize(
        model,
        nncf.Dataset(batches, lambda x: {INPUT_NAME: x}),
        preset=nncf.QuantizationPreset.PERFORMANCE,
        target_device=nncf.TargetDevice.CPU,
        subset_size=len(batches),  # counted in dataset items, here batches: all of them
        ignored_scope=nncf.IgnoredScope(patterns=patterns, types=list(KEEP_FLOAT_TYPES), validate=False) if patterns else None,
    )
    out_xml = Path(out_xml)
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    # Weights stay as NNCF wrote them (int8 constants + float scales): no fp16 compression of the float parts.
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return out_xml


def quantize_onnxruntime(onnx_path: str | Path, out_onnx: str | Path, images: np.ndarray, keep: Sequence[str] = KEEP_FLOAT) -> Path:
    """ONNX Runtime static quantization (QDQ, int8 weights per channel, uint8 activations, min-max
    calibration) of the ONNX encoder -> ``out_onnx``; nodes whose names start with ``keep`` stay float32."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from spinrec.export.onnx_export import INPUT_NAME

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(_batches(images))

        def get_next(self):
            batch = next(self.items, None)
            return None if batch is None else {INPUT_NAME: batch}

    graph = onnx.load(str(onnx_path)).graph
    excluded = [n.name for n in graph.node if n.name.startswith(tuple(keep))] if keep else []
    out_onnx = Path(out_onnx)
    out_onnx.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(
        str(onnx_path), str(out_onnx), Reader(),
        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        per_channel=True, nodes_to_exclude=excluded,
    )  # fmt: skip
    return out_onnx


def build_int8(onnx_path: str | Path, images: np.ndarray | None = None) -> dict[str, Path]:
    """Both INT8 artifacts next to ``onnx_path`` under the names the served encoder looks for
    (:data:`spinrec.contract.INT8_FILES`): runtime -> path."""
    onnx_path = Path(onnx_path)
    images = calibration_images() if images is None else images
    return {
        "openvino": quantize_openvino(onnx_path, onnx_path.with_name(INT8_FILES["openvino"]), images),
        "onnxruntime": quantize_onnxruntime(onnx_path, onnx_path.with_name(INT8_FILES["onnxruntime"]), images),
    }


def held_out_set() -> tuple[np.ndarray, list[str]]:
    """The part of the calibration set that calibration never sees (after its first :data:`CALIBRATION_COUNT`)."""
    images, texts = calibration_set()
    return images[CALIBRATION_COUNT:], texts[CALIBRATION_COUNT:]


def read_held_out(pipeline) -> tuple[list[str], float]:
    """What ``pipeline`` (a :class:`spinrec.pipeline.Pipeline`) reads on :func:`held_out_set`, and its word accuracy."""
    from spinrec.evaluation.metrics import RecMetric

    images, texts = held_out_set()
    read = [r.text for r in pipeline.read_preprocessed(images)]
    metric = RecMetric()
    metric.update(read, texts)
    return read, metric.result()["acc"]


def build_gate(onnx_path: str | Path, checkpoint: str | Path, threads: int = 2) -> dict:
    """The builder's per-checkpoint gate: fp32 and the NNCF int8 encoder next to ``onnx_path`` (OpenVINO, as
    served) read the held-out part of the calibration set with ``checkpoint``'s head. Returns the record for
    ``build.json``: ``passes``, ``identical`` (share of texts equal to fp32's), both word accuracies, the
    thresholds, and ``reason`` when it fails."""
    from spinrec.pipeline import Pipeline

    read, accuracy = {}, {}
    for precision in ("fp32", "int8"):
        read[precision], accuracy[precision] = read_held_out(Pipeline.open(checkpoint, "openvino", onnx_path, threads, precision, batch_size=64))
    count = len(read["fp32"])
    identical = sum(a == b for a, b in zip(read["fp32"], read["int8"])) / count
    drop = 100 * (accuracy["fp32"] - accuracy["int8"])
    record = {
        "images": count, "identical": identical, "fp32_word_accuracy": accuracy["fp32"], "int8_word_accuracy": accuracy["int8"],
        "min_identical": BUILD_GATE_IDENTICAL, "max_drop_points": GATE_POINTS,
        "passes": identical >= BUILD_GATE_IDENTICAL and drop <= GATE_POINTS,
    }  # fmt: skip
    if not record["passes"]:
        failed = []
        if identical < BUILD_GATE_IDENTICAL:
            failed.append(f"int8 read {100 * identical:.1f} % of {count} held-out calibration images as fp32 does (needs >= {100 * BUILD_GATE_IDENTICAL:.0f} %)")
        if drop > GATE_POINTS:
            failed.append(f"int8 lost {drop:.2f} points of word accuracy there (at most {GATE_POINTS})")
        record["reason"] = "; ".join(failed)
    return record


# --------------------------------------------------------------------------------------------- the gate


@dataclass(frozen=True)
class Candidate:
    """An encoder configuration the served model can run: ``runtime`` and ``precision`` as in
    ``configs/cpu.pbtxt``; ``onnx`` names the float graph the INT8 artifacts sit next to."""

    name: str
    runtime: str
    precision: str
    onnx: str = "model.onnx"
    how: str = ""


#: The gate's candidates; the first is the reference. ``int8_all`` quantizes the whole graph (nothing kept
#: in float32) to show what :data:`KEEP_FLOAT` is for.
CANDIDATES = (
    Candidate("fp32", "openvino", "fp32", how="OpenVINO f32 (served today)"),
    Candidate("bf16", "openvino", "bf16", how="OpenVINO, inference precision bf16"),
    Candidate("int8", "openvino", "int8", how="NNCF PTQ, backbone int8, transform + neck float32"),
    Candidate("int8_all", "openvino", "int8", "all/model.onnx", how="NNCF PTQ, every convolution and matmul int8"),
    Candidate("int8_ort_qdq", "onnxruntime", "int8", how="ONNX Runtime quantize_static QDQ, backbone int8"),
    Candidate("fp32_ort", "onnxruntime", "fp32", how="ONNX Runtime fp32 (reference for the QDQ row)"),
)


def prepare(weights: str | Path, work: str | Path, images: np.ndarray | None = None, candidates: Sequence[Candidate] = CANDIDATES) -> Path:
    """Export ``weights``' encoder to ``work/model.onnx`` and write the INT8 artifacts the candidates need."""
    import warnings

    import torch

    from spinrec import weights as spin_weights
    from spinrec.export.onnx_export import export_encoder

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    onnx_path = work / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        export_encoder(spin_weights.load(weights), onnx_path)
    wanted = {c.onnx for c in candidates if c.precision == "int8"}
    if wanted:
        images = calibration_images() if images is None else images
    if "model.onnx" in wanted:
        build_int8(onnx_path, images)
    if "all/model.onnx" in wanted:
        (work / "all").mkdir(exist_ok=True)
        quantize_openvino(onnx_path, work / "all" / INT8_FILES["openvino"], images, keep=())
        if not (work / "all" / "model.onnx").exists():  # the served encoder finds its INT8 file next to this name
            (work / "all" / "model.onnx").symlink_to(onnx_path)
    return onnx_path


def backend(weights: str, candidate: str = "int8", work: str | None = None, threads: str | int = 2):
    """A :data:`spinrec.evaluation.evaluate.Backend` reading through one candidate's served stages
    (:class:`spinrec.pipeline.Pipeline` on its runtime and precision, the NumPy decoder).
    Exports and quantizes into ``work`` (a temporary folder if not given)."""
    chosen = [c for c in CANDIDATES if c.name == candidate]
    if not chosen:
        raise ValueError(f"unknown candidate {candidate!r}: choose from {', '.join(c.name for c in CANDIDATES)}")
    work = Path(work or tempfile.mkdtemp(prefix="spin-quantize-"))
    prepare(weights, work, candidates=chosen)
    return _pipeline(weights, work, chosen[0], int(threads)).recognize


def _pipeline(weights: str | Path, work: Path, candidate: Candidate, threads: int, batch_size: int = 64):
    from spinrec.pipeline import Pipeline

    return Pipeline.open(weights, candidate.runtime, work / candidate.onnx, threads, candidate.precision, batch_size=batch_size)


def identical_share(a: dict, b: dict) -> float:
    """Share of images that two evaluations of the same samples read as exactly the same text."""
    pa, pb = [r["pred"] for r in a["readings"]], [r["pred"] for r in b["readings"]]
    return sum(x == y for x, y in zip(pa, pb)) / max(1, len(pa))


def gate(weights: str | Path, datasets: Sequence[str | Path], work: str | Path, limit: int | None = None,
         threads: int = 2, names: Sequence[str] | None = None, batch_size: int = 64, calibration: int = CALIBRATION_COUNT) -> dict:
    """Every candidate over every dataset; the verdict per candidate (see the module doc)."""
    from spinrec.evaluation.evaluate import evaluate, read_dataset
    from spinrec.runtime.openvino_encoder import cpu_capabilities

    unknown = set(names or ()) - {c.name for c in CANDIDATES}
    if unknown:
        raise ValueError(f"unknown candidates {sorted(unknown)}: choose from {', '.join(c.name for c in CANDIDATES)}")
    chosen = [c for c in CANDIDATES if names is None or c.name in names or c is CANDIDATES[0]]
    if not Path(weights).is_file():
        raise ValueError(f"{weights}: no such checkpoint")
    samples = {str(d): read_dataset(d)[:limit] for d in datasets}  # a bad dataset fails before minutes of quantization
    t0 = time.perf_counter()
    needs_images = any(c.precision == "int8" for c in chosen)
    prepare(weights, work, calibration_images(calibration) if needs_images else None, chosen)
    record: dict = {
        "weights": str(weights), "limit": limit, "threads": threads, "gate_points": GATE_POINTS,
        "calibration": {"source": f"{CALIBRATION_SET.name} (synthetic training split)", "seed": CALIBRATION_SEED, "images": calibration},
        "keep_float": list(KEEP_FLOAT), "cpu": cpu_capabilities(), "prepare_seconds": time.perf_counter() - t0,
        "datasets": {}, "candidates": {},
    }  # fmt: skip
    for c in chosen:
        pipe = _pipeline(weights, Path(work), c, threads, batch_size)
        results = {d: evaluate(s, pipe.recognize, batch_size, name=f"{c.name} {Path(d).name}") for d, s in samples.items()}
        record["candidates"][c.name] = {"runtime": c.runtime, "precision": c.precision, "ran_as": pipe.encoder.precision,
                                        "how": c.how, "datasets": results}  # fmt: skip
    reference = record["candidates"][CANDIDATES[0].name]["datasets"]
    ort_reference = record["candidates"].get("fp32_ort", {}).get("datasets")
    for name, entry in record["candidates"].items():
        passed = True
        for d, r in entry["datasets"].items():
            ref = reference[d]
            r["delta_points"] = 100 * (r["word_accuracy"] - ref["word_accuracy"])
            r["identical_to_fp32"] = identical_share(r, ref)
            if ort_reference is not None and entry["runtime"] == "onnxruntime":
                r["identical_to_fp32_ort"] = identical_share(r, ort_reference[d])
            passed &= r["delta_points"] >= -GATE_POINTS
            r["differing_from_fp32"] = [
                {"key": a["key"], "label": a["label"], "fp32": b["pred"], "read": a["pred"]}
                for a, b in zip(r["readings"], ref["readings"]) if a["pred"] != b["pred"]
            ]  # fmt: skip
        entry["passes"] = passed
    for entry in record["candidates"].values():  # the per-image readings are summarised by now: keep the record small
        for r in entry["datasets"].values():
            del r["readings"]
    for d, s in samples.items():
        record["datasets"][d] = {"samples": len(s)}
    return record


def markdown(record: dict) -> str:
    """The gate's table (one row per candidate and dataset), for the model card and README."""
    lines = [
        f"Accuracy gate, weights `{record['weights']}`: a candidate passes when its word accuracy on every set is within "
        f"{record['gate_points']} points of fp32 (OpenVINO f32). Identical = share of images read as exactly fp32's text. "
        f"img/s as measured during the evaluation ({record['threads']} threads, shared machine: indicative only).",
        "",
        "| candidate | ran as | dataset | samples | word accuracy | vs fp32 (points) | identical to fp32 | img/s | gate |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, c in record["candidates"].items():
        for d, r in c["datasets"].items():
            lines.append(
                f"| {name} | {c['runtime']} {c['ran_as']} | {Path(d).name if Path(d).name != 'labels.tsv' else Path(d).parent.name} | "
                f"{r['samples']} | {100 * r['word_accuracy']:.2f} % | {r['delta_points']:+.2f} | {100 * r['identical_to_fp32']:.1f} % | "
                f"{r['images_per_s']:.0f} | {'pass' if c['passes'] else 'FAIL'} |"
            )
    weak = [Path(d).name for d, r in record["candidates"][next(iter(record["candidates"]))]["datasets"].items() if r["word_accuracy"] < 0.05]
    if weak:
        lines += ["", f"**fp32 reads almost nothing on {', '.join(weak)}** (an untrained or unsuited model): the accuracy "
                  "comparison there is vacuous and only the identical-text rate says anything."]
    cpu = record["cpu"]
    lines += ["", f"CPU: {cpu['name']}; OpenVINO capabilities {', '.join(cpu['openvino'])}; instruction flags "
              f"{', '.join(cpu['flags']) or 'none of VNNI/AMX/avx512_bf16'}. Calibration: {record['calibration']['images']} images of "
              f"the synthetic training split, seed {record['calibration']['seed']}; kept in float32: {', '.join(record['keep_float'])}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spinrec.export.quantize", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gate", help="word accuracy of every precision candidate against fp32 on labelled sets")
    g.add_argument("--weights", required=True, help="safetensors checkpoint")
    g.add_argument("--dataset", action="append", help="label file, folder with labels.txt, or LMDB (repeatable; default: "
                   "/root/spin_eval/heldout2000 and ../shared/real_crops_dev/labels.tsv)")
    g.add_argument("--limit", type=int, help="only the first N samples of each dataset (quick runs)")
    g.add_argument("--candidates", help=f"comma-separated subset of {','.join(c.name for c in CANDIDATES)} (fp32 always runs)")
    g.add_argument("--threads", type=int, default=2)
    g.add_argument("--calibration", type=int, default=CALIBRATION_COUNT, help="calibration images (default %(default)s)")
    g.add_argument("--work", help="folder for the exported and quantized encoders (default: a temporary one)")
    g.add_argument("--out", default="reports/precision_gate", help="report path without suffix (writes .json and .md)")
    q = sub.add_parser("build", help="write the INT8 artifacts next to an exported model.onnx")
    q.add_argument("onnx", type=Path)
    c = sub.add_parser("calibration-set", help="render the calibration set the package ships (needs setup.sh --dev's word list and fonts)")
    c.add_argument("out", type=Path, nargs="?", default=CALIBRATION_SET)
    args = parser.parse_args(argv)
    try:
        if args.command == "calibration-set":
            print(f"wrote {make_calibration_set(args.out)}")
            return 0
        if args.command == "build":
            for runtime, path in build_int8(args.onnx).items():
                print(f"{runtime}: {path}")
            return 0
        root = Path(__file__).resolve().parents[2]
        datasets = args.dataset or ["/root/spin_eval/heldout2000", str(root.parent / "shared" / "real_crops_dev" / "labels.tsv")]
        work = args.work or tempfile.mkdtemp(prefix="spin-gate-")
        names = args.candidates.split(",") if args.candidates else None
        record = gate(args.weights, datasets, work, args.limit, args.threads, names, calibration=args.calibration)
    except (OSError, ValueError) as e:
        print(f"quantize: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    out.with_suffix(".md").write_text(markdown(record))
    print(markdown(record), end="")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
