"""Reduced-precision numerics on an input-sensitive model: do bf16 encoders read the same texts as fp32?

With a plain random initialisation (the repository's untrained build) the decoder reads nearly the same
text for every image, so "identical texts" would be vacuous. This builds the tests' input-sensitive
untrained checkpoint (``perf.untrained.make_test_checkpoint``: batch-norm statistics from real word
images, decoder input weights rescaled so readings depend on the image), exports its encoder to ONNX,
and compares the texts decoded from fp32 ONNX Runtime features with those from each reduced-precision
candidate on rendered words. ``python -m perf.numerics --images 128``.

With trained weights, ``--dataset`` (a label file or benchmark LMDB, as :mod:`spinrec.evaluation.evaluate` reads)
replaces the rendered words, and each candidate's word accuracy against the labels is reported too:
``python -m perf.numerics --weights weights/default.safetensors --dataset HELDOUT_LMDB``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(prog="python -m perf.numerics", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--weights", type=Path, help="a real checkpoint instead of the input-sensitive untrained one")
    p.add_argument("--dataset", type=Path, help="label file or LMDB to read instead of rendered words (with --weights)")
    p.add_argument("--out", type=Path, default=ROOT / "perf" / "results" / "runtimes" / "numerics.json")
    a = p.parse_args(argv)

    from spinrec.decoder import HeadDecoder
    from spinrec.export.onnx_export import export_encoder
    from spinrec import weights
    from spinrec.preprocess import preprocess_batch
    from spinrec.runtime import open_encoder

    from perf.data import render_samples

    from spinrec.evaluation.evaluate import read_dataset
    from spinrec.evaluation.metrics import RecMetric

    if a.dataset and not a.weights:
        p.error("--dataset needs --weights: the untrained model's readings have no labels to match")
    if a.dataset:
        dataset = read_dataset(a.dataset)
        images, errors = preprocess_batch([s.image for s in dataset])
        labels = [s.label for s, e in zip(dataset, errors) if e is None]
        images = images[[i for i, e in enumerate(errors) if e is None]]
    else:
        samples = render_samples(a.images, a.seed)
        images, _ = preprocess_batch([s.data for s in samples])
        labels = None

    def accuracy(texts: list[str]) -> float | None:
        if labels is None:
            return None
        metric = RecMetric()
        metric.update(texts, labels)
        return metric.result()["acc"]

    tmp = Path(tempfile.mkdtemp(prefix="spin-numerics-"))
    if a.weights:
        ckpt = a.weights
    else:
        from perf.untrained import make_test_checkpoint

        ckpt = tmp / "sensitive.safetensors"
        make_test_checkpoint(ckpt, [s.data for s in samples[:32]])
    model = weights.load(ckpt)
    onnx_path = tmp / "model.onnx"
    export_encoder(model, onnx_path)
    decoder = HeadDecoder(ckpt, stop_at_eos=True)

    def texts(feats):
        return [r.text for r in decoder(feats)]

    fp32 = open_encoder("onnxruntime", onnx_path, a.threads)
    ref_feats = np.concatenate([fp32(images[i : i + 32]) for i in range(0, len(images), 32)])
    ref = texts(ref_feats)
    record = {"weights": str(a.weights) if a.weights else "input-sensitive untrained (perf.untrained.make_test_checkpoint)",
              "images": str(a.dataset) if a.dataset else f"{len(ref)} rendered words, seed {a.seed}",
              "count": len(ref), "distinct_fp32_texts": len(set(ref)), "fp32_examples": ref[:8],
              "fp32_word_accuracy": accuracy(ref), "candidates": {}}
    variants = {
        "openvino_f32": lambda: open_encoder("openvino", onnx_path, a.threads, "fp32"),
        "openvino_bf16": lambda: open_encoder("openvino", onnx_path, a.threads, "bf16"),
        "torch_autocast_bf16": lambda: open_encoder("torch", ckpt, a.threads, "bf16"),
        "torch_bf16_transform_fp32": lambda: open_encoder("torch", ckpt, a.threads, "bf16", autocast_transform=False),
    }
    for name, make in variants.items():
        enc = make()
        feats = np.concatenate([enc(images[i : i + 32]) for i in range(0, len(images), 32)])
        got = texts(feats)
        diff = [(r, g) for r, g in zip(ref, got) if r != g]
        record["candidates"][name] = {
            "relative_l2_error_vs_ort_fp32": float(np.linalg.norm(feats - ref_feats) / np.linalg.norm(ref_feats)),
            "texts_identical": len(ref) - len(diff), "texts_total": len(ref), "differing_examples": diff[:8],
            "word_accuracy": accuracy(got),
        }
        print(name, record["candidates"][name], flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(record, indent=1))
    print(json.dumps({k: v for k, v in record.items() if k != "candidates"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
