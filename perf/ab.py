"""A/B of two server configurations, interleaved: both servers up at once, perf_analyzer alternates.

    python -m perf.variants /tmp/ov --encoder openvino
    python -m perf.ab --b-repository /tmp/ov --concurrency 1,32 --repeats 2 --out perf/results/ab_openvino

Server A serves ``--a-repository`` (default: the built ``model_repository``), server B the variant. Each
load level runs on A, then B, then A... (``--repeats`` times each), so the machine's background load
hits both alike; an idle server costs nothing meanwhile. Reports the median throughput and p50 per level
and the B/A ratios.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from perf import analyzer, data
from perf.machine import machine_record, server_memory
from perf.run import ROOT, _SERVER_ENV, launch, stop


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m perf.ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--a-repository", type=Path, default=ROOT / "model_repository")
    p.add_argument("--b-repository", type=Path, required=True)
    p.add_argument("--a-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--b-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--concurrency", default="1,32")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--request-count", type=int, default=24)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    raw = a.out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    binary = analyzer.find_perf_analyzer()
    analyzer.check_runs(binary)
    samples = data.render_samples(a.images)
    inputs = data.write_input_data(raw / "input_image_bytes.json", data.input_data([s.data for s in samples]))
    servers = {}
    try:
        for name, repo, env, port in (("A", a.a_repository, a.a_env, 8400), ("B", a.b_repository, a.b_env, 8410)):
            e = dict(_SERVER_ENV, **dict(kv.split("=", 1) for kv in env))
            servers[name] = (launch(port, raw / f"server_{name}.log", repo, e), port)
        record = {"machine": machine_record(), "A": {"repository": str(a.a_repository), "env": a.a_env},
                  "B": {"repository": str(a.b_repository), "env": a.b_env}, "levels": []}
        record["memory_idle"] = {n: server_memory(port) for n, (_, port) in servers.items()}
        for c in [int(x) for x in a.concurrency.split(",")]:
            runs: dict[str, list] = {"A": [], "B": []}
            for _ in range(a.repeats):
                for name, (_, port) in servers.items():
                    logs = raw / name  # one folder per server: the two runs of a level must not overwrite each other's logs
                    logs.mkdir(exist_ok=True)
                    lv = analyzer.run_level(binary, "spin_ocr", "grpc", f"127.0.0.1:{port + 1}", f"127.0.0.1:{port}", inputs,
                                            "concurrency", c, logs, a.request_count, 6, 50, 300, port)
                    runs[name].append(lv)
                    print(f"{name} c={c} {lv.throughput or 0:.2f} req/s p50 {lv.p50_ms or 0:.1f} ms failed {lv.requests_failed} {lv.error or ''}", flush=True)
            row = {"concurrency": c}
            for name, lvs in runs.items():
                good = [lv for lv in lvs if lv.throughput is not None]  # an unstable run reports nothing: left out, counted
                row[name] = {
                    "runs": [{"throughput": lv.throughput, "p50_ms": lv.p50_ms, "error": lv.error} for lv in lvs],
                    "runs_without_result": len(lvs) - len(good),
                    "throughput_median": float(np.median([lv.throughput for lv in good])) if good else float("nan"),
                    "p50_ms_median": float(np.median([lv.p50_ms for lv in good])) if good else float("nan"),
                    "failed": sum(lv.requests_failed or 0 for lv in lvs),
                    "composing": lvs[-1].composing,
                    "rss_mib": (lvs[-1].memory or {}).get("total_rss_mib"),
                }
            row["throughput_B_over_A"] = row["B"]["throughput_median"] / row["A"]["throughput_median"] if row["A"]["throughput_median"] else None
            row["p50_B_over_A"] = row["B"]["p50_ms_median"] / row["A"]["p50_ms_median"]
            record["levels"].append(row)
    finally:
        stop([proc for proc, _ in servers.values()])
    (a.out / "ab.json").write_text(json.dumps(record, indent=1, default=str))
    lines = [f"A = {a.a_repository} {a.a_env}; B = {a.b_repository} {a.b_env}; {a.repeats} interleaved runs per level, medians.", "",
             "| concurrency | A req/s | B req/s | B/A throughput | A p50 ms | B p50 ms | B/A p50 | failed A/B | runs without result A/B | RSS MiB A/B |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in record["levels"]:
        lines.append(f"| {r['concurrency']} | {r['A']['throughput_median']:.2f} | {r['B']['throughput_median']:.2f} | {r['throughput_B_over_A']:.2f} | "
                     f"{r['A']['p50_ms_median']:.0f} | {r['B']['p50_ms_median']:.0f} | {r['p50_B_over_A']:.2f} | {r['A']['failed']}/{r['B']['failed']} | {r['A']['runs_without_result']}/{r['B']['runs_without_result']} | "
                     f"{r['A']['rss_mib']:.0f}/{r['B']['rss_mib']:.0f} |")
    (a.out / "ab.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
