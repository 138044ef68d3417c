"""A replica stopped the way systemd, supervisors and Kubernetes stop it (SIGTERM) loses no request of a client
that never retries: two replicas (the launcher's default path, front proxy included) behind HAProxy as
deploy/local/haproxy.cfg sets it up (readiness checked every 500 ms, out after 2 failures), raw tritonclient load
over gRPC and HTTP in closed loops without retries, one replica stopped with SIGTERM and started again, then a
rolling restart of both. The launcher drains first: readiness answers 503 while inference still passes, so the
balancer takes the replica out before it stops accepting (spinrec.serving.launch)."""

from __future__ import annotations

import shutil
import signal
import threading
import time

import numpy as np
import pytest

from conftest import DEFAULT_WEIGHTS, build_repository
from reliability.failover import cluster

THREADS = {"grpc": 2, "http": 2}


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    if not DEFAULT_WEIGHTS.exists():
        pytest.skip(f"{DEFAULT_WEIGHTS} is not in this checkout")
    for tool in ("haproxy", "prometheus"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed; scripts/setup.sh --dev installs it")
    return build_repository(tmp_path_factory.mktemp("graceful_repository"), DEFAULT_WEIGHTS)


class RawLoad:
    """Closed loops of raw tritonclient calls, one image each, no retries; every error and wrong text counted."""

    def __init__(self, urls: dict[str, str], image: bytes):
        self.urls, self.image = urls, image
        self.expected: str | None = None
        self.ok = 0
        self.failures: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()
        self.running = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(p,)) for p, n in THREADS.items() for _ in range(n)]

    def _call(self, client, api) -> str:
        request = api.InferInput("IMAGE", [1, 1], "BYTES")
        request.set_data_from_numpy(np.array([[self.image]], dtype=object))
        return client.infer("spin_ocr", [request]).as_numpy("TEXT").reshape(-1)[0].decode()

    def _loop(self, protocol: str) -> None:
        if protocol == "http":
            import tritonclient.http as api
        else:
            import tritonclient.grpc as api
        client = api.InferenceServerClient(self.urls[protocol])
        try:
            while self.running.is_set():
                try:
                    text = self._call(client, api)
                    error = None if text == self.expected else f"read {text!r}, expected {self.expected!r}"
                except Exception as e:  # noqa: BLE001 - every failure a client without retries would see
                    error = f"{type(e).__name__}: {str(e)[:200]}"
                with self.lock:
                    if error is None:
                        self.ok += 1
                    else:
                        self.failures.append((time.monotonic(), protocol, error))
        finally:
            client.close()

    def __enter__(self) -> "RawLoad":
        import tritonclient.grpc as api

        client = api.InferenceServerClient(self.urls["grpc"])
        self.expected = self._call(client, api)
        client.close()
        self.running.set()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running.clear()
        for t in self.threads:
            t.join(timeout=60)


def _stop(replica) -> float:
    """SIGTERM to the replica's launcher; seconds until it has exited."""
    start = time.monotonic()
    replica.process.send_signal(signal.SIGTERM)
    assert replica.process.wait(timeout=90) == 0
    return time.monotonic() - start


@pytest.mark.slow
def test_sigterm_and_a_rolling_restart_lose_no_request_of_a_client_without_retries(repository, word_images, tmp_path):
    with cluster(repository, tmp_path, replicas=2) as c:
        with RawLoad({"http": c.http_url, "grpc": c.grpc_url}, word_images[0]) as load:
            time.sleep(3)
            events = {"sigterm_s": _stop(c.replicas[0])}
            time.sleep(2)
            c.replicas[0].start()
            c.replicas[0].wait_ready()
            time.sleep(2)  # back in the balancer after 2 good checks
            before_rolling = load.ok
            for i, replica in enumerate(c.replicas):  # a rolling restart: one replica after the other
                events[f"rolling_{i}_s"] = _stop(replica)
                replica.start()
                replica.wait_ready()
                time.sleep(2)
        answered = load.ok
    print(f"\nraw clients without retries: {answered} answered ({answered - before_rolling} during the rolling restart), "
          f"{len(load.failures)} failed; stops took {events}")
    assert not load.failures, load.failures[:5]
    assert answered > 100 and answered - before_rolling > 30
    log = c.replicas[0].log.read_text()
    assert "launch: draining: not ready for 5 s while still serving" in log
