"""CPU encoder runtimes for the published model's encoder, side by side (``python -m perf.runtimes``).

Every candidate is a callable ``images [B, 1, 32, 100] float32 -> features [B, 26, 512] float32`` built
from the same weights (the ONNX graph of the model repository for ONNX Runtime and OpenVINO, the
safetensors checkpoint for PyTorch), all with the same thread budget. They are timed interleaved
(:mod:`perf.timing`) at batch 1 and batch 32 and reported as images/s and as a share of the FLOP-count
limit measured in the same run (:func:`perf.flops.conv_probe`, timed interleaved with the candidates).

Numerics: each candidate's features are compared with PyTorch fp32 (relative L2 error), and the texts
decoded from them (NumPy decoder, stop at eos) with the texts decoded from fp32 features, on rendered
word images. With the untrained repository weights the texts are meaningless, but a reduced-precision
encoder must still give the *same* texts as fp32 for the check to pass; random weights make that check
harder, not easier (no confident margins).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spinrec import contract
from spinrec.runtime import Encoder


@dataclass
class Candidate:
    name: str
    runtime: str
    precision: str
    how: str  # how it is configured, in words a config file can follow


# ------------------------------------------------------------------------------------------- registry


def candidates(include_compile: bool = False) -> list[Candidate]:
    c = [
        Candidate("ort_all_t2", "onnxruntime", "fp32", "GraphOptimizationLevel ORT_ENABLE_ALL, intra_op 2, inter_op 1 (configs/cpu.pbtxt before OpenVINO was measured)"),
        Candidate("ort_all_t2_nospin", "onnxruntime", "fp32", "as ort_all_t2 + session.intra_op.allow_spinning=0"),
        Candidate("ort_extended_t2", "onnxruntime", "fp32", "ORT_ENABLE_EXTENDED (no NCHWc layout transform), intra_op 2"),
        Candidate("ort_basic_t2", "onnxruntime", "fp32", "ORT_ENABLE_BASIC, intra_op 2"),
        Candidate("ort_all_t1", "onnxruntime", "fp32", "ORT_ENABLE_ALL, intra_op 1 (one core per instance, 2 instances)"),
        Candidate("torch_eager", "pytorch", "fp32", "eager, torch.set_num_threads(2), NCHW"),
        Candidate("torch_eager_cl", "pytorch", "fp32", "eager, channels_last"),
        Candidate("torch_jit", "pytorch", "fp32", "torch.jit.trace + freeze + optimize_for_inference"),
        Candidate("openvino_f32", "openvino", "fp32", "dynamic batch, INFERENCE_PRECISION_HINT f32, 2 threads, 1 stream, LATENCY (what configs/cpu.pbtxt runs: 1 instance x 2 threads)"),
        Candidate("openvino_f32_static", "openvino", "fp32", "as openvino_f32, model reshaped to the batch size"),
        Candidate("openvino_bf16", "openvino", "bf16", "dynamic batch, INFERENCE_PRECISION_HINT bf16"),
        Candidate("torch_autocast_bf16", "pytorch", "bf16", "eager + torch.autocast('cpu', bfloat16)"),
    ]
    if include_compile:
        c.append(Candidate("torch_compile", "pytorch", "fp32", "torch.compile (inductor), static shapes"))
    return c


def build(name: str, onnx_path: Path, checkpoint: Path, threads: int, batch: int) -> Encoder:
    """The candidate ``name`` through :func:`spinrec.runtime.open_encoder` (its options spelled out in ``how``)."""
    from spinrec.runtime import open_encoder

    if name.startswith("ort_"):
        return open_encoder("onnxruntime", onnx_path, 1 if "_t1" in name else threads, optimization=name.split("_")[1],
                            spinning="nospin" not in name)  # fmt: skip
    if name.startswith("openvino_"):
        return open_encoder("openvino", onnx_path, threads, "bf16" if "bf16" in name else "fp32", batch=batch if "static" in name else None)
    torch_options = {
        "torch_eager": {},
        "torch_eager_cl": {"channels_last": True},
        "torch_jit": {"mode": "jit"},
        "torch_compile": {"mode": "compile"},
        "torch_autocast_bf16": {"precision": "bf16"},
    }
    if name not in torch_options:
        raise ValueError(f"unknown candidate {name}")
    return open_encoder("torch", checkpoint, threads, **torch_options[name])


# ---------------------------------------------------------------------------------------- measurement


def compare(
    repository: Path,
    images: np.ndarray,
    batches: tuple[int, ...] = (1, 32),
    threads: int = 2,
    rounds: int = 5,
    include_compile: bool = False,
    only: list[str] | None = None,
) -> dict:
    """Time every candidate at each batch size (interleaved), check numerics, and return a record.

    ``images``: preprocessed rendered words ``[N, 1, 32, 100]``, N >= max(batches); also the numerics set.
    """
    from spinrec.charset import Charset
    from spinrec.decoder import HeadDecoder
    from spinrec.runtime import open_encoder

    from perf.flops import conv_probe, model_macs
    from perf.timing import interleaved, summary

    onnx_path = repository / contract.ONNX
    checkpoint = repository / contract.CHECKPOINT
    charset = Charset.from_file(str(repository / contract.CHARSET))
    torch_fp32 = open_encoder("torch", checkpoint, threads)
    macs = model_macs(torch_fp32.model)  # type: ignore[attr-defined]
    flop_per_image = 2 * macs["encoder_mac"]
    reference = torch_fp32(images)
    decoder = HeadDecoder(checkpoint, charset, stop_at_eos=True)
    ref_texts = [r.text for r in decoder(reference)]
    del torch_fp32

    chosen = [c for c in candidates(include_compile) if only is None or c.name in only]
    record = {"threads": threads, "rounds": rounds, "encoder_flop_per_image": flop_per_image, "candidates": {}, "failed": {}}
    for batch in batches:
        x = images[:batch]
        fns, built = {}, {}
        for cand in chosen:
            try:
                t0 = time.perf_counter()
                enc = build(cand.name, onnx_path, checkpoint, threads, batch)
                enc(x)  # first call: lazy init / compilation
                built[cand.name] = (enc, time.perf_counter() - t0)
                fns[cand.name] = (lambda e=enc: e(x))
            except Exception as e:  # a runtime that cannot run our graph is a result, not a crash
                record["failed"][f"{cand.name}@{batch}"] = f"{type(e).__name__}: {e}"[:500]
        # The convolution that sets the limit runs in the same rounds, so it sees the same background load.
        probe, probe_flop, probe_shape = conv_probe(threads=threads)
        fns["_conv3x3"] = probe
        times = interleaved(fns, rounds, warmup=1, desc=f"encoders batch {batch}")
        gflops = probe_flop / float(np.median(times.pop("_conv3x3"))) / 1e9
        record["conv_shape"] = probe_shape
        limit = gflops * 1e9 / flop_per_image
        for cand in chosen:
            if cand.name not in built:
                continue
            enc, setup_s = built[cand.name]
            s = summary(times[cand.name], batch)
            entry = record["candidates"].setdefault(cand.name, {"runtime": cand.runtime, "precision": cand.precision, "how": cand.how, "batches": {}})
            s["setup_s"] = setup_s
            s["flop_limit_images_per_s"] = limit
            s["share_of_flop_limit"] = s["items_per_s"] / limit
            s["conv_gflops"] = gflops
            entry["batches"][str(batch)] = s
        for name, (enc, _) in built.items():
            if batch != max(batches):
                continue  # numerics once per candidate, at the largest batch (fewest calls)
            n = len(images) // batch * batch
            feats = np.concatenate([enc(images[i : i + batch]) for i in range(0, n, batch)])
            rel = float(np.linalg.norm(feats - reference[:n]) / np.linalg.norm(reference[:n]))
            texts = [r.text for r in decoder(feats)]
            same = sum(a == b for a, b in zip(texts, ref_texts[:n]))
            record["candidates"][name]["numerics"] = {
                "images": n, "relative_l2_error_vs_torch_fp32": rel, "texts_identical": same, "texts_total": n,
                "differing_examples": [(a, b) for a, b in zip(ref_texts[:n], texts) if a != b][:5],
            }
        del built, fns
    return record


def markdown(record: dict) -> str:
    batches = sorted({int(k) for c in record["candidates"].values() for k in c["batches"]})
    head = "| candidate | precision | " + " | ".join(f"b={b} img/s | b={b} p50 ms | b={b} % of FLOP limit" for b in batches)
    lines = [head + " | rel. error vs torch fp32 | texts identical to fp32 | setup s | how |",
             "|---|---|" + "---:|---:|---:|" * len(batches) + "---:|---:|---:|---|"]
    for name, c in record["candidates"].items():
        cells = []
        for b in batches:
            s = c["batches"].get(str(b), {})
            cells.append(f"{s.get('items_per_s', float('nan')):.2f} | {s.get('latency_ms_p50', float('nan')):.0f} | "
                         f"{100 * s.get('share_of_flop_limit', float('nan')):.0f} %")
        num = c.get("numerics", {})
        setup = max((s.get("setup_s", 0) for s in c["batches"].values()), default=float("nan"))
        lines.append(f"| {name} | {c['precision']} | " + " | ".join(cells) +
                     f" | {num.get('relative_l2_error_vs_torch_fp32', float('nan')):.1e} | {num.get('texts_identical', '?')}/{num.get('texts_total', '?')} | "
                     f"{setup:.1f} | {c['how']} |")
    lines.append("")
    for b in batches:
        lim = next((c["batches"][str(b)]["flop_limit_images_per_s"] for c in record["candidates"].values() if str(b) in c["batches"]), None)
        gf = next((c["batches"][str(b)]["conv_gflops"] for c in record["candidates"].values() if str(b) in c["batches"]), None)
        if lim:
            lines.append(f"- batch {b}: FLOP-count limit {lim:.2f} images/s = 3x3-conv rate {gf:.1f} GFLOP/s (median, timed "
                         f"interleaved with the candidates) / {record['encoder_flop_per_image'] / 1e9:.2f} GFLOP per image.")
    for k, v in record.get("failed", {}).items():
        lines.append(f"- {k} failed: `{v}`")
    lines.append("- 'texts identical' uses the served weights; an untrained build reads nearly the same text for every image, "
                 "so that column is weak evidence. `python -m perf.numerics` checks bf16 on an input-sensitive model (numerics.json).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from perf.data import render_samples
    from perf.machine import machine_record

    from spinrec.preprocess import preprocess_batch

    p = argparse.ArgumentParser(prog="python -m perf.runtimes", description=__doc__.split("\n\n")[0])
    p.add_argument("--model-repository", type=Path, default=Path(__file__).resolve().parents[1] / "model_repository")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "runtimes")
    p.add_argument("--images", type=int, default=64, help="rendered words for timing and the numerics check (default %(default)s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5, help="timed calls per candidate and batch size (default %(default)s)")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--compile", action="store_true", help="also try torch.compile (slow to compile on 2 cores)")
    p.add_argument("--only", help="comma-separated candidate names")
    args = p.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore")  # tracer warnings of the jit candidate: expected, about constant shapes
    batches = tuple(int(b) for b in args.batches.split(","))
    samples = render_samples(max(args.images, max(batches)))
    images, errors = preprocess_batch([s.data for s in samples])
    assert not any(errors), errors
    record = {"machine": machine_record()}
    record.update(compare(args.model_repository, images, batches, args.threads, args.rounds, args.compile,
                          args.only.split(",") if args.only else None))
    record["machine"]["load_average_after"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runtimes.json").write_text(json.dumps(record, indent=1))
    (args.out / "runtimes.md").write_text(markdown(record))
    print(markdown(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
