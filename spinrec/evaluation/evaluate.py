"""Accuracy of a recognizer on a labelled word-image set, with PaddleOCR's metric (:mod:`spinrec.evaluation.metrics`).

Datasets:

- a PaddleOCR label file (``image path<TAB>label`` per line, paths relative to the file's folder or
  ``data_dir``), or a folder holding ``labels.txt`` (what :mod:`spinrec.training.synth` writes);
- an LMDB in the format of the standard benchmarks (IIIT5K, SVT, IC13, IC15, SVTP, CUTE): ``num-samples``,
  ``image-%09d`` (encoded image bytes) and ``label-%09d`` (UTF-8), indices from 1.

Backends: anything with the signature :data:`Backend`, one result per image, in order: a
:class:`~spinrec.decoding.Reading`, or the exception that image raised. :func:`recognizer_backend` is the
in-process PyTorch one; ``--server`` reads through a Triton server with the project's client
(:func:`server_backend`, on :class:`spinrec_client.OcrClient`); any other backend plugs in through ``--backend module:factory``.

Command::

    python -m spinrec.evaluation.evaluate DATASET [DATASET ...] --weights weights/default.safetensors --out reports/eval
    python -m spinrec.evaluation.evaluate DATASET --server 127.0.0.1:8001 --protocol grpc   # through Triton
    python -m spinrec.evaluation.evaluate DATASET --backend mypkg.client:make_backend --backend-option url=localhost:8001

writes ``OUT.json`` and ``OUT.md`` (a table per dataset: samples, word accuracy, normalized edit distance,
throughput).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from spinrec.decoding import Reading
from spinrec.evaluation.metrics import RecMetric

Backend = Callable[[list[bytes]], list["Reading | Exception"]]


class DatasetError(ValueError):
    """A dataset that cannot be read; the message names the file and the problem."""


@dataclass
class Sample:
    key: str
    image: bytes
    label: str


# ---------------------------------------------------------------------------------------------- readers


def read_label_file(path: str | Path, data_dir: str | Path | None = None) -> list[Sample]:
    """Samples of a PaddleOCR label file; image paths are resolved against ``data_dir`` (default: the
    label file's folder). The label is everything after the first tab."""
    path = Path(path)
    root = Path(data_dir) if data_dir is not None else path.parent
    samples = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise DatasetError(f"{path}:{n}: expected 'image path<TAB>label', got {line[:80]!r}")
        name, label = line.split("\t", 1)
        image_path = root / name
        try:
            samples.append(Sample(name, image_path.read_bytes(), label))
        except OSError as e:
            raise DatasetError(f"{path}:{n}: cannot read image {image_path}: {e.strerror}") from None
    return samples


def read_lmdb(path: str | Path) -> list[Sample]:
    """Samples of a benchmark-format LMDB (keys ``num-samples``, ``image-%09d``, ``label-%09d``)."""
    import lmdb

    path = Path(path)
    if not (path / "data.mdb").exists():
        raise DatasetError(f"{path}: no data.mdb, not an LMDB folder")
    env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False)
    try:
        with env.begin() as txn:
            count = txn.get(b"num-samples")
            if count is None:
                raise DatasetError(f"{path}: LMDB has no 'num-samples' key (not the benchmark format)")
            samples = []
            for i in range(1, int(count) + 1):
                image, label = txn.get(b"image-%09d" % i), txn.get(b"label-%09d" % i)
                if image is None or label is None:
                    raise DatasetError(f"{path}: sample {i} of {int(count)} is missing its image or label")
                samples.append(Sample(f"{i:09d}", bytes(image), label.decode("utf-8")))
    finally:
        env.close()
    return samples


def read_dataset(path: str | Path, data_dir: str | Path | None = None) -> list[Sample]:
    """An LMDB folder, a folder with ``labels.txt``, or a label file."""
    path = Path(path)
    if path.is_dir():
        if (path / "data.mdb").exists():
            return read_lmdb(path)
        if (path / "labels.txt").exists():
            return read_label_file(path / "labels.txt", data_dir)
        raise DatasetError(f"{path}: neither an LMDB (data.mdb) nor a folder with labels.txt")
    if path.is_file():
        return read_label_file(path, data_dir)
    raise DatasetError(f"{path}: no such file or folder")


# ---------------------------------------------------------------------------------------------- backends


