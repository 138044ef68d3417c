"""Ten minutes of mixed good and hostile traffic through the front proxy, with the server's memory sampled
(``python -m reliability.hostile_soak``).

Starts the server on ``--model-repository`` (spinrec.serving.launch) and HAProxy in front of it
(spinrec.serving.front), then keeps ``--workers`` clients busy for ``--seconds``, alternating HTTP and
gRPC, each request drawn from: good word batches (1-8 rendered words), mixed batches (good words and
broken images), requests malformed as a whole (wrong datatype, wrong shape, 65 rows), oversized bodies
(refused by the proxy), images over the pixel limit. tritonserver + stub RSS (and PSS) is sampled every
5 s. Writes ``OUT/soak.json``, ``OUT/soak.md``, ``OUT/soak.png`` (RSS over time) and ``OUT/raw/server.log``.

    nice -n 10 python -m reliability.hostile_soak --model-repository R --out reliability/results/hostile_soak
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from perf.data import render_samples
from perf.machine import machine_record, server_memory
from perf.run import _SERVER_ENV, launch, stop
from spinrec.preprocess import MAX_PIXELS, MAX_REQUEST_BYTES
from spinrec.serving import front

KINDS = {"good": 0.55, "mixed": 0.15, "malformed": 0.1, "oversized": 0.1, "too_many_pixels": 0.1}


def _api(protocol):
    if protocol == "http":
        import tritonclient.http as api
    else:
        import tritonclient.grpc as api
    return api


def payloads(rng, words: list[bytes]) -> dict:
    side = int(np.sqrt(MAX_PIXELS)) + 1
    return {
        "oversized": rng.integers(0, 256, MAX_REQUEST_BYTES + 1024 * 1024, dtype=np.uint8).tobytes(),
        "too_many_pixels": cv2.imencode(".png", np.zeros((side, side), np.uint8))[1].tobytes(),
        "broken": [words[0][: len(words[0]) // 2], b"", rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()],
    }


def request(kind: str, rng, words: list[bytes], extra: dict) -> tuple[str, np.ndarray, str]:
    """``(input name, array, datatype)`` of one request of ``kind``."""
    # Indices, not rng.choice(words): NumPy would turn the payloads into fixed-width bytes_ and drop trailing NULs.
    if kind == "good":
        return "IMAGE", np.array([[words[i]] for i in rng.integers(0, len(words), int(rng.integers(1, 9)))], dtype=object), "BYTES"
    if kind == "mixed":
        rows = [words[i] for i in rng.integers(0, len(words), 4)] + [extra["broken"][int(rng.integers(0, 3))]]
        return "IMAGE", np.array([[rows[i]] for i in rng.permutation(len(rows))], dtype=object), "BYTES"
    if kind == "malformed":
        return [("IMAGE", np.zeros((1, 1), np.float32), "FP32"), ("IMAGE", np.array([[words[0], words[1]]], dtype=object), "BYTES"),
                ("IMAGE", np.array([[words[0]]] * 65, dtype=object), "BYTES")][int(rng.integers(0, 3))]
    return "IMAGE", np.array([[extra[kind]]], dtype=object), "BYTES"


def worker(index: int, urls: dict, words: list[bytes], extra: dict, until: float, counts: Counter, lock: threading.Lock) -> None:
    rng = np.random.default_rng(index)
    kinds, weights = list(KINDS), list(KINDS.values())
    clients = {p: _api(p).InferenceServerClient(u) for p, u in urls.items()}
    i = 0
    while time.monotonic() < until:
        protocol = ("http", "grpc")[i % 2]
        i += 1
        kind = kinds[int(rng.choice(len(kinds), p=weights))]
        name, data, dtype = request(kind, rng, words, extra)
        api = _api(protocol)
        inp = api.InferInput(name, list(data.shape), dtype)
        inp.set_data_from_numpy(data)
        try:
            out = clients[protocol].infer("spin_ocr", [inp], outputs=[api.InferRequestedOutput("ERROR")]).as_numpy("ERROR").reshape(-1)
            outcome = "answered, images refused" if any(out) else "answered"
        except Exception as e:  # noqa: BLE001 - the outcome is what we record
            outcome = "refused 413" if "413" in str(e) or isinstance(e, OSError) else "refused"
            if kind == "oversized":  # the proxy may close the HTTP connection mid-upload: start a fresh client
                clients[protocol] = _api(protocol).InferenceServerClient(urls[protocol])
        with lock:
            counts[f"{kind}: {outcome}"] += 1
    for c in clients.values():
        c.close()


def plot(samples: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(t, [s["rss_mib"] for s in samples], label="RSS (tritonserver + stubs)")
    ax.plot(t, [s["pss_mib"] for s in samples], label="PSS")
    ax.set_xlabel("seconds")
    ax.set_ylabel("MiB")
    ax.set_ylim(0, max(s["rss_mib"] for s in samples) * 1.2)
    ax.set_title("spin_ocr under mixed good and hostile traffic (through the front proxy)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reliability.hostile_soak", description=__doc__.splitlines()[0])
    p.add_argument("--model-repository", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--base-port", type=int, default=8400, help="Triton HTTP port; gRPC +1, metrics +2, proxy HTTP +3, proxy gRPC +4")
    args = p.parse_args(argv)
    (args.out / "raw").mkdir(parents=True, exist_ok=True)
    words = [s.data for s in render_samples(64, seed=7, progress=False)]
    extra = payloads(np.random.default_rng(0), words)
    port = args.base_port
    server = launch(port, args.out / "raw" / "server.log", args.model_repository, _SERVER_ENV)
    with tempfile.TemporaryDirectory(prefix="spinrec-soak-front-") as tmp:
        proxy = front.start(front.haproxy_config("127.0.0.1", port + 3, port + 4, f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"), tmp)
        try:
            time.sleep(2)
            urls = {"http": f"127.0.0.1:{port + 3}", "grpc": f"127.0.0.1:{port + 4}"}
            counts: Counter = Counter()
            lock = threading.Lock()
            start = time.monotonic()
            until = start + args.seconds
            threads = [threading.Thread(target=worker, args=(i, urls, words, extra, until, counts, lock), daemon=True) for i in range(args.workers)]
            samples = []
            for th in threads:
                th.start()
            with tqdm(total=int(args.seconds), desc="hostile soak", unit="s") as bar:
                while time.monotonic() < until + 5:
                    m = server_memory(port)
                    samples.append({"t": round(time.monotonic() - start, 1), "rss_mib": m["total_rss_mib"], "pss_mib": m["total_pss_mib"]})
                    time.sleep(5)
                    bar.n = min(int(time.monotonic() - start), int(args.seconds))
                    bar.refresh()
            for th in threads:
                th.join(timeout=120)
        finally:
            proxy.terminate()
            proxy.wait(timeout=30)
            stop([server])
    rss = [s["rss_mib"] for s in samples]
    tail = [s for s in samples if s["t"] >= args.seconds / 2]
    slope = float(np.polyfit([s["t"] for s in tail], [s["rss_mib"] for s in tail], 1)[0] * 60) if len(tail) > 2 else None
    result = {
        "seconds": args.seconds, "workers": args.workers, "mix": KINDS, "requests": dict(sorted(counts.items())),
        "total_requests": sum(counts.values()), "rss_first_mib": rss[0], "rss_last_mib": rss[-1], "rss_max_mib": max(rss),
        "rss_slope_second_half_mib_per_min": slope, "samples": samples, "machine": machine_record(),
    }
    (args.out / "soak.json").write_text(json.dumps(result, indent=1))
    plot(samples, args.out / "soak.png")
    lines = [f"# Hostile soak: {args.seconds:.0f} s, {args.workers} workers, through the front proxy", "",
             f"RSS (tritonserver + stubs): first {rss[0]:.0f} MiB, last {rss[-1]:.0f} MiB, max {max(rss):.0f} MiB; "
             f"second-half slope {slope:+.2f} MiB/min." if slope is not None else "", "", "| request kind: outcome | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(counts.items())]
    (args.out / "soak.md").write_text("\n".join(lines) + "\n\n![RSS](soak.png)\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
