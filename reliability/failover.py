"""Replica failover on one machine: N CPU Triton replicas behind HAProxy, scraped by Prometheus.

    python -m reliability.failover --out reliability/results/failover          # ~3 minutes on 2 cores

Starts ``--replicas`` servers with ``spinrec.serving.launch`` on free loopback ports, HAProxy
(``deploy/local/haproxy.cfg``: health checks on ``/v2/health/ready``) and Prometheus
(``deploy/local/prometheus.yml``: every replica with the ``namespace``/``pod`` labels a PodMonitor gives).
Then, once with the client's retry policy and once without it: steady load through the balancer (the
``client`` library, one image per request, ``--concurrency`` in flight), SIGKILL of one replica's whole
process group ``--kill-at`` seconds in, restart ``--restart-after`` seconds later, load until the replica has
been ready for ``--settle`` seconds. Every answer is compared with the reading taken before the load.

Writes ``failover.json`` (per phase: requests, failures and their errors, throughput before/after, when
throughput came back, Prometheus's ``up`` of the killed replica, the HPA metric evaluated by Prometheus with
the prometheus-adapter rule of ``deploy/kubernetes/monitoring``), ``summary.md`` and ``failover.png``.
Needs ``haproxy`` and ``prometheus`` on PATH (Debian packages; ``scripts/setup.sh --dev`` installs them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from string import Template

import yaml

from spinrec.preprocess import MAX_REQUEST_BYTES
from spinrec.serving import front
from spinrec.serving.launch import free_port
from spinrec_client import OcrClient
from spinrec_client.resilience import NO_RETRY, RetryPolicy
from perf.run import _ready, stop

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / "deploy" / "local"
ADAPTER_VALUES = ROOT / "deploy" / "kubernetes" / "monitoring" / "prometheus-adapter-values.yaml"
DASHBOARD = ROOT / "deploy" / "kubernetes" / "monitoring" / "grafana-dashboard.json"
NAMESPACE = "local"
# For comparison only: the queue-time metric of Triton's deploy/k8s-onprem chart (every model, +1 request).
TRITON_EXAMPLE_QUERY = (f'avg by (pod) (delta(nv_inference_queue_duration_us{{namespace="{NAMESPACE}",pod!=""}}[30s])'
                        f' / (1 + delta(nv_inference_request_success{{namespace="{NAMESPACE}",pod!=""}}[30s])))')
READY_TIMEOUT_S = 300
# The retry phase uses the library's default policy.
CLIENT_RETRY = RetryPolicy()


@dataclass
class Replica:
    """One tritonserver (through the launcher) in its own process group, so a kill takes the stubs too."""

    name: str
    repository: Path
    log: Path
    http: int = field(default_factory=free_port)
    grpc: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "spinrec.serving.launch", "--no-build", "--log-level", "warning",
               "--model-repository", str(self.repository), "--http-port", str(self.http),
               "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics), "--", "--exit-timeout-secs=5", "--metrics-config=summary_latencies=true"]
        with open(self.log, "a") as out:
            self.process = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def ready(self) -> bool:
        return _ready(f"127.0.0.1:{self.http}")

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Seconds until ready; raises if the server exits or the time runs out."""
        start = time.monotonic()
        while not self.ready():
            if self.process.poll() is not None:
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; {self.log} ends:\n{tail}")
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"{self.name} not ready after {timeout} s; see {self.log}")
            time.sleep(0.25)
        return time.monotonic() - start

    def kill(self) -> None:
        """SIGKILL to every process of the replica at once, as when its container is killed."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop([self.process])
        if self.process is not None:
            try:  # stubs the server left behind, if any
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _render(template: Path, dest: Path, **fields: str) -> Path:
    dest.write_text(Template(template.read_text()).substitute(fields))
    return dest


@contextmanager
def _daemon(cmd: list[str], log: Path):
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Prometheus:
    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}"

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus {path} {params}: {body}")
        return body["data"]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def instant(self, query: str) -> dict[str, float]:
        """``pod -> value`` of an instant query."""
        return {s["metric"].get("pod", ""): float(s["value"][1]) for s in self.api("query", query=query)["result"]}

    def series(self, query: str, start: float, end: float, step: float = 1.0) -> list[tuple[float, float]]:
        result = self.api("query_range", query=query, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step}")["result"]
        return [(float(t), float(v)) for t, v in result[0]["values"]] if result else []


def adapter_query(label_matchers: str, group_by: str = "pod") -> str:
    """The HPA metric's PromQL exactly as prometheus-adapter expands its rule."""
    rule = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"][0]
    series = rule["seriesQuery"].split("{", 1)[0].strip("'\"")
    return (rule["metricsQuery"].replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", label_matchers).replace("<<.GroupBy>>", group_by))


def dashboard_results(prometheus: Prometheus) -> dict[str, int]:
    """``panel title/legend -> number of series`` each query of the Grafana dashboard returns here."""
    board = json.loads(DASHBOARD.read_text())
    out = {}
    for panel in board["panels"]:
        for target in panel["targets"]:
            query = target["expr"].replace("$namespace", NAMESPACE).replace("$pod", "replica-.*")
            out[f"{panel['title']}: {target['legendFormat']}"] = len(prometheus.api("query", query=query)["result"])
    return out


@dataclass
class Cluster:
    replicas: list[Replica]
    http_url: str
    grpc_url: str
    prometheus: Prometheus


@contextmanager
def cluster(repository: Path, workdir: Path, replicas: int = 3):
    """Replicas, HAProxy and Prometheus, all on loopback; everything is stopped on exit."""
    for tool in ("haproxy", "prometheus"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (Debian package {tool}; scripts/setup.sh --dev installs it)")
    with ExitStack() as stack:
        members = [Replica(f"replica-{i}", repository, workdir / f"replica-{i}.log") for i in range(replicas)]
        for r in members:
            stack.callback(r.stop)
            r.start()
        for r in members:
            r.wait_ready()
        lb_http, lb_grpc, prom_port = free_port(), free_port(), free_port()
        servers = lambda kind: "\n".join(  # noqa: E731
            f"    server {r.name} 127.0.0.1:{getattr(r, kind)} check port {r.http}" + (" proto h2 check-proto h1" if kind == "grpc" else "")
            for r in members
        )
        limits = {f"limit_{k}": v for k, v in front.size_limit().items()}
        config = _render(LOCAL / "haproxy.cfg", workdir / "haproxy.cfg", http_port=str(lb_http), grpc_port=str(lb_grpc),
                         http_servers=servers("http"), grpc_servers=servers("grpc"), **limits)
        check = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejects {config}: {check.stdout}{check.stderr}")
        stack.enter_context(_daemon(["haproxy", "-db", "-f", str(config)], workdir / "haproxy.log"))
        targets = "\n".join(
            f"      - targets: ['127.0.0.1:{r.metrics}']\n        labels: {{namespace: {NAMESPACE}, pod: {r.name}}}" for r in members
        )
        prom_config = _render(LOCAL / "prometheus.yml", workdir / "prometheus.yml", targets=targets)
        stack.enter_context(_daemon(
            ["prometheus", f"--config.file={prom_config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--storage.tsdb.retention.time=1h"],
            workdir / "prometheus.log",
        ))
        prometheus = Prometheus(prom_port)
        deadline = time.monotonic() + 60
        while not (prometheus.ready() and _ready(f"127.0.0.1:{lb_http}")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Prometheus or HAProxy did not come up; see {workdir}")
            time.sleep(0.25)
        yield Cluster(members, f"127.0.0.1:{lb_http}", f"127.0.0.1:{lb_grpc}", prometheus)


@dataclass
class Sample:
    start: float  # seconds since the phase began
    end: float
    ok: bool
    error: str | None = None


async def _load(url: str, image: bytes, expected: str, policy: RetryPolicy, concurrency: int, stop_event: threading.Event, t0: float) -> list[Sample]:
    samples: list[Sample] = []

    async def worker(i: int) -> None:
        async with OcrClient(url, "http", batch_size=1, concurrency=1, timeout=30.0, retry=policy) as client:
            while not stop_event.is_set():
                start = time.monotonic() - t0
                [result] = await client.recognize_async([(f"w{i}", image)])
                ok = result.ok and result.text == expected
                error = result.error if not result.ok else (None if ok else f"read {result.text!r}, expected {expected!r}")
                samples.append(Sample(start, time.monotonic() - t0, ok, error))

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return samples


def run_phase(c: Cluster, victim: Replica, image: bytes, expected: str, policy: RetryPolicy, concurrency: int,
              kill_at: float, restart_after: float, settle: float, max_seconds: float) -> dict:
    """Load through the balancer while ``victim`` is killed and restarted; the record of what happened."""
    stop_event = threading.Event()
    events: dict[str, float] = {}
    t0 = time.monotonic()
    wall0 = time.time()
    hpa: dict[str, float] = {}
    dashboard: dict[str, int] = {}
    example: dict[str, float] = {}

    def chaos() -> None:
        try:
            time.sleep(kill_at)
            events["killed"] = time.monotonic() - t0
            victim.kill()
            time.sleep(restart_after)
            victim.start()
            events["restarted"] = time.monotonic() - t0
            victim.wait_ready()
            events["ready"] = time.monotonic() - t0
            time.sleep(max(0.0, settle - 5))
            # While the load still runs: the HPA metric as prometheus-adapter would compute it.
            hpa.update(c.prometheus.instant(adapter_query(f'namespace="{NAMESPACE}",pod=~"replica-.*"')))
            dashboard.update(dashboard_results(c.prometheus))
            example.update(c.prometheus.instant(TRITON_EXAMPLE_QUERY))
            time.sleep(min(5.0, settle))
        except Exception as e:  # reported, and the load stops
            events["error"] = time.monotonic() - t0
            events["error_message"] = f"{type(e).__name__}: {e}"  # type: ignore[assignment]
        finally:
            stop_event.set()

    thread = threading.Thread(target=chaos, daemon=True)
    thread.start()
    timer = threading.Timer(max_seconds, stop_event.set)
    timer.start()
    samples = asyncio.run(_load(c.http_url, image, expected, policy, concurrency, stop_event, t0))
    timer.cancel()
    thread.join(READY_TIMEOUT_S)
    end = time.monotonic() - t0
    time.sleep(2)  # one more scrape after the run
    up = c.prometheus.series(f'up{{pod="{victim.name}"}}', wall0, wall0 + end + 2)
    report = summarize(samples, events, end, [(t - wall0, v) for t, v in up], hpa, policy)
    report["dashboard_series"] = dashboard
    report["triton_example_queue_us"] = example
    return report


def throughput(samples: list[Sample], end: float, width: float = 1.0) -> list[float]:
    """Successful requests per second in consecutive ``width``-second bins of completion time."""
    bins = [0] * (int(end / width) + 1)
    for s in samples:
        if s.ok:
            bins[min(int(s.end / width), len(bins) - 1)] += 1
    return [b / width for b in bins]


def recovery_time(rate: list[float], killed: float, baseline: float, share: float = 0.8, window: int = 5) -> float | None:
    """Seconds after the kill from which every ``window``-second mean throughput stays at ``share`` of
    ``baseline`` or more (the restarting replica's start-up competes for the same cores, so this includes it);
    None when the run ended below it. The last, partial second is left out."""
    means = [sum(rate[i : i + window]) / window for i in range(int(killed), len(rate) - window)]
    if not means or means[-1] < share * baseline:
        return None
    low = [i for i, m in enumerate(means) if m < share * baseline]
    return float(low[-1] + 1) if low else 0.0


def summarize(samples: list[Sample], events: dict, end: float, up: list[tuple[float, float]], hpa: dict, policy: RetryPolicy) -> dict:
    failures = [s for s in samples if not s.ok]
    rate = throughput(samples, end)
    killed = events.get("killed", end)
    before = rate[2 : int(killed)] or [0.0]  # the first seconds are warm-up
    baseline = sum(before) / len(before)
    after_ready = rate[int(events["ready"]) + 1 : -1] if "ready" in events else []
    down = [t for t, v in up if v == 0]
    latencies = sorted(s.end - s.start for s in samples if s.ok)
    return {
        "policy": asdict(policy),
        "requests": len(samples),
        "failed": len(failures),
        "errors": sorted({f.error or "" for f in failures}),
        "failure_times_s": [round(f.end, 2) for f in failures],
        "events_s": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in events.items()},
        "seconds": round(end, 2),
        "throughput_before_kill_rps": round(baseline, 2),
        "throughput_after_ready_rps": round(sum(after_ready) / len(after_ready), 2) if after_ready else None,
        "throughput_back_80pct_after_kill_s": recovery_time(rate, killed, baseline),
        "latency_p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
        "latency_p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1) if latencies else None,
        "prometheus_up": up,
        "prometheus_down_s": [round(min(down), 1), round(max(down), 1)] if down else None,
        "hpa_queue_time_per_request_us": hpa,
        "throughput_rps": rate,
    }


def reference_reading(url: str, image: bytes) -> str:
    [result] = OcrClient(url, "http", batch_size=1, concurrency=1).recognize([("reference", image)])
    if not result.ok:
        raise RuntimeError(f"the reference request failed: {result.error}")
    return result.text


def oversized_through_balancer(c: Cluster) -> dict[str, str]:
    """What a request over MAX_REQUEST_BYTES gets through the balancer, per protocol (raw tritonclient):
    the balancer's 413, never a replica's answer."""
    import numpy as np
    import tritonclient.grpc as grpc_api
    import tritonclient.http as http_api

    body = np.array([[bytes(MAX_REQUEST_BYTES + 1024)]], dtype=object)
    outcomes = {}
    for protocol, api, url in (("http", http_api, c.http_url), ("grpc", grpc_api, c.grpc_url)):
        request = api.InferInput("IMAGE", [1, 1], "BYTES")
        request.set_data_from_numpy(body)
        client = api.InferenceServerClient(url)
        try:
            client.infer("spin_ocr", [request])
            outcomes[protocol] = "answered"
        except Exception as e:  # noqa: BLE001 - the outcome is the record: 413, or HTTP's upload cut short by it
            outcomes[protocol] = f"{type(e).__name__}: {e}"[:300]
        finally:
            client.close()
    return outcomes


def run(repository: Path, workdir: Path, replicas: int = 3, concurrency: int = 4, kill_at: float = 15.0,
        restart_after: float = 2.0, settle: float = 10.0, max_seconds: float = 150.0, image: bytes | None = None) -> dict:
    """Both phases (retry policy, then none) on one cluster; the report dict."""
    if image is None:
        from perf.data import render_samples

        image = render_samples(1, progress=False)[0].data
    started = time.monotonic()
    with cluster(repository, workdir, replicas) as c:
        startup = time.monotonic() - started
        expected = reference_reading(c.http_url, image)
        grpc_text = None
        [grpc_result] = OcrClient(c.grpc_url, "grpc", batch_size=1).recognize([("grpc", image)])
        grpc_text = grpc_result.text if grpc_result.ok else f"ERROR {grpc_result.error}"
        oversized = oversized_through_balancer(c)
        victim = c.replicas[1]
        phases = {}
        for name, policy in (("with_retry", CLIENT_RETRY), ("without_retry", NO_RETRY)):
            phases[name] = run_phase(c, victim, image, expected, policy, concurrency, kill_at, restart_after, settle, max_seconds)
    return {
        "replicas": replicas,
        "concurrency": concurrency,
        "cluster_startup_s": round(startup, 1),
        "expected_text": expected,
        "grpc_through_balancer": grpc_text,
        "oversized_through_balancer": oversized,
        "adapter_query": adapter_query(f'namespace="{NAMESPACE}",pod=~"replica-.*"'),
        "phases": phases,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = report["phases"]
    fig, axes = plt.subplots(2, len(phases), figsize=(6 * len(phases), 5.5), sharex="col",
                             gridspec_kw={"height_ratios": [3, 1]}, squeeze=False)
    for col, (name, p) in enumerate(phases.items()):
        ax, ax_up = axes[0][col], axes[1][col]
        rate = p["throughput_rps"][:-1]  # the last second is partial
        ax.step(range(len(rate)), rate, where="post", label="successful requests/s")
        ax.set_ylim(bottom=0)
        for t in p["failure_times_s"]:
            ax.axvline(t, color="red", alpha=0.5, lw=1)
        for key, color, style in (("killed", "black", "--"), ("restarted", "black", ":"), ("ready", "green", "--")):
            if key in p["events_s"]:
                ax.axvline(p["events_s"][key], color=color, linestyle=style, label=f"replica-1 {key}")
        ax.set_title(f"{name.replace('_', ' ')}: {p['failed']} of {p['requests']} requests failed")
        ax.set_ylabel("throughput (req/s)")
        ax.legend(loc="lower left", fontsize=8)
        if p["prometheus_up"]:
            t, v = zip(*p["prometheus_up"])
            ax_up.step(t, v, where="post", color="purple")
        ax_up.set_ylim(-0.2, 1.2)
        ax_up.set_yticks([0, 1])
        ax_up.set_ylabel("Prometheus up")
        ax_up.set_xlabel("seconds")
    fig.suptitle(f"{report['replicas']} CPU Triton replicas behind HAProxy, {report['concurrency']} clients; red: failed requests")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(report: dict) -> str:
    rows = ["| phase | requests | failed | throughput before kill (req/s) | after restart | back to 80 % after kill (s) | p50 / p99 (ms) | Prometheus saw replica-1 down (s) | restarted replica ready after (s) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, p in report["phases"].items():
        ev = p["events_s"]
        ready_after = round(ev["ready"] - ev["restarted"], 1) if "ready" in ev and "restarted" in ev else None
        rows.append(f"| {name} | {p['requests']} | {p['failed']} | {p['throughput_before_kill_rps']} | {p['throughput_after_ready_rps']} | "
                    f"{p['throughput_back_80pct_after_kill_s']} | {p['latency_p50_ms']} / {p['latency_p99_ms']} | {p['prometheus_down_s']} | {ready_after} |")
    phase = report["phases"]["with_retry"]
    for label, values in (("HPA metric (prometheus-adapter rule, evaluated by Prometheus during the load)", phase["hpa_queue_time_per_request_us"]),
                          ("Triton's k8s-onprem example formula at the same moment", phase.get("triton_example_queue_us", {}))):
        rows += ["", f"{label}, µs queued per request: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(values.items()))]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reliability.failover", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model-repository", type=Path, default=ROOT / "model_repository", help="built if needed (default: %(default)s)")
    p.add_argument("--out", type=Path, default=ROOT / "reliability" / "results" / "failover")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--kill-at", type=float, default=15.0)
    p.add_argument("--restart-after", type=float, default=2.0)
    p.add_argument("--settle", type=float, default=10.0)
    args = p.parse_args(argv)
    from spinrec.serving.launch import ensure_built

    ensure_built(args.model_repository.resolve(), None, False)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spin-failover-") as tmp:
        report = run(args.model_repository.resolve(), Path(tmp), args.replicas, args.concurrency, args.kill_at, args.restart_after, args.settle)
    (args.out / "failover.json").write_text(json.dumps(report, indent=1))
    (args.out / "summary.md").write_text(markdown(report))
    plot(report, args.out / "failover.png")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