#: GA-SPIN branches that :func:`ablate` can switch off in a trained model.
ABLATIONS = ("stn", "offsets")


def ablate(model, branches: Sequence[str]) -> None:
    """Switch GA-SPIN branches off at inference, to measure what each contributes: ``stn`` puts the fiducials
    at their canonical positions (the identity warp), ``offsets`` closes the offset gate (blend share 0)."""
    import torch

    from spinrec.models.tps import fiducials

    unknown = set(branches) - set(ABLATIONS)
    if unknown:
        raise ValueError(f"unknown ablation {sorted(unknown)}; choose from {ABLATIONS}")
    transform = model.transform
    missing = [b for b in branches if not getattr(transform, b)]
    if missing:
        raise ValueError(f"the model has no {' or '.join(missing)} branch to switch off")
    predict = transform.predict
    canonical = torch.from_numpy(fiducials(transform.num_fiducial)).float()

    def predict_without(x):
        weights, offsets, gate, c_prime = predict(x)
        if "offsets" in branches and gate is not None:
            gate = torch.zeros_like(gate)
        if "stn" in branches and c_prime is not None:
            c_prime = canonical.to(c_prime).expand_as(c_prime)
        return weights, offsets, gate, c_prime

    transform.predict = predict_without


def recognizer_backend(
    weights_path: str | Path,
    batch_size: int = 64,
    threads: int | None = None,
    stop_at_eos: bool = True,
    ablations: Sequence[str] = (),
) -> Backend:
    """The in-process PyTorch pipeline (:class:`spinrec.pipeline.Pipeline`) as a backend;
    ``stop_at_eos=False`` decodes as PaddleOCR does (see :func:`spinrec.decoding.decode`); ``ablations``
    switches GA-SPIN branches off (:func:`ablate`)."""
    from spinrec import weights
    from spinrec.pipeline import Pipeline

    model = weights.load(weights_path)
    if ablations:
        ablate(model, ablations)
    return Pipeline.open(model, threads=threads or None, batch_size=batch_size, stop_at_eos=stop_at_eos).recognize


class ServerReadError(RuntimeError):
    """The server refused one image; the message is the server's."""


def server_backend(url: str | None = None, protocol: str = "grpc", batch_size: int | str = 16, concurrency: int | str = 4) -> Backend:
    """A :data:`Backend` that reads through the server with the project's client: encoded images -> one
    :class:`~spinrec.decoding.Reading` or :class:`ServerReadError` each, in order.

    For ``python -m spinrec.evaluation.evaluate DATASET --server URL`` (arguments may come as strings from the command line).
    """
    import numpy as np
    from spinrec_client import OcrClient  # tritonclient: only for --server

    client = OcrClient(url, protocol, batch_size=int(batch_size), concurrency=int(concurrency), char_probs=True)
    client.recognize([])  # raises ClientError now rather than at the first batch

    def read(images: list[bytes]) -> list[Reading | Exception]:
        results = client.recognize([(f"image {i}", data) for i, data in enumerate(images)])
        return [
            Reading(r.text, r.confidence, np.asarray(r.char_probs, np.float32)) if r.ok else ServerReadError(r.error)
            for r in results
        ]

    return read


