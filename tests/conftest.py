"""Shared fixtures: rendered word images, a test checkpoint, a built model repository and a real
Triton server started with the project's launcher (once per session, on free ports)."""

from __future__ import annotations

import math
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from perf.untrained import make_test_checkpoint
from spinrec.serving.launch import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = REPO_ROOT / "weights" / "default.safetensors"
WORDS = ("hello", "world", "triton", "spin", "serve", "batch", "queue", "model", "tensor", "ocr", "2026", "text-42")
SERVER_START_TIMEOUT_S = 240


def render_word(word: str, fmt: str = ".png", scale: float = 0.9, thickness: int = 2) -> bytes:
    """Black text on white, encoded; colour so that preprocessing converts BGR -> gray as in production."""
    (w, h), base = cv2.getTextSize(word, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    image = np.full((h + base + 16, w + 16, 3), 255, np.uint8)
    cv2.putText(image, word, (8, h + 8), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 30, 10), thickness, cv2.LINE_AA)
    ok, data = cv2.imencode(fmt, image)
    assert ok
    return data.tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` in a few dozen bytes (a decompression bomb's header)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def word_images() -> list[bytes]:
    """PNG and JPEG renders of :data:`WORDS` (alternating)."""
    return [render_word(w, ".png" if i % 2 == 0 else ".jpg") for i, w in enumerate(WORDS)]


@pytest.fixture(scope="session")
def bad_images(word_images) -> dict[str, bytes]:
    """One input per failure class, each refused by preprocessing for its own reason."""
    from spinrec.preprocess import MAX_PIXELS

    side = math.isqrt(MAX_PIXELS) + 1
    ok, oversized = cv2.imencode(".png", np.zeros((side, side), np.uint8))
    assert ok
    return {
        "corrupt": word_images[0][: len(word_images[0]) // 2],
        "empty": b"",
        "not_an_image": b"this is a text file, not an image\n" * 8,
        "oversized": oversized.tobytes(),
    }


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, word_images) -> Path:
    """``SPIN_TEST_WEIGHTS`` (e.g. a trained checkpoint) or the input-sensitive untrained one."""
    if os.environ.get("SPIN_TEST_WEIGHTS"):
        return Path(os.environ["SPIN_TEST_WEIGHTS"]).resolve()
    path = tmp_path_factory.mktemp("weights") / "test.safetensors"
    make_test_checkpoint(path, word_images)
    return path


@pytest.fixture(scope="session")
def reference(checkpoint):
    """The in-process PyTorch pipeline every served result is compared with."""
    from spinrec.pipeline import Pipeline

    return Pipeline.open(checkpoint)


@pytest.fixture(scope="session")
def expected(reference, word_images):
    """The reference readings of :func:`word_images`, in order."""
    from spinrec.preprocess import ImageError

    readings = reference.recognize(word_images)
    assert not any(isinstance(r, ImageError) for r in readings)
    # An untrained model that read one string for every image would make comparisons vacuous.
    assert len({r.text for r in readings}) > 1, "the test checkpoint must give different texts for different images"
    return readings


@pytest.fixture(scope="session")
def built_repository(tmp_path_factory, checkpoint) -> Path:
    """The model repository built from :func:`checkpoint` into a temporary folder."""
    return build_repository(tmp_path_factory.mktemp("model_repository"), checkpoint)


@dataclass
class TritonServer:
    process: subprocess.Popen
    repository: Path
    log: Path
    http_url: str
    grpc_url: str
    metrics_port: int

    def url(self, protocol: str) -> str:
        return self.http_url if protocol == "http" else self.grpc_url

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def client(self, protocol: str = "http"):
        """A synchronous tritonclient client; use it in a ``with`` block (open connections delay shutdown)."""
        if protocol == "http":
            import tritonclient.http as api
        else:
            import tritonclient.grpc as api
        return closing(api.InferenceServerClient(self.url(protocol)))

    def ready(self) -> bool:
        try:
            with self.client() as c:
                return c.is_server_ready()
        except Exception:
            return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_triton(repository: Path, log: Path, extra_args: tuple[str, ...] = (), python: str = sys.executable, cwd: Path = REPO_ROOT) -> TritonServer:
    """A real tritonserver on ``repository``, started by ``spinrec.serving.launch`` of ``python`` on free ports
    (``extra_args`` pass through the launcher to tritonserver)."""
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    cmd = [
        python, "-m", "spinrec.serving.launch", "--no-build", "--front", "off",  # Triton itself; tests/test_front.py serves the default way
        "--model-repository", str(repository),
        "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
        "--exit-timeout-secs=10",  # passed through to tritonserver
        *extra_args,
    ]
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    server = TritonServer(process, repository, log, f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", metrics_port)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.ready():
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            pytest.fail(f"tritonserver did not become ready (exit {process.returncode}); log {log}:\n{server.log_tail()}")
        time.sleep(0.5)
    return server


def build_repository(output: Path, weights: Path) -> Path:
    """The model repository built by the real builder command, ``--no-int8``: the encoder serves fp32 and reads
    exactly what PyTorch reads (the served default, int8, has its own tests in test_quantize.py)."""
    cmd = [sys.executable, "-m", "builders.build_repository", "--output", str(output), "--weights", str(weights), "--no-int8"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"build_repository failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return output


@pytest.fixture(scope="session")
def triton_server(built_repository, tmp_path_factory):
    """A real tritonserver on the built repository (the test checkpoint)."""
    server = start_triton(built_repository, tmp_path_factory.mktemp("triton") / "server.log")
    yield server
    _stop(server.process)
    print(f"\ntriton server log kept at {server.log}")


@pytest.fixture(scope="session")
def default_server(tmp_path_factory):
    """A real tritonserver on a repository built from the shipped default weights."""
    if not DEFAULT_WEIGHTS.exists():
        pytest.skip(f"{DEFAULT_WEIGHTS} is not in this checkout")
    repository = build_repository(tmp_path_factory.mktemp("default_repository"), DEFAULT_WEIGHTS)
    server = start_triton(repository, tmp_path_factory.mktemp("triton_default") / "server.log")
    yield server
    _stop(server.process)
    print(f"\ntriton server (default weights) log kept at {server.log}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the server log's tail to the report of any failed test that used the server."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name in ("triton_server", "default_server"):
            server = getattr(item, "funcargs", {}).get(name)
            if isinstance(server, TritonServer):
                report.sections.append((f"{name} log (tail)", server.log_tail()))


def pytest_terminal_summary(terminalreporter):
    """Name the outcome of every check against NVIDIA's published TensorRT headers, passed ones included, so
    that CI's log (pytest -q) shows them."""
    seen = {}
    for outcome in ("failed", "error", "skipped", "passed"):
        for report in terminalreporter.stats.get(outcome, []):
            if "tensorrt_headers" in getattr(report, "keywords", {}) and report.nodeid not in seen:
                seen[report.nodeid] = outcome.upper()
    if seen:
        terminalreporter.section("checks against NVIDIA's TensorRT headers")
        for nodeid, outcome in seen.items():
            terminalreporter.line(f"{outcome} {nodeid}")
