"""Whole-photograph serving speed: perf_analyzer on ``spin_page`` at several concurrencies, and where a page's time goes.

    python -m perf.pages --url 127.0.0.1:8001 --http-url 127.0.0.1:8000 [--pages ../shared/real_pages_dev] \\
        [--concurrency 1,4,16] [--out perf/results/pages]

Against a running server (``spinrec serve``, CPU configuration). The requests cycle over the photographs of
``--pages/images`` (read at run time, never copied). Per level: pages per second, p50/p95 latency, and from the
server's statistics the time per page in each model: ``spin_detector`` (the DB network), ``spin_preprocess`` +
``spin_encoder`` + ``spin_decoder`` (recognition: all of a page's words in one ``spin_ocr`` request), and the
rest of ``spin_page``'s own time (decoding the photograph, DB post-processing, the perspective crops, the BLS calls
and, under load, the wait of its calls in the detector's queue, which Triton counts in the caller's compute). An
in-process run of the same pipeline (:class:`spinrec.page.read.PageReader`) splits the post-processing from the
network and the crops from the calls.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from perf import analyzer, data
from spinrec import contract

#: spin_page's own share: what it computes itself, and what its calls wait for under load.
REST = "spin_page itself"
#: The models a page passes through, with the stage each stands for.
STAGES = {
    contract.DETECTOR: "detection network",
    contract.PREPROCESS: "recognition",
    contract.ENCODER: "recognition",
    contract.DECODER: "recognition",
}


def split_per_page(stats: dict[str, dict], pages: int) -> dict[str, float]:
    """Server statistics of one level -> milliseconds per page in each stage; ``spin_page`` itself minus what it
    waited for is :data:`REST`."""
    total = {name: s["compute_infer_ms"] * s["requests_ok"] for name, s in stats.items()}
    out: dict[str, float] = {}
    for name, stage in STAGES.items():
        out[stage] = out.get(stage, 0.0) + total.get(name, 0.0) / pages
    out[REST] = total.get(contract.PAGE, 0.0) / pages - sum(out.values())
    return out


def in_process_split(images: list[bytes], repository: Path) -> dict[str, float]:
    """Median milliseconds per page in each of :class:`~spinrec.page.read.Page`'s stages, on this process's
    OpenVINO (2 threads, the served precisions: detector fp32, encoder as the build served it)."""
    from spinrec.export.repository import read_record
    from spinrec.page.read import PageReader, pipeline_recognizer
    from spinrec.pipeline import Pipeline
    from spinrec.runtime import open_encoder

    precision = ((read_record(repository) or {}).get("precision") or {}).get("served", "fp32")
    reader = PageReader(
        open_encoder("openvino", repository / contract.DETECTOR_ONNX, 2, "fp32"),
        pipeline_recognizer(Pipeline.from_repository(repository, "openvino", threads=2, precision=precision)),
    )
    reader(images[0])  # compile and warm up
    seconds = [reader(image).seconds for image in images * 3]
    return {stage: 1e3 * float(np.median([s[stage] for s in seconds])) for stage in seconds[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.pages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="127.0.0.1:8001", help="gRPC endpoint perf_analyzer loads (default: %(default)s)")
    parser.add_argument("--http-url", default="127.0.0.1:8000", help="HTTP endpoint for the server's statistics (default: %(default)s)")
    parser.add_argument("--pages", type=Path, default=Path("../shared/real_pages_dev"))
    parser.add_argument("--repository", type=Path, help="the served model repository, for the in-process split (default: none)")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--out", type=Path, default=Path("perf/results/pages"))
    args = parser.parse_args(argv)
    images = [p.read_bytes() for p in sorted((args.pages / "images").glob("*.jpg"))]
    if not images:
        print(f"perf.pages: no photographs under {args.pages}/images", file=sys.stderr)
        return 1
    binary = analyzer.find_perf_analyzer()
    analyzer.check_runs(binary)
    raw = args.out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    # The request file holds the photographs themselves: a temporary file, never a result (they are validation data).
    scratch = tempfile.TemporaryDirectory(prefix="perf_pages_")
    inputs = data.write_input_data(Path(scratch.name) / "pages.json", data.input_data(images))
    levels = []
    for concurrency in [int(c) for c in args.concurrency.split(",")]:
        level = analyzer.run_level(
            binary, contract.PAGE, "grpc", args.url, args.http_url, inputs, "concurrency", concurrency, raw,
            request_count=max(20, 2 * concurrency), timeout_s=600,
        )  # fmt: skip
        pages = level.server_stats.get(contract.PAGE, {}).get("requests_ok", 0)
        split = split_per_page(level.server_stats, pages) if pages else {}
        levels.append({"concurrency": concurrency, **{k: getattr(level, k) for k in ("ok", "throughput", "p50_ms", "p95_ms", "requests_failed", "error")},
                       "pages_measured": pages, "ms_per_page": split})  # fmt: skip
        print(f"perf.pages: concurrency {concurrency}: {level.throughput} pages/s, p50 {level.p50_ms} ms; per page {json.dumps({k: round(v, 1) for k, v in split.items()})}", file=sys.stderr)
    scratch.cleanup()
    record = {
        "photographs": len(images),
        "source": str(args.pages),
        "levels": levels,
        "in_process_ms_per_page": in_process_split(images, args.repository) if args.repository else None,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # Absolute times on a shared machine mean little without what else ran: the 1-minute load average.
        "load_average_at_end": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }
    (args.out / "summary.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"# spin_page on CPU: {len(images)} photographs (1280x720, ICDAR 2015), perf_analyzer over gRPC",
        "",
        "| concurrency | pages/s | p50 ms | p95 ms | detection network ms/page | recognition ms/page | spin_page itself ms/page (decode, post-process, crop, calls; under load also waits for the detector) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lv in levels:
        s = lv["ms_per_page"]
        lines.append(
            f"| {lv['concurrency']} | {lv['throughput'] or 0:.2f} | {lv['p50_ms'] or 0:.0f} | {lv['p95_ms'] or 0:.0f} | "
            f"{s.get('detection network', 0):.0f} | {s.get('recognition', 0):.0f} | {s.get(REST, 0):.0f} |"
        )
    lines += ["", f"{record['cpus']} CPUs, 1-minute load average {record['load_average_at_end']:.1f} at the end of the run."]
    if record["in_process_ms_per_page"]:
        lines += ["", "In process, the same pipeline (median ms per page): " + ", ".join(f"{k} {v:.1f}" for k, v in record["in_process_ms_per_page"].items())]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