def load_backend(spec: str, options: dict[str, str]) -> Backend:
    """``module:factory`` -> ``factory(**options)``, which must return a :data:`Backend`."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"backend must be 'module:factory', got {spec!r}")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory(**options)


# -------------------------------------------------------------------------------------------- evaluation


def evaluate(samples: Sequence[Sample], backend: Backend, batch_size: int = 64, progress: bool = True, name: str = "") -> dict:
    """Run ``backend`` over ``samples`` in batches; PaddleOCR's metric plus throughput and failures.

    An image the backend rejects (an exception in its slot) counts as a wrong, empty reading (confidence 0).
    ``readings`` lists every sample's prediction, confidence and correctness (PaddleOCR's normalisation).
    """
    from tqdm import tqdm

    metric = RecMetric()
    failures = []
    readings: list[dict] = []
    seconds = 0.0
    for start in tqdm(range(0, len(samples), batch_size), desc=f"eval {name}".strip(), unit="batch", disable=not progress):
        batch = samples[start : start + batch_size]
        t0 = time.perf_counter()
        results = backend([s.image for s in batch])
        seconds += time.perf_counter() - t0
        if len(results) != len(batch):
            raise RuntimeError(f"backend returned {len(results)} results for {len(batch)} images")
        for sample, r in zip(batch, results):
            failed = isinstance(r, Exception)
            if failed:
                failures.append({"key": sample.key, "error": str(r)})
            text, confidence = ("", 0.0) if failed else (r.text, float(r.confidence))
            metric.update([text], [sample.label])
            readings.append(
                {"key": sample.key, "label": sample.label, "pred": text, "confidence": confidence,
                 "correct": metric.prepare(text) == metric.prepare(sample.label)}
            )  # fmt: skip
    result = metric.result()
    return {
        "samples": len(samples),
        "word_accuracy": result["acc"],
        "norm_edit_dis": result["norm_edit_dis"],
        "correct": result["correct"],
        "failed_images": len(failures),
        "seconds": seconds,
        "images_per_s": len(samples) / seconds if seconds > 0 else float("nan"),
        "examples_wrong": [{"pred": p, "label": g} for p, g in metric.errors[:25]],
        "failures": failures[:25],
        "readings": readings,
    }


#: Upper edges of the confidence bins of :func:`calibration` (the last bin holds confidence 1.0 too).
CONFIDENCE_EDGES = (0.5, 0.7, 0.9, 0.95, 0.99, 1.0)


def calibration(readings: Sequence[dict], edges: Sequence[float] = CONFIDENCE_EDGES) -> list[dict]:
    """Word accuracy of the readings in each confidence bin ``[previous edge, edge)``."""
    rows, low = [], 0.0
    for i, high in enumerate(edges):
        last = i == len(edges) - 1
        inside = [r for r in readings if low <= r["confidence"] and (r["confidence"] < high or last)]
        correct = sum(r["correct"] for r in inside)
        rows.append({"low": low, "high": high, "count": len(inside), "correct": correct,
                     "accuracy": correct / len(inside) if inside else float("nan")})  # fmt: skip
        low = high
    return rows


def confidence_threshold(readings: Sequence[dict], precision: float = 0.95) -> dict:
    """The lowest confidence ``t`` such that readings at or above ``t`` are right at least ``precision`` of the
    time, with the share of readings kept (``coverage``); ``t`` is None when no threshold reaches it."""
    ordered = sorted(readings, key=lambda r: -r["confidence"])
    best: dict = {"threshold": None, "precision": precision, "coverage": 0.0, "accuracy": float("nan")}
    correct = 0
    for n, r in enumerate(ordered, start=1):
        correct += r["correct"]
        tied = n < len(ordered) and ordered[n]["confidence"] == r["confidence"]
        if not tied and correct / n >= precision:
            best = {"threshold": r["confidence"], "precision": precision, "coverage": n / len(ordered), "accuracy": correct / n}
    return best


def calibration_report(results: dict[str, dict]) -> str:
    """Per dataset: accuracy by confidence bin (is the confidence a probability of being right?)."""
    lines = ["| dataset | confidence | readings | correct | word accuracy |", "|---|---|---:|---:|---:|"]
    for name, r in results.items():
        for row in calibration(r.get("readings", [])):
            if row["count"]:
                lines.append(
                    f"| {name} | [{row['low']:.2f}, {row['high']:.2f}{']' if row['high'] == 1.0 else ')'} | {row['count']} | "
                    f"{row['correct']} | {100 * row['accuracy']:.1f} % |"
                )
    return "\n".join(lines) + "\n"


def write_gallery(samples: Sequence[Sample], result: dict, path: str | Path, limit: int = 48, columns: int = 4) -> Path | None:
    """A picture of the misses: each image with its label, the reading and its confidence (None if no miss)."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    images = {s.key: s.image for s in samples}
    misses = [r for r in result["readings"] if not r["correct"]][:limit]
    if not misses:
        return None
    rows = -(-len(misses) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 1.45 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, misses):
        image = cv2.imdecode(np.frombuffer(images[r["key"]], np.uint8), cv2.IMREAD_COLOR)
        if image is not None:
            ax.imshow(image[:, :, ::-1])
        ax.set_title(f"{r['label']} -> {r['pred'] or '(empty)'}  {r['confidence']:.2f}", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def markdown_report(results: dict[str, dict], title: str = "Recognition accuracy") -> str:
    lines = [
        f"# {title}",
        "",
        "Word accuracy and normalized edit distance as PaddleOCR's RecMetric (is_filter: only letters and digits,",
        "case-insensitive). Throughput counts the backend calls only.",
        "",
        "| dataset | samples | word accuracy | norm. edit distance | failed images | images/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['samples']} | {100 * r['word_accuracy']:.2f} % | {r['norm_edit_dis']:.4f} | "
            f"{r['failed_images']} | {r['images_per_s']:.1f} |"
        )
    if any(r.get("readings") for r in results.values()):
        lines += ["", "Accuracy by confidence (calibration):", "", calibration_report(results).rstrip("\n")]
    return "\n".join(lines) + "\n"


def write_reports(results: dict[str, dict], out: str | Path, meta: dict | None = None) -> tuple[Path, Path]:
    """``out.json`` (everything, with ``meta``) and ``out.md`` (the table)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out.with_suffix(".json"), out.with_suffix(".md")
    json_path.write_text(json.dumps({"meta": meta or {}, "datasets": results}, indent=2))
    md_path.write_text(markdown_report(results))
    return json_path, md_path


def _options(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--backend-option must be key=value, got {pair!r}")
        out[key] = value
    return out


def main(argv: list[str] | None = None, prog: str = "python -m spinrec.evaluation.evaluate") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("datasets", nargs="+", help="LMDB folder, folder with labels.txt, or a label file")
    parser.add_argument("--weights", help="safetensors checkpoint for the in-process backend")
    parser.add_argument("--server", metavar="HOST:PORT", help="read through a Triton server serving spin_ocr")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc", help="with --server (default: %(default)s)")
    parser.add_argument("--backend", help="module:factory returning a Backend")
    parser.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE", help="factory argument")
    parser.add_argument("--data-dir", help="root of the image paths of label files (default: the file's folder)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, help="torch threads of the in-process backend")
    parser.add_argument("--paddle-decoding", action="store_true", help="in-process: PaddleOCR's decoding (never stops at eos)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N samples of each dataset")
    parser.add_argument("--out", default="eval_report", help="report path without suffix (writes .json and .md)")
    parser.add_argument("--gallery", action="store_true", help="also write OUT_misses.png: the misses of each dataset")
    parser.add_argument(
        "--ablation", action="store_true",
        help="in-process: also evaluate with the TPS warp, the offset blend and both switched off (rows 'DATASET -stn' ...)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if sum(x is not None for x in (args.weights, args.server, args.backend)) != 1:
        parser.error("give exactly one of --weights (in-process), --server (Triton) or --backend")
    if args.ablation and not args.weights:
        parser.error("--ablation needs --weights (the in-process model)")
    variants: dict[str, Backend] = {}
    try:
        if args.weights:
            backend = recognizer_backend(args.weights, args.batch_size, args.threads, not args.paddle_decoding)
            meta = {"backend": "in-process PyTorch", "weights": args.weights, "paddle_decoding": args.paddle_decoding}
            if args.ablation:
                for off in (("stn",), ("offsets",), ABLATIONS):
                    variants[" -" + " -".join(off)] = recognizer_backend(
                        args.weights, args.batch_size, args.threads, not args.paddle_decoding, off
                    )
        elif args.server:
            backend = server_backend(args.server, args.protocol)
            meta = {"backend": f"Triton spin_ocr over {args.protocol} at {args.server}", "factory": "spinrec.evaluation.evaluate:server_backend"}
        else:
            backend = load_backend(args.backend, _options(args.backend_option))
            meta = {"backend": args.backend, "options": args.backend_option}
        results = {}
        for i, path in enumerate(args.datasets):
            samples = read_dataset(path, args.data_dir)[: args.limit]
            results[path] = evaluate(samples, backend, args.batch_size, name=Path(path).name)
            for suffix, variant in variants.items():
                results[path + suffix] = evaluate(samples, variant, args.batch_size, name=Path(path).name + suffix)
                del results[path + suffix]["readings"]  # one calibration table per dataset, the model as served
            if args.gallery:
                gallery = write_gallery(samples, results[path], f"{args.out}_misses{i or ''}.png")
                if gallery:
                    print(f"wrote {gallery}")
    except (DatasetError, OSError, ValueError) as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        return 2
    json_path, md_path = write_reports(results, args.out, meta)
    print(markdown_report(results), end="")
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
