"""The default serving path: the launcher (what ``scripts/serve.sh`` and ``spinrec serve`` run) puts the
size-limiting front proxy on the public ports and Triton on loopback-only internal ones. Oversized requests are
refused there with 413 and the server's memory stays flat; SIGTERM and SIGINT stop Triton, HAProxy and their
temporary files together; ``python -m spinrec.serving.front`` alone does the same with its HAProxy."""

from __future__ import annotations

import glob
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from conftest import REPO_ROOT, SERVER_START_TIMEOUT_S, free_port
from perf.machine import processes, server_memory
from spinrec_client.resilience import NO_RETRY
from spinrec.serving import front

BIG_REQUESTS = 20  # of 50 MB each, half over HTTP, half over gRPC
BIG_BYTES = 50 * 1024 * 1024
MARGIN_MIB = 64


@pytest.fixture(autouse=True)
def _haproxy():
    try:
        front.haproxy_binary()
    except FileNotFoundError as e:
        pytest.fail(f"{e}; scripts/setup.sh installs it")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _processes(name: str, needle: str) -> list[int]:
    """Processes whose executable is ``name`` and whose command line mentions ``needle``."""
    return processes(name, lambda args: needle in " ".join(args))


def _temporary_folders() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "spinrec-front-*"))) | set(
        glob.glob(os.path.join(tempfile.gettempdir(), "spinrec-triton-backends-*"))
    )


class Launched:
    """The launcher on ``repository`` the default way (no --front option), on free public ports."""

    def __init__(self, repository, log):
        self.http, self.grpc, self.metrics = free_port(), free_port(), free_port()
        self.log = log
        cmd = [sys.executable, "-m", "spinrec.serving.launch", "--no-build", "--model-repository", str(repository),
               "--http-port", str(self.http), "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics),
               "--exit-timeout-secs=10"]  # fmt: skip
        self.process = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"the launcher did not become ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        found = re.search(r"Triton on 127\.0\.0\.1:(\d+) and :(\d+)", log.read_text())
        assert found, "the launcher must say where Triton listens behind the proxy"
        self.internal = tuple(int(p) for p in found.groups())

    def ready(self) -> bool:
        import tritonclient.http as api

        try:
            client = api.InferenceServerClient(f"127.0.0.1:{self.http}")
            try:
                return client.is_server_ready()
            finally:
                client.close()
        except Exception:
            return False


@pytest.fixture
def launched(built_repository, tmp_path):
    before = _temporary_folders()
    server = Launched(built_repository, tmp_path / "launch.log")
    yield server
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    assert _temporary_folders() <= before, "the launcher left its temporary folders"


def _big(protocol: str, port: int, payload: np.ndarray):
    if protocol == "http":
        import tritonclient.http as api
    else:
        import tritonclient.grpc as api
    client = api.InferenceServerClient(f"127.0.0.1:{port}")
    request = api.InferInput("IMAGE", [1, 1], "BYTES")
    request.set_data_from_numpy(payload)
    try:
        return client.infer("spin_ocr", [request])
    except (InferenceServerException, OSError) as e:
        return e
    finally:
        client.close()


