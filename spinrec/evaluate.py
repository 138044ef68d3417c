"""Accuracy of a recognizer on a labelled word-image set, with PaddleOCR's metric (:mod:`spinrec.metrics`).

Datasets:

- a PaddleOCR label file (``image path<TAB>label`` per line, paths relative to the file's folder or
  ``data_dir``), or a folder holding ``labels.txt`` (what :mod:`spinrec.synth` writes);
- an LMDB in the format of the standard benchmarks (IIIT5K, SVT, IC13, IC15, SVTP, CUTE): ``num-samples``,
  ``image-%09d`` (encoded image bytes) and ``label-%09d`` (UTF-8), indices from 1.

Backends: anything with the signature :data:`Backend`, one result per image, in order: a
:class:`~spinrec.decoding.Reading`, or the exception that image raised. :func:`recognizer_backend` is the
in-process PyTorch one; ``--server`` reads through a Triton server with the project's client
(:func:`client.ocr.evaluation_backend`); any other backend plugs in through ``--backend module:factory``.

Command::

    python -m spinrec.evaluate DATASET [DATASET ...] --weights weights/default.safetensors --out reports/eval
    python -m spinrec.evaluate DATASET --server 127.0.0.1:8001 --protocol grpc   # through Triton
    python -m spinrec.evaluate DATASET --backend mypkg.client:make_backend --backend-option url=localhost:8001

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
from spinrec.metrics import RecMetric

SERVER_BACKEND = "client.ocr:evaluation_backend"

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


def recognizer_backend(
    weights_path: str | Path, batch_size: int = 64, threads: int | None = None, stop_at_eos: bool = True
) -> Backend:
    """The in-process PyTorch pipeline (:class:`spinrec.recognizer.Recognizer`) as a backend;
    ``stop_at_eos=False`` decodes as PaddleOCR does (see :func:`spinrec.decoding.decode`)."""
    import torch

    from spinrec.recognizer import Recognizer

    if threads:
        torch.set_num_threads(threads)
    return Recognizer.from_checkpoint(weights_path, batch_size=batch_size, stop_at_eos=stop_at_eos).recognize


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

    An image the backend rejects (an exception in its slot) counts as a wrong, empty reading.
    """
    from tqdm import tqdm

    metric = RecMetric()
    failures = []
    seconds = 0.0
    for start in tqdm(range(0, len(samples), batch_size), desc=f"eval {name}".strip(), unit="batch", disable=not progress):
        batch = samples[start : start + batch_size]
        t0 = time.perf_counter()
        results = backend([s.image for s in batch])
        seconds += time.perf_counter() - t0
        if len(results) != len(batch):
            raise RuntimeError(f"backend returned {len(results)} results for {len(batch)} images")
        texts = []
        for sample, r in zip(batch, results):
            if isinstance(r, Exception):
                failures.append({"key": sample.key, "error": str(r)})
                texts.append("")
            else:
                texts.append(r.text)
        metric.update(texts, [s.label for s in batch])
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
    }


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spinrec.evaluate", description=__doc__.split("\n")[0])
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
    args = parser.parse_args(argv)
    if sum(x is not None for x in (args.weights, args.server, args.backend)) != 1:
        parser.error("give exactly one of --weights (in-process), --server (Triton) or --backend")
    try:
        if args.weights:
            backend = recognizer_backend(args.weights, args.batch_size, args.threads, not args.paddle_decoding)
            meta = {"backend": "in-process PyTorch", "weights": args.weights, "paddle_decoding": args.paddle_decoding}
        elif args.server:
            backend = load_backend(SERVER_BACKEND, {"url": args.server, "protocol": args.protocol})
            meta = {"backend": f"Triton spin_ocr over {args.protocol} at {args.server}", "factory": SERVER_BACKEND}
        else:
            backend = load_backend(args.backend, _options(args.backend_option))
            meta = {"backend": args.backend, "options": args.backend_option}
        results = {}
        for path in args.datasets:
            samples = read_dataset(path, args.data_dir)[: args.limit]
            results[path] = evaluate(samples, backend, args.batch_size, name=Path(path).name)
    except (DatasetError, OSError, ValueError) as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        return 2
    json_path, md_path = write_reports(results, args.out, meta)
    print(markdown_report(results), end="")
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
