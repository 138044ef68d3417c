"""The markdown report of scripts/gpu_check.sh: the engines' build and verification records, the TensorRT tests'
outcome and the perf_analyzer summary, in one file.

    python -m builders.gpu_report --engine fp32=M/spin_encoder/1/model.plan --engine fp16=... \\
        [--detector fp16=M/spin_detector/1/model.plan] [--detector "fp16 served=served_detector.json"]... \\
        [--tests-log LOG] [--perf-summary perf/summary.md] [--note TEXT]... --out report.md

A ``--detector`` is a text detector plan (its record's ``verify``, by builders.verify_detector) or a report file
``builders.verify_detector --url ... --out`` wrote for the served one.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from builders.build_engine import read_metadata


def _engine_rows(engines: Mapping[str, dict[str, Any]]) -> list[str]:
    rows = [
        "| engine | graph | network | plan MiB | max abs feature error | tolerance | identical texts | passed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, meta in engines.items():
        verify = meta.get("verify", {})
        graph = "plugin (SpinBlend)" if meta.get("plugin") else "decomposed"
        rows.append(
            f"| {name} | {graph} | {meta.get('network', '?')} | {meta.get('plan_bytes', 0) / 2**20:.1f} | "
            f"{verify.get('max_abs_error', float('nan')):.2e} | {verify.get('tolerance', '?')} | "
            f"{verify.get('texts_identical', '?')} | {'yes' if verify.get('passed') else '**NO**'} |"
        )
    return rows


def _set_rows(engines: Mapping[str, dict[str, Any]]) -> list[str]:
    rows = ["| engine | input set | images | max abs feature error | identical texts |", "|---|---|---|---|---|"]
    differences = []
    for name, meta in engines.items():
        for set_name, entry in meta.get("verify", {}).get("sets", {}).items():
            rows.append(f"| {name} | {set_name} | {entry['images']} | {entry['max_abs_error']:.2e} | {entry.get('texts_identical', '-')} |")
            for crop, (engine_text, ort_text) in entry.get("text_differences", {}).items():
                differences.append(f"- {name}, {set_name}/{crop}: engine `{engine_text}`, ONNX Runtime `{ort_text}`")
    return rows + ([""] + ["Texts that differ:", ""] + differences if differences else [])


def _detector_rows(detectors: Mapping[str, dict[str, Any]]) -> list[str]:
    rows = [
        "| detector | plan MiB | inputs | max abs probability error | tolerance | photographs with as many words | passed |",
        "|---|---|---|---|---|---|---|",
    ]
    differences = []
    for name, meta in detectors.items():
        verify = meta.get("verify", {})
        size = f"{meta['plan_bytes'] / 2**20:.1f}" if "plan_bytes" in meta else "-"
        rows.append(
            f"| {name} | {size} | {len(verify.get('inputs', {}))} | {verify.get('max_abs_error', float('nan')):.2e} | "
            f"{verify.get('tolerance', '?')} | {verify.get('photographs_same_words', '?')} | {'yes' if verify.get('passed') else '**NO**'} |"
        )
        for input_name, entry in verify.get("inputs", {}).items():
            words = entry.get("words")
            if words and words[0] != words[1]:
                differences.append(f"- {name}, {input_name}: engine {words[0]} words, ONNX Runtime {words[1]} (error {entry['max_abs_error']:.2e})")
    return rows + ([""] + ["Photographs where the word counts differ:", ""] + differences if differences else [])


def render(
    engines: Mapping[str, dict[str, Any]],
    tests_log: str | None,
    perf_summary: str | None,
    notes: Sequence[str],
    detectors: Mapping[str, dict[str, Any]] | None = None,
) -> str:
    first = next(iter([*engines.values(), *(detectors or {}).values()]), {}).get("build", {})
    out = [
        "# GPU check: TensorRT engines of the shipped default",
        "",
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; GPU {first.get('gpu', '?')} "
        f"(compute capability {first.get('compute_capability', '?')}), TensorRT {first.get('tensorrt_version', '?')}.",
        *(f"{note}" for note in notes),
        "",
        "## Engines against ONNX Runtime (same graph, CPU)",
        "",
        "Feature error: largest absolute difference of the encoder's `features` over every input set; texts: the",
        "checkpoint's attention head decoding both outputs, on the word-crop sets (random-image sets compare features only).",
        "",
        *_engine_rows(engines),
        "",
        *_set_rows(engines),
        "",
    ]
    if detectors:
        out += [
            "## Text detector (spin_detector) against ONNX Runtime (same graph, CPU)",
            "",
            "Probability-map error: largest absolute difference over the synthetic page, the photographs and (plans) random",
            "inputs at the profile's min/opt/max; words: DB post-processing (spinrec.page.detect.boxes) of both maps.",
            "",
            *_detector_rows(detectors),
            "",
        ]
    if tests_log is not None:
        tail = [line for line in tests_log.strip().splitlines() if line.strip()][-12:]
        out += ["## TensorRT tests (pytest -m tensorrt, in the image)", "", "```", *tail, "```", ""]
    if perf_summary is not None:
        # perf.run's summary, one heading level down.
        out += ["## Serving the TensorRT configuration (perf_analyzer)", ""]
        out += [("#" + line) if line.startswith("#") else line for line in perf_summary.splitlines()]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m builders.gpu_report", description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", action="append", default=[], metavar="NAME=PLAN", help="a plan whose .json record to report (repeatable)")
    p.add_argument("--detector", action="append", default=[], metavar="NAME=PLAN|REPORT", help="a detector plan, or a served verification report (repeatable)")
    p.add_argument("--tests-log", type=Path, default=None)
    p.add_argument("--perf-summary", type=Path, default=None)
    p.add_argument("--note", action="append", default=[])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    read = lambda path: path.read_text() if path is not None and path.is_file() else None  # noqa: E731
    engines: dict[str, dict[str, Any]] = {}
    detectors: dict[str, dict[str, Any]] = {}
    for specs, records in ((args.engine, engines), (args.detector, detectors)):
        for spec in specs:
            name, _, path = spec.partition("=")
            served_report = read(Path(path)) if not path.endswith(".plan") else None
            meta = {"verify": json.loads(served_report)} if served_report else read_metadata(Path(path))
            if not meta:
                print(f"gpu_report: error: {path} has no build record", file=sys.stderr)
                return 2
            records[name] = meta
    args.out.write_text(render(engines, read(args.tests_log), read(args.perf_summary), args.note, detectors))
    print(f"gpu_report: wrote {args.out}")
    return 0 if all(m.get("verify", {}).get("passed") for m in [*engines.values(), *detectors.values()]) else 1


if __name__ == "__main__":
    sys.exit(main())
