"""Running perf_analyzer (the binary from ``tritonclient[all]==2.51.0``) and reading what it reports.

One perf_analyzer process per load level: each level gets its own time limit, its own server-statistics
delta (failed requests, mean batch size per model) and its own memory sample, and one unstable level
does not lose the others.

Per level we keep: the CSV row (client throughput, p50/p90/p95/p99 and the latency breakdown) and,
parsed from the console report, the server-side breakdown per composing model of an ensemble
("Composing models:" block: queue / compute input / compute infer / compute output per request).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


class AnalyzerError(RuntimeError):
    """perf_analyzer is missing or cannot start; the message says what to install."""


def find_perf_analyzer() -> str:
    """The binary next to this interpreter (the tritonclient wheel puts it in the venv's bin), else PATH."""
    local = Path(sys.executable).parent / "perf_analyzer"
    found = str(local) if local.is_file() else shutil.which("perf_analyzer")
    if not found:
        raise AnalyzerError("perf_analyzer not found: pip install 'tritonclient[all]==2.51.0' (its manylinux wheel ships the binary)")
    return found


def analyzer_env() -> dict[str, str]:
    """perf_analyzer links libcudart.so.12 even on CPU: point the loader at the PyPI CUDA runtime."""
    env = dict(os.environ)
    try:
        import nvidia.cuda_runtime as cr

        lib = Path(list(cr.__path__)[0]) / "lib"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib), env.get("LD_LIBRARY_PATH", "")) if p)
    except ImportError:
        pass
    return env


def check_runs(binary: str) -> None:
    r = subprocess.run([binary, "--version"], capture_output=True, text=True, env=analyzer_env(), timeout=60)
    text = r.stdout + r.stderr
    if "libb64" in text:
        raise AnalyzerError("perf_analyzer needs libb64.so.0d: apt-get install -y libb64-0d")
    if "libcudart" in text:
        raise AnalyzerError("perf_analyzer needs libcudart.so.12: pip install nvidia-cuda-runtime-cu12")
    if r.returncode != 0 and "error while loading shared libraries" in text:
        raise AnalyzerError(f"perf_analyzer cannot start: {text.strip()[:300]}")


# ------------------------------------------------------------------------------------ server statistics


def model_stats(http_url: str) -> dict[str, dict]:
    """``/v2/models/stats`` of every model: counts and cumulative nanoseconds."""
    with urllib.request.urlopen(f"http://{http_url}/v2/models/stats", timeout=30) as r:
        doc = json.load(r)
    out = {}
    for m in doc.get("model_stats", []):
        s = m["inference_stats"]
        out[m["name"]] = {
            "inference_count": int(m.get("inference_count", 0)),
            "execution_count": int(m.get("execution_count", 0)),
            "success": int(s["success"]["count"]),
            "fail": int(s["fail"]["count"]),
            **{f"{k}_ns": int(s[k]["ns"]) for k in ("queue", "compute_input", "compute_infer", "compute_output")},
        }
    return out


def stats_delta(before: dict[str, dict], after: dict[str, dict]) -> dict[str, dict]:
    """Per model, what happened between two snapshots: requests, failures, mean batch size, and mean
    queue / compute-infer time per request (ms)."""
    out = {}
    for name, a in after.items():
        b = before.get(name, {k: 0 for k in a})
        d = {k: a[k] - b.get(k, 0) for k in a}
        if d["success"] == 0 and d["fail"] == 0:
            continue
        n = max(d["success"], 1)
        out[name] = {
            "requests_ok": d["success"],
            "requests_failed": d["fail"],
            "mean_batch_size": d["inference_count"] / d["execution_count"] if d["execution_count"] else None,
            "queue_ms": d["queue_ns"] / n / 1e6,
            "compute_infer_ms": d["compute_infer_ns"] / n / 1e6,
        }
    return out


# --------------------------------------------------------------------------------------- report parsing


