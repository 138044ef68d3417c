"""One command: perf_analyzer sweeps against a SPIN Triton server + in-process baselines, in one run.

    python -m perf.run --launch                      # start a server on free ports, measure, stop it
    python -m perf.run --grpc-url 127.0.0.1:8001 --http-url 127.0.0.1:8000   # a server already running

Writes ``perf/results/<UTC time>/``: ``summary.md`` (targets, baselines, sweep table, memory, configs),
``sweep.csv`` (one row per load level), ``run.json`` (everything), ``throughput_latency.png``, and
``raw/`` (perf_analyzer input data, CSVs and console logs; git-ignored).

Default sweep (about 10 minutes on a shared 2-core machine): ``spin_ocr`` over gRPC at concurrency 1, 2, 8, 32 and over
HTTP at 1, 4; open-loop Poisson request rates at 50 % and 90 % of the best gRPC throughput; each
composing model over gRPC at concurrency 1 and 4. ``--concurrency``, ``--http-concurrency``,
``--composing-concurrency``, ``--request-rates``, ``--request-count`` and ``--soak-seconds`` make it
bigger. Baselines (``--no-baselines`` skips them) run before the sweep, while the server idles.
"""

from __future__ import annotations

import os

# Set before numpy loads: OpenBLAS's second thread made the NumPy decoder 3-7x slower on the shared
# 2-core machine (68 vs 9 ms at batch 1, 436 vs 159 ms at batch 32, measured under load 7); the
# encoder runtimes have their own thread pools and are unaffected.
_SERVER_ENV = dict(os.environ)  # a launched server gets the caller's environment, not this override
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
import warnings  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

from tqdm import tqdm  # noqa: E402

from perf import analyzer, data, report  # noqa: E402
from perf.machine import machine_record, server_memory  # noqa: E402
from spinrec import contract  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COMPOSING = (contract.PREPROCESS, contract.ENCODER, contract.DECODER)
ENSEMBLE = contract.ENSEMBLE


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()] if s else []


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m perf.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--launch", action="store_true", help="start a server with spinrec.serving.launch for this run and stop it after")
    p.add_argument("--base-port", type=int, default=8300, help="with --launch: HTTP port; gRPC +1, metrics +2 (default %(default)s)")
    p.add_argument("--launch-repository", type=Path, help="with --launch: serve this repository (e.g. from perf.variants) instead of --model-repository")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE", help="with --launch: extra environment of the server (repeatable)")
    p.add_argument("--grpc-url", default="127.0.0.1:8001")
    p.add_argument("--http-url", default="127.0.0.1:8000")
    p.add_argument("--model-repository", type=Path, default=ROOT / "model_repository", help="artifacts for the baselines (same weights as the server)")
    p.add_argument("--out", type=Path, help="default: perf/results/<UTC time>")
    p.add_argument("--images", type=int, default=64, help="rendered request images (default %(default)s)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--concurrency", default="1,2,8,32", help="spin_ocr over gRPC (default %(default)s; 32 lets the encoder see batch 32, the in-process baseline's)")
    p.add_argument("--http-concurrency", default="1,4", help="spin_ocr over HTTP (default %(default)s)")
    p.add_argument("--composing-concurrency", default="1,4", help="each composing model over gRPC (default %(default)s; empty to skip)")
    p.add_argument("--request-rates", default="auto", help="spin_ocr over gRPC, req/s; 'auto' = 50%%,90%% of the best gRPC throughput; empty to skip")
    p.add_argument("--request-count", type=int, default=24, help="requests per perf_analyzer measurement window (default %(default)s)")
    p.add_argument("--max-trials", type=int, default=6)
    p.add_argument("--stability", type=int, default=50, help="perf_analyzer --stability-percentage (default %(default)s, shared machine)")
    p.add_argument("--level-timeout", type=float, default=240, help="seconds per perf_analyzer run (default %(default)s)")
    p.add_argument("--soak-seconds", type=float, default=0, help="after the sweep, hold the best gRPC concurrency this long sampling memory (issue: 600)")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--precisions", default="", help="also time these encoder precisions in process, interleaved (e.g. fp32,bf16,int8; "
                   "int8 needs a repository built without --no-int8): precisions.md in OUT (perf.precisions)")
    p.add_argument("--threads", type=int, default=2, help="thread budget of the in-process baselines (the server's encoder threads)")
    p.add_argument("--baseline-rounds", type=int, default=16, help="timed batch-1 calls per baseline; batch 32 gets a quarter")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------- server


