"""Hostile traffic against the real server: oversized requests are refused by the front proxy
(spinrec.serving.front) before Triton receives them, malformed ones by Triton or the preprocessor, and the
server's memory (tritonserver + every Python-backend stub, RSS) comes back to within a stated margin of
its baseline."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from conftest import free_port, png_header_only
from perf.machine import server_memory
from spinrec.preprocess import MAX_PIXELS, MAX_REQUEST_BYTES

OVERSIZED = 50  # requests over MAX_REQUEST_BYTES, half over HTTP, half over gRPC
MALFORMED = 520  # requests Triton or the preprocessor refuses
# RSS may move by allocator noise and lazily touched pages; a leak of the refused payloads would be
# OVERSIZED x 9 MB = 450 MB (and more: the stubs' shared memory is mapped by tritonserver too).
MARGIN_MIB = 48
MARGIN_FRACTION = 0.05


def _api(protocol):
    if protocol == "http":
        import tritonclient.http as api
    else:
        import tritonclient.grpc as api
    return api


@pytest.fixture(scope="module")
def front(triton_server, tmp_path_factory):
    """HAProxy in front of the session's server, on free ports: ``{"http": url, "grpc": url}``."""
    from spinrec.serving import front as front_module

    try:
        front_module.haproxy_binary()
    except FileNotFoundError as e:
        pytest.fail(f"{e}; scripts/setup.sh --dev installs it")
    ports = {"http": free_port(), "grpc": free_port()}
    config = front_module.haproxy_config("127.0.0.1", ports["http"], ports["grpc"], triton_server.http_url, triton_server.grpc_url)
    proxy = front_module.start(config, str(tmp_path_factory.mktemp("front")))
    urls = {p: f"127.0.0.1:{port}" for p, port in ports.items()}
    deadline = time.monotonic() + 30
    while True:
        try:
            with _client("http", urls["http"]) as c:
                if c.is_server_ready():
                    break
        except Exception:
            if time.monotonic() > deadline or proxy.poll() is not None:
                proxy.kill()
                pytest.fail("haproxy did not come up")
            time.sleep(0.2)
    yield urls
    proxy.terminate()
    proxy.wait(timeout=30)


class _client:
    def __init__(self, protocol, url):
        self.client = _api(protocol).InferenceServerClient(url)

    def __enter__(self):
        return self.client

    def __exit__(self, *exc):
        self.client.close()


def _infer(protocol, url, inputs_spec):
    """One request: ``inputs_spec`` is ``(name, array, datatype)``; returns the ERROR column or the exception."""
    api = _api(protocol)
    name, data, dtype = inputs_spec
    request = api.InferInput(name, list(data.shape), dtype)
    request.set_data_from_numpy(data)
    with _client(protocol, url) as c:
        try:
            return c.infer("spin_ocr", [request], outputs=[api.InferRequestedOutput("ERROR")]).as_numpy("ERROR").reshape(-1)
        except (InferenceServerException, OSError) as e:  # OSError: the proxy answered 413 and closed mid-upload
            return e


def _malformed(word: bytes, rng) -> list[tuple[str, np.ndarray, str]]:
    """One of each kind of request the server must refuse, whole or per image."""
    side = int(np.sqrt(MAX_PIXELS)) + 1
    images = [
        rng.integers(0, 256, int(rng.integers(1, 4000)), dtype=np.uint8).tobytes(),  # noise
        word[: int(rng.integers(1, len(word)))],  # truncated
        png_header_only(60_000, 60_000),  # decompression bomb, 3.6 G pixels declared
        cv2.imencode(".png", np.zeros((side, side), np.uint8))[1].tobytes(),  # just over MAX_PIXELS
        b"",
    ]
    specs = [("IMAGE", np.array([[i]], dtype=object), "BYTES") for i in images]
    return specs + [
        ("IMAGE", np.zeros((1, 1), np.float32), "FP32"),  # wrong datatype
        ("IMAGE", np.array([[word, word]], dtype=object), "BYTES"),  # wrong shape
        ("IMAGE", np.array([[word]] * 65, dtype=object), "BYTES"),  # over max_batch_size
        ("PIXELS", np.array([[word]], dtype=object), "BYTES"),  # unknown input
        ("IMAGE", np.array([[images[0]], [word], [images[2]]], dtype=object), "BYTES"),  # mixed batch
    ]


def _rss(server) -> float:
    return server_memory(int(server.http_url.rsplit(":", 1)[1]))["total_rss_mib"]


def _requests_seen(server) -> int:
    """Requests ``spin_ocr`` has answered or failed (Triton's statistics)."""
    with server.client() as client:
        stats = client.get_inference_statistics("spin_ocr")["model_stats"][0]["inference_stats"]
    return int(stats["success"]["count"]) + int(stats["fail"]["count"])


def test_hostile_traffic_is_refused_and_memory_comes_back(triton_server, front, word_images):
    rng = np.random.default_rng(0)
    word = word_images[0]
    malformed = []
    while len(malformed) < MALFORMED:
        malformed += _malformed(word, rng)
    calls = [("http" if i % 2 else "grpc", front["http" if i % 2 else "grpc"], spec) for i, spec in enumerate(malformed)]
    oversized = np.array([[rng.integers(0, 256, MAX_REQUEST_BYTES + 1024 * 1024, dtype=np.uint8).tobytes()]], dtype=object)
    big_calls = [(p, front[p], ("IMAGE", oversized, "BYTES")) for p in ("http", "grpc") for _ in range(OVERSIZED // 2)]

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda c: _infer(*c), calls[:40]))  # warm every path once
        baseline, seen = _rss(triton_server), _requests_seen(triton_server)
        refused_big = list(pool.map(lambda c: _infer(*c), big_calls))
        assert _requests_seen(triton_server) == seen, "an oversized request reached Triton"
        outcomes = list(pool.map(lambda c: _infer(*c), calls))
    time.sleep(2)
    after = _rss(triton_server)

    for protocol, result in zip([c[0] for c in big_calls], refused_big):
        # gRPC reads the proxy's 413; an HTTP client still uploading may see the connection close first.
        assert ("413" in str(result)) if protocol == "grpc" else ("413" in str(result) or isinstance(result, OSError)), result
    whole = [o for o in outcomes if isinstance(o, InferenceServerException)]
    per_image = [o for o in outcomes if not isinstance(o, InferenceServerException)]
    assert len(whole) == len(calls) // 10 * 4  # datatype, shape, batch size, input name
    assert all(any(e) for e in per_image)  # every other request carried at least one refused image
    margin = MARGIN_MIB + MARGIN_FRACTION * baseline
    print(f"\nserver RSS: baseline {baseline:.0f} MiB, after {len(big_calls)} oversized + {len(calls)} malformed {after:.0f} MiB "
          f"(margin {margin:.0f} MiB)")
    assert after <= baseline + margin, f"RSS grew from {baseline:.0f} to {after:.0f} MiB"
    texts = _infer("http", front["http"], ("IMAGE", np.array([[word]], dtype=object), "BYTES"))
    assert not isinstance(texts, Exception) and texts.tolist() == [b""], "the server must still read after the hostile run"