_NUM = r"([0-9.]+)"
_COMPOSING = re.compile(
    r"^\s*(?P<name>[\w.-]+), version: (?P<version>\S+)\s*\n"
    r"\s*Inference count: (?P<inferences>\d+)\s*\n"
    r"\s*Execution count: (?P<executions>\d+)\s*\n"
    r"\s*Successful request count: (?P<ok>\d+)\s*\n"
    r"\s*Avg request latency: (?P<latency>\d+) usec \(overhead (?P<overhead>\d+) usec \+ queue (?P<queue>\d+) usec"
    r" \+ compute input (?P<cin>\d+) usec \+ compute infer (?P<cinfer>\d+) usec \+ compute output (?P<cout>\d+) usec\)",
    re.M,
)
_LEVEL = re.compile(r"^(Request concurrency|Request Rate): " + _NUM, re.M)


def parse_composing(stdout: str) -> dict[float, dict[str, dict]]:
    """``{load level: {model: breakdown in ms}}`` from the console report of an ensemble run."""
    out: dict[float, dict[str, dict]] = {}
    marks = list(_LEVEL.finditer(stdout))
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(stdout)
        block = stdout[m.end() : end]
        if "Composing models:" not in block:
            continue
        block = block[block.index("Composing models:") :]
        models = {}
        for c in _COMPOSING.finditer(block):
            models[c["name"]] = {
                "inferences": int(c["inferences"]),
                "executions": int(c["executions"]),
                "mean_batch_size": int(c["inferences"]) / max(int(c["executions"]), 1),
                "latency_ms": int(c["latency"]) / 1e3,
                "queue_ms": int(c["queue"]) / 1e3,
                "compute_input_ms": int(c["cin"]) / 1e3,
                "compute_infer_ms": int(c["cinfer"]) / 1e3,
                "compute_output_ms": int(c["cout"]) / 1e3,
            }
        out[float(m.group(2))] = models
    return out


def parse_csv(text: str) -> list[dict]:
    """Rows of perf_analyzer's ``-f`` CSV (the first table only; later sections are metrics)."""
    rows = []
    for row in csv.DictReader(io.StringIO(text.split("\n\n")[0])):
        rows.append({k.strip(): v for k, v in row.items() if k})
    return rows