def _ready(http_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def launch(base_port: int, log: Path, repository: Path, env: dict[str, str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "spinrec.serving.launch", "--no-build", "--log-level", "warning", "--model-repository", str(repository),
           "--http-port", str(base_port), "--grpc-port", str(base_port + 1), "--metrics-port", str(base_port + 2)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {log}")
        if _ready(f"127.0.0.1:{base_port}"):
            return proc
        time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    raise RuntimeError(f"server not ready after 600 s; see {log}")


def stop(processes) -> None:
    """SIGTERM every launched server first (they shut down in parallel), then wait; kill what hangs."""
    for proc in processes:
        proc.send_signal(signal.SIGTERM)
    for proc in processes:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def server_configs(http_url: str) -> dict:
    out = {}
    for name in (ENSEMBLE, *COMPOSING):
        try:
            with urllib.request.urlopen(f"http://{http_url}/v2/models/{name}/config", timeout=10) as r:
                out[name] = json.load(r)
        except OSError as e:
            out[name] = {"error": str(e)}
    return out


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# ---------------------------------------------------------------------------------------------- inputs


def make_inputs(samples: list[data.Sample], repository: Path, raw: Path, threads: int) -> dict[str, Path]:
    """Input-data files for the ensemble (and spin_preprocess: same ``IMAGE`` bytes), spin_encoder
    (the preprocessed images) and spin_decoder (features from the repository's encoder on them)."""
    from spinrec.preprocess import preprocess_batch

    from spinrec.runtime import open_encoder

    paths = {ENSEMBLE: data.write_input_data(raw / "input_image_bytes.json", data.input_data([s.data for s in samples]))}
    paths[contract.PREPROCESS] = paths[ENSEMBLE]
    images, errors = preprocess_batch([s.data for s in samples[:16]])
    if any(errors):
        raise RuntimeError(f"rendered images failed to preprocess: {errors}")
    paths[contract.ENCODER] = data.write_input_data(raw / "input_encoder.json", data.tensor_input_data(list(images), contract.ENCODER_INPUT))
    features = open_encoder("onnxruntime", repository / contract.ONNX, threads)(images)
    paths[contract.DECODER] = data.write_input_data(raw / "input_decoder.json", data.tensor_input_data(list(features), contract.ENCODER_OUTPUT))
    return paths


# ---------------------------------------------------------------------------------------------- sweep


def sweep(args, binary: str, inputs: dict[str, Path], raw: Path, memory_port: int) -> list[analyzer.Level]:
    plan: list[tuple[str, str, str, float]] = []
    plan += [(ENSEMBLE, "grpc", "concurrency", c) for c in _ints(args.concurrency)]
    plan += [(ENSEMBLE, "http", "concurrency", c) for c in _ints(args.http_concurrency)]
    for m in COMPOSING:
        plan += [(m, "grpc", "concurrency", c) for c in _ints(args.composing_concurrency)]
    levels: list[analyzer.Level] = []

    def run(model, proto, mode, value):
        url = args.grpc_url if proto == "grpc" else args.http_url
        lv = analyzer.run_level(binary, model, proto, url, args.http_url, inputs[model], mode, value, raw,
                                args.request_count, args.max_trials, args.stability, args.level_timeout, memory_port)
        levels.append(lv)
        return lv

    bar = tqdm(plan, desc="perf_analyzer")
    for model, proto, mode, value in bar:
        bar.set_postfix_str(f"{model} {proto} c={value:g}")
        lv = run(model, proto, mode, value)
        tqdm.write(f"{model:16s} {proto:4s} c={value:<4g} {lv.throughput or 0:7.2f} req/s p50 {lv.p50_ms or 0:8.1f} ms "
                   f"failed {lv.requests_failed} {'' if lv.stable else 'UNSTABLE '}{lv.error or ''}")
    rates: list[float] = []
    if args.request_rates == "auto":
        best = max((lv.throughput or 0) for lv in levels if lv.model == ENSEMBLE and lv.protocol == "grpc") if levels else 0
        rates = [round(best * f, 2) for f in (0.5, 0.9)] if best > 0 else []
    elif args.request_rates:
        rates = [float(x) for x in args.request_rates.split(",")]
    for r in tqdm(rates, desc="perf_analyzer request rate"):
        lv = run(ENSEMBLE, "grpc", "request_rate", r)
        tqdm.write(f"{ENSEMBLE:16s} grpc rate={r:<6g} {lv.throughput or 0:7.2f} req/s p50 {lv.p50_ms or 0:8.1f} ms failed {lv.requests_failed} {lv.error or ''}")
    return levels


def soak(args, binary: str, inputs: dict[str, Path], raw: Path, memory_port: int, concurrency: int) -> dict:
    """Saturating load for ``--soak-seconds`` (10 s windows, stability check off so it runs them all),
    sampling the server's memory every 10 s."""
    samples: list[dict] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            m = server_memory(memory_port)
            if m:
                samples.append({"t": time.time(), "rss": m["total_rss_mib"], "pss": m["total_pss_mib"]})
            stop.wait(10)

    windows = max(1, int(args.soak_seconds // 10))
    cmd = [binary, "-m", ENSEMBLE, "-u", args.grpc_url, "-i", "grpc", "--input-data", str(inputs[ENSEMBLE]),
           "--concurrency-range", f"{concurrency}:{concurrency}", "--measurement-interval", "10000",
           "--max-trials", str(windows), "--stability-percentage", "0"]
    before = analyzer.model_stats(args.http_url)
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=analyzer.analyzer_env(), timeout=args.soak_seconds * 2 + 300)
    stop.set()
    th.join()
    (raw / "soak.log").write_text(" ".join(cmd) + "\n\n" + r.stdout + r.stderr)
    delta = analyzer.stats_delta(before, analyzer.model_stats(args.http_url)).get(ENSEMBLE, {})
    rss = [s["rss"] for s in samples]
    return {
        "seconds": time.time() - t0, "concurrency": concurrency, "samples": samples,
        "rss_first": rss[0] if rss else None, "rss_last": rss[-1] if rss else None, "rss_max": max(rss) if rss else None,
        "requests_ok": delta.get("requests_ok"), "requests_failed": delta.get("requests_failed"),
    }


# --------------------------------------------------------------------------------------------- targets


def targets(run: dict) -> list[dict]:
    out = []
    b = run.get("baselines")
    levels = [lv for lv in run.get("levels", []) if lv.get("throughput") is not None]
    grpc = [lv for lv in levels if lv["model"] == ENSEMBLE and lv["protocol"] == "grpc" and lv["mode"] == "concurrency"]

    def status(ok):
        return "met" if ok else "**missed**"

    if b:
        share = b["share_of_flop_limit"]["encoder_only_b32"]
        out.append({"name": "encoder alone, batch 32, share of FLOP-count limit", "measured": f"{100 * share:.0f} %", "goal": ">= 90 %", "status": status(share >= 0.9)})
        if grpc:
            best = max(grpc, key=lambda lv: lv["throughput"])
            ratio = best["throughput"] / b["batch32"]["inprocess"]["items_per_s"]
            out.append({"name": f"spin_ocr gRPC saturated (c={best['value']:g}, perf_analyzer) / in-process batch 32 (baseline phase, minutes earlier)",
                        "measured": f"{best['throughput']:.2f} / {b['batch32']['inprocess']['items_per_s']:.2f} = {100 * ratio:.0f} %",
                        "goal": ">= 85 %", "status": status(ratio >= 0.85)})
        c1 = [lv for lv in grpc if lv["value"] == 1]
        if c1:
            over = c1[0]["p50_ms"] - b["batch1"]["inprocess"]["latency_ms_p50"]
            out.append({"name": "server overhead at c=1 (perf_analyzer p50 - baseline-phase in-process p50; unpaired, see the paired row)",
                        "measured": f"{c1[0]['p50_ms']:.1f} - {b['batch1']['inprocess']['latency_ms_p50']:.1f} = {over:.1f} ms",
                        "goal": "<= 3 ms", "status": status(over <= 3)})
        out.append({"name": "in-process pipeline batch 32 / PyTorch eager batch 32",
                    "measured": f"{b['batch32']['inprocess']['items_per_s'] / b['batch32']['eager']['items_per_s']:.2f}x", "goal": "(context)", "status": ""})
        if "paddle_inference" in b["batch32"]:
            out.append({"name": "in-process pipeline / Paddle Inference oneDNN (PaddleOCR proxy), batch 32 and batch 1",
                        "measured": "{:.2f}x, {:.2f}x".format(*report.inprocess_over_paddle(b)),
                        "goal": "(context)", "status": ""})
    pr = run.get("paired")
    if pr:
        o = pr["batch1"]
        out.append({"name": "server overhead at concurrency 1, paired (median of server - in-process per image, gRPC client)",
                    "measured": f"{o['overhead_ms_median_of_pairs']:.1f} ms (IQR {o['overhead_ms_p25_p75'][0]:.1f}..{o['overhead_ms_p25_p75'][1]:.1f}; "
                                f"p50 {o['server_p50_ms']:.1f} vs {o['inprocess_p50_ms']:.1f})",
                    "goal": "<= 3 ms", "status": status(o["overhead_ms_median_of_pairs"] <= 3)})
        t = pr["batch32"]
        out.append({"name": "32 images: 32 concurrent gRPC requests / one in-process batch of 32, paired",
                    "measured": f"{t['server_images_per_s']:.2f} / {t['inprocess_images_per_s']:.2f} = {100 * t['server_over_inprocess']:.0f} %",
                    "goal": ">= 85 %", "status": status(t["server_over_inprocess"] >= 0.85)})
    failed = sum(lv.get("requests_failed") or 0 for lv in run.get("levels", []))
    errors = [lv for lv in run.get("levels", []) if lv.get("error")]
    out.append({"name": "failed requests in the sweep (server statistics)", "measured": f"{failed} ({len(errors)} levels with errors)",
                "goal": "0", "status": status(failed == 0 and not errors)})
    soak_rec = (run.get("memory") or {}).get("soak")
    if soak_rec and soak_rec.get("rss_first"):
        growth = soak_rec["rss_last"] - soak_rec["rss_first"]
        out.append({"name": f"memory over a {soak_rec['seconds']:.0f} s soak (RSS last - first)", "measured": f"{growth:+.0f} MiB",
                    "goal": "stable", "status": status(abs(growth) < 0.05 * soak_rec["rss_first"])})
    return out


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    args = parse_args(argv)
    started = datetime.now(timezone.utc)
    out = args.out or ROOT / "perf" / "results" / started.strftime("%Y%m%dT%H%M%SZ")
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    binary = analyzer.find_perf_analyzer()
    analyzer.check_runs(binary)

    server = None
    if args.launch:
        args.http_url = f"127.0.0.1:{args.base_port}"
        args.grpc_url = f"127.0.0.1:{args.base_port + 1}"
        print(f"perf: starting a server on {args.http_url} (HTTP) / {args.grpc_url} (gRPC)", file=sys.stderr)
        env = dict(_SERVER_ENV, **dict(kv.split("=", 1) for kv in args.server_env))
        server = launch(args.base_port, raw / "server.log", args.launch_repository or args.model_repository, env)
    elif not _ready(args.http_url):
        print(f"perf: no ready server at {args.http_url}; start one (python -m spinrec.serving.launch) or pass --launch", file=sys.stderr)
        return 2
    memory_port = port_of(args.http_url)
    run: dict = {
        "started_utc": started.isoformat(timespec="seconds"),
        "command": "python -m perf.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_record(),
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
        "server_launch": {"repository": str(args.launch_repository or args.model_repository), "extra_env": args.server_env} if args.launch else "external",
        "perf_analyzer": binary,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    try:
        record = json.loads((args.model_repository / contract.RECORD).read_text())
        run["weights"] = record.get("identity")
    except (OSError, ValueError):
        run["weights"] = "unknown (no build.json)"
    try:
        run["server_config"] = server_configs(args.http_url)
        samples = data.render_samples(args.images, args.seed)
        run["data"] = data.describe(samples)
        inputs = make_inputs(samples, args.model_repository, raw, args.threads)
        run["memory"] = {"idle": server_memory(memory_port)}

        if not args.no_baselines:
            from perf.baselines import measure

            print("perf: baselines (in-process pipeline, PyTorch eager, FLOP limit, Paddle Inference)", file=sys.stderr)
            run["baselines"] = measure(args.model_repository, [s.data for s in samples], args.threads,
                                       args.baseline_rounds, max(2, args.baseline_rounds // 4))
        if not args.no_baselines:
            from perf import paired
            from perf.baselines import inprocess

            print("perf: paired server vs in-process (latency overhead, throughput ratio)", file=sys.stderr)
            run["paired"] = paired.measure(inprocess(args.model_repository, args.threads).texts, args.grpc_url,
                                           [s.data for s in samples], args.baseline_rounds + 8, max(2, args.baseline_rounds // 4))
        if args.precisions:
            from perf import precisions

            print(f"perf: encoder precisions {args.precisions} in process", file=sys.stderr)
            run["precisions"] = precisions.measure(args.model_repository, [s.data for s in samples], args.precisions.split(","),
                                                   args.threads, max(2, args.baseline_rounds // 2))
            precisions.write(run["precisions"], out)
        levels = sweep(args, binary, inputs, raw, memory_port)
        run["levels"] = [lv.__dict__ for lv in levels]
        run["memory"]["after_sweep"] = server_memory(memory_port)
        if args.soak_seconds > 0:
            grpc = [lv for lv in levels if lv.model == ENSEMBLE and lv.protocol == "grpc" and lv.mode == "concurrency" and lv.throughput]
            conc = int(max(grpc, key=lambda lv: lv.throughput).value) if grpc else 4
            run["memory"]["soak"] = soak(args, binary, inputs, raw, memory_port, conc)
        run["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        run["targets"] = targets(run)
    finally:
        stop([server] if server is not None else [])
    (out / "run.json").write_text(json.dumps(run, indent=1, default=str))
    report.write_csv(out / "sweep.csv", [analyzer.Level(**{k: v for k, v in lv.items()}).row() for lv in run.get("levels", [])])
    report.plot(out / "throughput_latency.png", run.get("levels", []), run.get("baselines"))
    (out / "summary.md").write_text(report.summary_markdown(run))
    print(f"perf: wrote {out}/summary.md, sweep.csv, run.json, throughput_latency.png", file=sys.stderr)
    for t in run.get("targets", []):
        print(f"  {t['name']}: {t['measured']} (goal {t['goal']}) {t['status']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
