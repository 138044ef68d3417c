"""Encoder precisions side by side, in one interleaved run: ``python -m perf.precisions --model-repository R``.

R needs the INT8 encoders for the int8 rows (``python -m builders.build_repository --output R --weights W``
writes them unless ``--no-int8``). For each precision (``--precisions``, default fp32,bf16,int8, each the served encoder's
:func:`spinrec.runtime.open_encoder` on the served runtime) the in-process pipeline (preprocess ->
encoder -> NumPy decoder, :class:`spinrec.pipeline.Pipeline`) at batch 32 and batch 1 and the encoder
alone at batch 32 are timed in the same rounds as the 3x3 convolution that sets the fp32 FLOP-count limit
(:mod:`perf.flops`), so every ratio (to fp32, to the limit) comes from one run under one background load.
``--gate G.json`` (from ``python -m spinrec.export.quantize gate``) adds each precision's word accuracy and the
plot of throughput against accuracy. ``perf.run --precisions`` runs the same measurement inside a full run.

Served throughput per precision: ``python -m perf.variants V --source R --encoder-precision int8`` and
``python -m perf.ab --a-repository R --b-repository V``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from perf.baselines import inprocess
from spinrec import contract
from spinrec.export.quantize import GATE_POINTS

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16", "int8")


def measure(repository: Path, payloads: Sequence[bytes], precisions: Sequence[str] = PRECISIONS, threads: int = 2,
            rounds: int = 8, runtime: str = "openvino") -> dict:
    """Images/s per precision and the ratios (see the module doc); a record."""
    from perf.flops import conv_probe, model_macs
    from perf.timing import interleaved, one_at_a_time, summary
    from spinrec import weights

    payloads = list(payloads)
    if len(payloads) < 32:
        raise ValueError("need at least 32 request payloads")
    pipes = {p: inprocess(repository, threads, runtime, precision=p) for p in precisions}
    flop_per_image = 2 * model_macs(weights.load(repository / contract.CHECKPOINT))["encoder_mac"]
    x32 = pipes[precisions[0]].preprocess(payloads[:32])
    texts = {p: pipe.texts(payloads) for p, pipe in pipes.items()}
    one = one_at_a_time(payloads)
    probe, probe_flop, probe_shape = conv_probe(threads=threads)
    fns = {"conv3x3": probe}
    for p, pipe in pipes.items():
        fns[f"pipeline_b32 {p}"] = lambda pipe=pipe: pipe.texts(payloads[:32])
        fns[f"encoder_b32 {p}"] = lambda pipe=pipe: pipe.encoder(x32)
        fns[f"pipeline_b1 {p}"] = lambda pipe=pipe: pipe.texts(one())
    times = interleaved(fns, rounds, warmup=1, desc="precisions")
    gflops = probe_flop / float(np.median(times.pop("conv3x3"))) / 1e9
    limit = gflops * 1e9 / flop_per_image
    record: dict = {
        "repository": str(repository), "runtime": runtime, "threads": threads, "rounds": rounds, "conv_shape": probe_shape,
        "conv_gflops": gflops, "encoder_flop_per_image": flop_per_image, "flop_limit_images_per_s": limit,
        "load_average": list(os.getloadavg()), "precisions": {},
    }  # fmt: skip
    reference = precisions[0]
    for p, pipe in pipes.items():
        entry: dict = {"ran_as": pipe.encoder.precision, "texts_identical_to_" + reference: sum(
            a == b for a, b in zip(texts[p], texts[reference])), "texts": len(payloads)}  # fmt: skip
        for kind, batch in (("pipeline_b32", 32), ("encoder_b32", 32), ("pipeline_b1", 1)):
            entry[kind] = summary(times[f"{kind} {p}"], batch)
        record["precisions"][p] = entry
    for p, entry in record["precisions"].items():
        ref = record["precisions"][reference]
        for kind in ("pipeline_b32", "encoder_b32", "pipeline_b1"):
            entry[kind]["over_" + reference] = entry[kind]["items_per_s"] / ref[kind]["items_per_s"]
        entry["encoder_b32"]["over_flop_limit"] = entry["encoder_b32"]["items_per_s"] / limit
        entry["pipeline_b32"]["over_flop_limit"] = entry["pipeline_b32"]["items_per_s"] / limit
    return record


def add_accuracy(record: dict, gate: dict) -> None:
    """Each precision's word accuracy per gate dataset (the gate's candidate of the same name)."""
    for p, entry in record["precisions"].items():
        candidate = gate["candidates"].get(p)
        if candidate:
            entry["accuracy"] = {Path(d).parent.name if Path(d).suffix else Path(d).name: r["word_accuracy"]
                                 for d, r in candidate["datasets"].items()}  # fmt: skip
            entry["gate_passes"] = candidate["passes"]


def markdown(record: dict, caveat: str = "") -> str:
    ref = next(iter(record["precisions"]))
    lines = [
        f"Encoder precisions, one interleaved run of {record['rounds']} rounds ({record['runtime']}, {record['threads']} threads, "
        f"load average {', '.join(f'{x:.1f}' for x in record['load_average'])}). {caveat}".rstrip(),
        "",
        f"| precision | ran as | encoder b=32 img/s | encoder / {ref} | encoder / fp32 FLOP limit | pipeline b=32 img/s | "
        f"pipeline / {ref} | pipeline b=1 p50 ms | texts identical to {ref} | word accuracy | gate |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for p, e in record["precisions"].items():
        acc = ", ".join(f"{k} {100 * v:.2f} %" for k, v in e.get("accuracy", {}).items()) or "-"
        gate = {True: "pass", False: "FAIL"}.get(e.get("gate_passes"), "-")
        lines.append(
            f"| {p} | {e['ran_as']} | {e['encoder_b32']['items_per_s']:.1f} | {e['encoder_b32']['over_' + ref]:.2f}x | "
            f"{e['encoder_b32']['over_flop_limit']:.2f}x | {e['pipeline_b32']['items_per_s']:.1f} | {e['pipeline_b32']['over_' + ref]:.2f}x | "
            f"{e['pipeline_b1']['latency_ms_p50']:.1f} | {e['texts_identical_to_' + ref]}/{e['texts']} | {acc} | {gate} |"
        )
    lines += ["", f"FLOP-count limit: {record['flop_limit_images_per_s']:.1f} images/s = {record['conv_gflops']:.1f} GFLOP/s "
              f"(fp32 3x3 convolution {record['conv_shape']}, median of the same rounds) / "
              f"{record['encoder_flop_per_image'] / 1e9:.3f} GFLOP per image."]
    return "\n".join(lines) + "\n"


def plot(record: dict, path: Path) -> None:
    """Encoder throughput (over fp32) against word accuracy, one point per precision and dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = next(iter(record["precisions"]))
    datasets = sorted({d for e in record["precisions"].values() for d in e.get("accuracy", {})})
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(5.5 * max(1, len(datasets)), 4.2), squeeze=False)
    for ax, d in zip(axes[0], datasets or [None]):
        for p, e in record["precisions"].items():
            if d is None or d not in e.get("accuracy", {}):
                continue
            x, y = e["encoder_b32"]["over_" + ref], 100 * e["accuracy"][d]
            ax.plot(x, y, "o")
            ax.annotate(p, (x, y), xytext=(4, 4), textcoords="offset points")
        base = record["precisions"][ref].get("accuracy", {}).get(d)
        if base is not None:  # the gate's floor; also keeps the scale honest (a 0.05-point gap is not a cliff)
            ax.axhline(100 * base - GATE_POINTS, color="r", ls="--", lw=1, label=f"gate: {ref} - {GATE_POINTS} points")
            ax.set_ylim(100 * base - 3 * GATE_POINTS, 100 * base + GATE_POINTS)
            ax.legend(fontsize=8, loc="lower left")
        ax.set_xlabel(f"encoder throughput at batch 32 / {ref} (same run)")
        ax.set_ylabel("word accuracy %")
        ax.set_title(f"{d}", fontsize=9)
        ax.grid(True, alpha=0.3)
    fig.suptitle(record.get("caveat", ""), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(record: dict, out: Path, caveat: str = "") -> None:
    out.mkdir(parents=True, exist_ok=True)
    record["caveat"] = caveat
    (out / "precisions.json").write_text(json.dumps(record, indent=1))
    (out / "precisions.md").write_text(markdown(record, caveat))
    if any("accuracy" in e for e in record["precisions"].values()):
        plot(record, out / "throughput_accuracy.png")


def main(argv: list[str] | None = None) -> int:
    from perf.data import render_samples

    p = argparse.ArgumentParser(prog="python -m perf.precisions", description=__doc__.split("\n\n")[0])
    p.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    p.add_argument("--precisions", default=",".join(PRECISIONS))
    p.add_argument("--runtime", default="openvino", choices=("openvino", "onnxruntime"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--gate", type=Path, help="JSON of `python -m spinrec.export.quantize gate` on the same weights")
    p.add_argument("--caveat", default="", help="a note for the table (e.g. 'loaded machine')")
    p.add_argument("--out", type=Path, default=ROOT / "perf" / "results" / "precisions")
    a = p.parse_args(argv)
    samples = render_samples(a.images)
    record = measure(a.model_repository, [s.data for s in samples], a.precisions.split(","), a.threads, a.rounds, a.runtime)
    if a.gate:
        add_accuracy(record, json.loads(a.gate.read_text()))
    write(record, a.out, a.caveat)
    print(markdown(record, a.caveat))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