def _f(row: dict, key: str) -> float | None:
    try:
        return float(row[key])
    except (KeyError, TypeError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------ runs


@dataclass
class Level:
    """One load level of one model over one protocol, with everything measured about it."""

    model: str
    protocol: str
    mode: str  # "concurrency" or "request_rate"
    value: float
    ok: bool = False
    throughput: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    avg_ms: float | None = None
    client_send_recv_ms: float | None = None
    server_queue_ms: float | None = None
    server_compute_ms: float | None = None
    requests_failed: int | None = None
    stable: bool = True
    wall_s: float = 0.0
    composing: dict = field(default_factory=dict)
    server_stats: dict = field(default_factory=dict)
    memory: dict | None = None
    error: str | None = None
    command: str = ""

    def row(self) -> dict:
        """Flat CSV row (composing models as ``<model>_<field>`` columns)."""
        d = {k: v for k, v in self.__dict__.items() if k not in ("composing", "server_stats", "memory")}
        for name, c in self.composing.items():
            for k in ("mean_batch_size", "queue_ms", "compute_infer_ms", "latency_ms"):
                d[f"{name}_{k}"] = c[k]
        if self.memory:
            d["server_rss_mib"] = self.memory["total_rss_mib"]
            d["server_pss_mib"] = self.memory["total_pss_mib"]
        return d


def run_level(
    binary: str,
    model: str,
    protocol: str,
    url: str,
    http_url: str,
    input_data: Path,
    mode: str,
    value: float,
    workdir: Path,
    request_count: int = 24,
    max_trials: int = 6,
    stability: int = 50,
    timeout_s: float = 240,
    memory_port: int | None = None,
) -> Level:
    """One perf_analyzer run at one concurrency or request rate.

    count_windows: each window is ``request_count`` requests, so a slow CPU server still gets whole
    windows (time windows of 5 s would hold a handful of requests at concurrency 1). ``stability`` is
    perf_analyzer's +-% band over 3 windows; 50 % because neighbours on a shared 2-core machine move the
    rate more than the 10 % default allows, and an unstable level would otherwise report nothing.
    """
    from perf.machine import server_memory

    level = Level(model, protocol, mode, value)
    tag = f"{model}_{protocol}_{mode}_{value:g}"
    csv_path = workdir / f"{tag}.csv"
    cmd = [
        binary, "-m", model, "-u", url, "-i", protocol, "--input-data", str(input_data),
        "--measurement-mode", "count_windows", "--measurement-request-count", str(request_count),
        "--max-trials", str(max_trials), "--stability-percentage", str(stability),
        "-f", str(csv_path), "--verbose-csv",
    ]
    if mode == "concurrency":
        # A window shorter than two rounds of the outstanding requests ends inside a burst of batch
        # completions (32 requests finish together when the encoder batches them), so no three windows
        # agree and the level reports nothing: the window grows with the concurrency.
        count = cmd.index("--measurement-request-count") + 1
        cmd[count] = str(max(request_count, 2 * int(value)))
        cmd += ["--concurrency-range", f"{int(value)}:{int(value)}"]
    else:
        # Poisson windows of a few dozen requests differ by more than any useful band (the first
        # recorded run failed at +-50 %): open-loop levels average their windows unchecked.
        cmd[cmd.index("--stability-percentage") + 1] = "999"
        # Open loop: Poisson arrivals, as independent clients produce them. Async, enough in-flight slots.
        cmd += ["--request-rate-range", f"{value}:{value}", "--request-distribution", "poisson", "--max-threads", "16"]
    level.command = " ".join(cmd)
    before = model_stats(http_url)
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=analyzer_env())
        out, code = r.stdout + r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        code, level.error = -1, f"timed out after {timeout_s:.0f} s"
    level.wall_s = time.perf_counter() - t0
    if memory_port is not None:
        level.memory = server_memory(memory_port)
    level.server_stats = stats_delta(before, model_stats(http_url))
    (workdir / f"{tag}.log").write_text(level.command + "\n\n" + out)
    level.stable = "Failed to obtain stable measurement" not in out
    level.requests_failed = sum(s["requests_failed"] for s in level.server_stats.values())
    rows = parse_csv(csv_path.read_text()) if csv_path.is_file() else []
    if rows:
        row = rows[-1]
        level.throughput = _f(row, "Inferences/Second")
        for p in ("p50", "p90", "p95", "p99"):
            v = _f(row, f"{p} latency")
            setattr(level, f"{p}_ms", v / 1e3 if v is not None else None)
        avg = _f(row, "Avg latency")
        level.avg_ms = avg / 1e3 if avg is not None else None
        send = (_f(row, "Client Send") or 0) + (_f(row, "Client Recv") or 0)
        level.client_send_recv_ms = send / 1e3
        q = _f(row, "Server Queue")
        level.server_queue_ms = q / 1e3 if q is not None else None
        level.server_compute_ms = sum((_f(row, k) or 0) for k in ("Server Compute Input", "Server Compute Infer", "Server Compute Output")) / 1e3
        level.ok = code == 0 and level.requests_failed == 0
    elif level.error is None:
        tail = [ln for ln in out.strip().splitlines() if ln.strip()][-3:]
        level.error = f"exit {code}: " + " | ".join(tail)
    if level.ok is False and level.error is None and code != 0:
        level.error = f"exit {code}"
    composing = parse_composing(out)
    if composing:
        level.composing = composing[max(composing)] if value not in composing else composing[value]
    return level