def test_the_default_launch_refuses_oversized_requests_and_its_memory_stays_flat(launched, word_images):
    """20 requests of 50 MB to the public ports are refused by the proxy (413; an HTTP client still uploading
    may see the connection closed first), Triton never sees them, its RSS (server and stubs) stays within
    baseline + 64 MiB, Triton's own ports listen on loopback only, and a word is still read."""
    from spinrec_client import OcrClient

    log = launched.log.read_text()
    assert f"--http-address=127.0.0.1 --http-port={launched.internal[0]}" in log and f"--grpc-port={launched.internal[1]}" in log
    OcrClient(f"127.0.0.1:{launched.http}", "http").recognize([("w", word_images[0])])  # warm the path once
    baseline = server_memory(launched.metrics)["total_rss_mib"]
    payload = np.array([[np.random.default_rng(0).integers(0, 256, BIG_BYTES, dtype=np.uint8).tobytes()]], dtype=object)
    calls = [("http" if i % 2 else "grpc", launched.http if i % 2 else launched.grpc) for i in range(BIG_REQUESTS)]
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda c: _big(c[0], c[1], payload), calls))
    for (protocol, _), outcome in zip(calls, outcomes):
        assert isinstance(outcome, Exception), "an oversized request was answered"
        assert "413" in str(outcome) or (protocol == "http" and isinstance(outcome, OSError)), outcome
    time.sleep(2)
    after = server_memory(launched.metrics)["total_rss_mib"]
    print(f"\nserver RSS: baseline {baseline:.0f} MiB, after {BIG_REQUESTS} x 50 MB {after:.0f} MiB")
    assert after <= baseline + MARGIN_MIB, f"RSS grew from {baseline:.0f} to {after:.0f} MiB"
    for protocol, port in (("grpc", launched.grpc), ("http", launched.http)):
        [reading] = OcrClient(f"127.0.0.1:{port}", protocol).recognize([("w", word_images[0])])
        assert reading.ok and reading.text is not None, reading
    # The project's client never sends what the proxy would refuse, and says what happened in its own words.
    big = bytes(BIG_BYTES // 5)
    for protocol, port in (("grpc", launched.grpc), ("http", launched.http)):
        over, word = OcrClient(f"127.0.0.1:{port}", protocol).recognize([("big", big), ("w", word_images[0])])
        assert over.error == f"encoded image too large: {len(big)} bytes (limit 8388608)" and word.ok, (over, word)
    from spinrec_client.ocr import ClientError

    with pytest.raises(ClientError, match="is this the gRPC port"):
        OcrClient(f"127.0.0.1:{launched.grpc}", "http", retry=NO_RETRY).recognize([("w", word_images[0])])


def test_http10_requests_through_the_front_end_and_hold_no_connection(launched):
    """HTTP/1.0 (HAProxy's own health checks, curl -0): Triton's answer has no length and ends by closing; through
    the front it must end too (it once hung for the 300 s timeout, each holding one of the proxy's 64 connections)."""
    for _ in range(80):  # more than maxconn: a held connection per request would stall the last ones
        with socket.create_connection(("127.0.0.1", launched.http), timeout=5) as s:
            s.sendall(b"GET /v2/health/ready HTTP/1.0\r\n\r\n")
            answer = b"".join(iter(lambda: s.recv(4096), b""))  # until the proxy closes; socket.timeout fails the test
        assert answer.startswith(b"HTTP/1.0 200"), answer


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_launcher_stops_triton_haproxy_and_their_files(launched, signum):
    triton = _processes("tritonserver", f"--http-port={launched.internal[0]}")
    proxy = _processes("haproxy", "spinrec-front-")
    assert len(triton) == 1 and proxy, (triton, proxy)
    launched.process.send_signal(signum)
    assert launched.process.wait(timeout=60) == 0
    time.sleep(0.5)
    assert not _processes("tritonserver", f"--http-port={launched.internal[0]}")
    assert not [p for p in proxy if os.path.exists(f"/proc/{p}")]
    for port in (launched.http, launched.grpc, *launched.internal):
        assert not _listening(port), f"port {port} still listens"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_standalone_front_stops_its_haproxy_and_folder(signum):
    before = _temporary_folders()
    http, grpc = free_port(), free_port()
    process = subprocess.Popen([sys.executable, "-m", "spinrec.serving.front", "--http-port", str(http), "--grpc-port", str(grpc)], cwd=REPO_ROOT)
    deadline = time.monotonic() + 30
    while not (_listening(http) and _listening(grpc)):
        assert process.poll() is None and time.monotonic() < deadline, "the front did not start"
        time.sleep(0.1)
    proxy = _processes("haproxy", "spinrec-front-")
    assert proxy
    process.send_signal(signum)
    assert process.wait(timeout=30) == 0
    time.sleep(0.5)
    assert not [p for p in proxy if os.path.exists(f"/proc/{p}")] and not _listening(http) and not _listening(grpc)
    assert _temporary_folders() <= before

