"""client.resilience: retries with backoff, several endpoints and timeouts, against real servers and real
refused connections (a free port nothing listens on)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
from tritonclient.utils import InferenceServerException

from spinrec_client import OcrClient
from spinrec_client.resilience import NO_RETRY, EndpointPool, RetriesExhausted, RetryPolicy, parse_urls, retryable
from conftest import REPO_ROOT, free_port

PROTOCOLS = ("http", "grpc")


def aio(protocol: str):
    if protocol == "http":
        import tritonclient.http.aio as api
    else:
        import tritonclient.grpc.aio as api
    return api.InferenceServerClient


def run_pool(protocol: str, urls: list[str], policy: RetryPolicy, method: str, *args, **kwargs):
    async def go():
        pool = EndpointPool(aio(protocol), urls, policy, seed=0)
        try:
            return await pool.call(method, *args, **kwargs), pool.retries
        finally:
            await pool.close()

    return asyncio.run(go())


def test_policy_and_urls_refuse_bad_values():
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="attempt_timeout"):
        RetryPolicy(attempt_timeout=0)
    with pytest.raises(ValueError, match="no server URL"):
        parse_urls(" , ")
    assert parse_urls("a:1, b:2,") == ["a:1", "b:2"]


def test_backoff_doubles_up_to_the_cap_with_full_jitter():
    import random

    policy = RetryPolicy(backoff=0.1, max_backoff=0.5)
    rng = random.Random(0)
    waits = {retry: [policy.wait(retry, rng) for _ in range(2000)] for retry in (1, 2, 3, 6)}
    for retry, cap in ((1, 0.1), (2, 0.2), (3, 0.4), (6, 0.5)):
        assert 0 <= min(waits[retry]) and max(waits[retry]) <= cap
        assert max(waits[retry]) > 0.9 * cap  # the whole range is used, not a fixed wait


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_refused_connections_are_retried_then_reported(protocol):
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    start = time.monotonic()
    with pytest.raises(RetriesExhausted, match=r"is_server_live failed on every attempt \(3\)") as info:
        run_pool(protocol, dead, RetryPolicy(attempts=3, backoff=0.01, attempt_timeout=10), "is_server_live")
    assert time.monotonic() - start < 10
    assert dead[0] in str(info.value) and dead[1] in str(info.value)  # it moved on to the next endpoint


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_dead_endpoint_fails_over_to_a_live_one(triton_server, protocol):
    urls = [f"127.0.0.1:{free_port()}", triton_server.url(protocol)]
    live, retries = run_pool(protocol, urls, RetryPolicy(attempts=2, backoff=0.01), "is_server_live")
    assert live is True and retries == 1  # the first call starts on the dead endpoint
    with pytest.raises(RetriesExhausted):
        run_pool(protocol, urls, NO_RETRY, "is_server_live")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_request_errors_are_not_retried(triton_server, protocol):
    async def go():
        pool = EndpointPool(aio(protocol), [triton_server.url(protocol)], RetryPolicy(attempts=5), seed=0)
        try:
            with pytest.raises(InferenceServerException) as info:
                await pool.get_model_config("no_such_model")
            assert not retryable(info.value)
            return pool.retries
        finally:
            await pool.close()

    assert asyncio.run(go()) == 0


def test_attempts_that_time_out_are_retried(triton_server):
    policy = RetryPolicy(attempts=2, backoff=0.01, attempt_timeout=1e-4, deadline=None)  # too short to be answered
    with pytest.raises(RetriesExhausted, match=r"failed on every attempt \(2\).*TimeoutError"):
        run_pool("grpc", [triton_server.grpc_url], policy, "is_server_live")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_client_reads_through_several_endpoints(triton_server, protocol, word_images, expected):
    urls = f"127.0.0.1:{free_port()},{triton_server.url(protocol)}"
    client = OcrClient(urls, protocol, batch_size=3, concurrency=2, retry=RetryPolicy(attempts=3, backoff=0.01))
    results = client.recognize([(f"w{i}", d) for i, d in enumerate(word_images)])
    assert [r.text for r in results] == [e.text for e in expected]


def test_cli_retry_options(triton_server, tmp_path, word_images, expected):
    image = tmp_path / "a.png"
    image.write_bytes(word_images[0])
    url = f"127.0.0.1:{free_port()},{triton_server.http_url}"
    ok = subprocess.run([sys.executable, "-m", "spinrec_client", str(image), "-u", url, "--retries", "2", "--retry-backoff", "0.01"],
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split("\t")[1] == expected[0].text
    bad = subprocess.run([sys.executable, "-m", "spinrec_client", str(image), "-u", url, "--retries", "-1"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "attempts must be at least 1" in bad.stderr
