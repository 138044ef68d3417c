"""Read word images with the ``spin_ocr`` ensemble of a Triton server, over HTTP or gRPC (asyncio).

Images are sent ``batch_size`` per request (at most the server's ``max_batch_size``) with up to
``concurrency`` requests in flight. One response carries every image's outcome: its reading, or the
server's per-image ``ERROR``, and a ``FLAG`` when the image is degenerate; only a request that fails as a
whole fails all of its images. Unreachable servers and missing models raise :class:`ClientError` before
anything is sent.
"""

from __future__ import annotations

import asyncio
import re
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from tritonclient.utils import InferenceServerException

from spinrec_client.resilience import EndpointPool, RetryPolicy, parse_urls
from spinrec_client.contract import CHAR_PROBS, CONFIDENCE, ENSEMBLE as MODEL, ERROR, FLAG, IMAGE, MAX_BYTES, MAX_REQUEST_BYTES, TEXT

PROTOCOLS = {"http": "127.0.0.1:8000", "grpc": "127.0.0.1:8001"}
# The HTTP status and the ensemble's name only add noise to an error message.
_NOISE = re.compile(r"^(\[\d+\] )?(in ensemble '[^']*', )?")


class ClientError(ConnectionError):
    """Nothing can be read: the server is unreachable or does not serve the model."""


@dataclass
class Result:
    """The reading of one image, or the error that image got; ``flag`` says why a reading is doubtful
    (a degenerate image: ``tiny: ...``, ``aspect_ratio: ...``, ``blank: ...``). ``latency_ms`` is the round
    trip of the request that carried it (shared by the images of one batch)."""

    path: str
    text: str | None = None
    confidence: float | None = None
    char_probs: list[float] | None = None
    error: str | None = None
    flag: str | None = None
    latency_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def flagged(self) -> bool:
        return self.flag is not None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _api(protocol: str):
    if protocol == "http":
        import tritonclient.http as sync
        import tritonclient.http.aio as aio
    elif protocol == "grpc":
        import tritonclient.grpc as sync
        import tritonclient.grpc.aio as aio
    else:
        raise ValueError(f"protocol must be http or grpc, got {protocol!r}")
    return sync, aio


def image_input(api, images: Sequence[bytes]):
    """The ensemble's ``IMAGE`` input carrying ``images``, one row each; ``api`` is ``tritonclient.http`` or
    ``tritonclient.grpc`` (or their ``aio`` modules' parents)."""
    data = np.empty((len(images), 1), dtype=object)
    data[:, 0] = list(images)
    request = api.InferInput(IMAGE, list(data.shape), "BYTES")
    request.set_data_from_numpy(data)
    return request


#: Room for one request's own framing beside its images (HTTP's JSON header and lengths, gRPC's protobuf).
_FRAMING_BYTES = 4096


def _message(error: BaseException) -> str:
    text = error.message() if isinstance(error, InferenceServerException) else f"{type(error).__name__}: {error}"
    text = _NOISE.sub("", text or str(error))
    if "while decoding the response" in text or "Parse error at offset" in text:
        # tritonclient.http parses every answer as Triton's JSON; what is not Triton's answer ends here.
        text = ("the answer is not Triton's (a front proxy refusing the request, e.g. 413 for a body over "
                f"{MAX_REQUEST_BYTES} bytes, or not an HTTP server: is this the gRPC port? use -i grpc) [{text}]")  # fmt: skip
    elif any(not (c.isprintable() or c.isspace()) for c in text):
        text = f"the server's answer is not HTTP (is this the gRPC port? use -i grpc): {text.encode('unicode_escape')[:80].decode()}"
    return text


def chunks(sizes: Sequence[int], batch_size: int, limit: int = MAX_REQUEST_BYTES) -> list[list[int]]:
    """Indexes of images (of ``sizes`` bytes) grouped in order into requests of at most ``batch_size`` images
    whose bodies stay under the front proxy's ``limit``."""
    out: list[list[int]] = []
    total = 0
    for i, size in enumerate(sizes):
        if out and len(out[-1]) < batch_size and total + size + _FRAMING_BYTES <= limit:
            out[-1].append(i)
            total += size
        else:
            out.append([i])
            total = size
    return out


class OcrClient:
    """Async client of the ``spin_ocr`` ensemble; use it as ``async with OcrClient(...) as c`` or call
    :meth:`recognize` from synchronous code.

    Args:
        url: ``host:port``, or several (a sequence or ``"h1:p1,h2:p2"``): calls rotate over them and move
            on to the next when one cannot be reached (default: Triton's port for ``protocol`` on 127.0.0.1).
        protocol: ``http`` or ``grpc``.
        batch_size: images per request (1..the model's max_batch_size).
        concurrency: requests in flight at once.
        timeout: seconds allowed per attempt of a request.
        char_probs: also return each character's probability.
        retry: how requests are retried when a server cannot be reached or is unavailable
            (:class:`~spinrec_client.resilience.RetryPolicy`; default: 5 attempts, ``timeout`` each, 50 ms backoff
            doubling to 2 s; ``spinrec_client.resilience.NO_RETRY`` for none).
    """

    def __init__(
        self,
        url: str | None = None,
        protocol: str = "http",
        model: str = MODEL,
        batch_size: int = 16,
        concurrency: int = 4,
        timeout: float = 120.0,
        char_probs: bool = False,
        retry: RetryPolicy | None = None,
    ):
        if batch_size < 1 or concurrency < 1:
            raise ValueError("batch_size and concurrency must be at least 1")
        self.protocol = protocol
        self._sync, self._aio = _api(protocol)
        self.urls = parse_urls(url or PROTOCOLS.get(protocol, ""))
        self.url = ",".join(self.urls)
        self.retry = retry or RetryPolicy(attempt_timeout=timeout, deadline=None)
        self.model = model
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.timeout = timeout
        self.char_probs = char_probs
        self._client = None

    async def __aenter__(self) -> "OcrClient":
        if self.protocol == "http":
            make = lambda u: self._aio.InferenceServerClient(u, conn_timeout=self.timeout)  # noqa: E731
        else:
            make = self._aio.InferenceServerClient
        self._client = EndpointPool(make, self.urls, self.retry)
        try:
            await self.check()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def check(self) -> None:
        """Raise :class:`ClientError` unless the server answers and ``model`` is ready."""
        try:
            live = await self._client.is_server_live()
        except Exception as e:
            message = _message(e)
            if self.protocol == "http" and "Disconnected" in message:  # an HTTP/2-only (gRPC) listener hangs up on HTTP/1.1
                message += " (is this the gRPC port? use -i grpc)"
            raise ClientError(f"cannot reach Triton at {self.url} over {self.protocol}: {message}") from None
        if not live:
            raise ClientError(f"Triton at {self.url} answers but is not live")
        if not await self._client.is_model_ready(self.model):
            raise ClientError(f"model {self.model!r} is not ready on {self.url}; the server has: {await self._models()}")
        self.clamp_batch_size(await self.max_batch_size())

    async def max_batch_size(self) -> int:
        """The served model's ``max_batch_size`` (0: the model does not batch, one image per request)."""
        config = await self._client.get_model_config(self.model, **({"as_json": True} if self.protocol == "grpc" else {}))
        config = config.get("config", config)  # gRPC wraps the config in a response message
        return int(config.get("max_batch_size", 0))

    def clamp_batch_size(self, limit: int) -> None:
        """Lower ``batch_size`` to the server's ``limit``, warning (:class:`BatchSizeClamped`) when it was above."""
        limit = max(limit, 1)
        if self.batch_size > limit:
            warnings.warn(BatchSizeClamped(
                f"batch size {self.batch_size} is above {self.model}'s max_batch_size {limit} on {self.url}; sending {limit} per request"
            ), stacklevel=2)
            self.batch_size = limit

    async def _models(self) -> str:
        try:
            index = await self._client.get_model_repository_index(**({"as_json": True} if self.protocol == "grpc" else {}))
        except Exception as e:
            return f"(model list unavailable: {_message(e)})"
        models = index.get("models", []) if isinstance(index, dict) else index
        return ", ".join(f"{m.get('name')} ({m.get('state', 'UNKNOWN')})" for m in models) or "no models"

    async def _infer(self, paths: Sequence[str], images: Sequence[bytes]) -> list[Result]:
        """One request; raises the server's error when the request fails as a whole."""
        request = image_input(self._sync, images)
        names = [TEXT, CONFIDENCE, ERROR, FLAG] + ([CHAR_PROBS] if self.char_probs else [])
        outputs = [self._sync.InferRequestedOutput(n) for n in names]
        timeout = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        start = time.perf_counter()
        response = await self._client.infer(self.model, [request], outputs=outputs, **timeout)
        latency = (time.perf_counter() - start) * 1000
        return outcomes(paths, response, self.char_probs, latency)

    async def _batch(self, gate: asyncio.Semaphore, paths: Sequence[str], images: Sequence[bytes]) -> list[Result]:
        async with gate:
            try:
                return await self._infer(paths, images)
            except Exception as e:
                return [Result(p, error=_message(e)) for p in paths]

    async def recognize_async(self, items: Sequence[tuple[str, bytes | Exception]]) -> list[Result]:
        """``(path, encoded image or the error reading it)`` pairs -> one :class:`Result` each, in order."""
        if self._client is None:
            raise RuntimeError("use `async with OcrClient(...)` or recognize()")
        results: list[Result | None] = [None] * len(items)
        sendable = []
        for i, (path, data) in enumerate(items):
            if isinstance(data, Exception):
                results[i] = Result(path, error=str(data))
            elif len(data) > MAX_BYTES:  # the server would refuse it, or its front proxy the whole request
                results[i] = Result(path, error=f"encoded image too large: {len(data)} bytes (limit {MAX_BYTES})")
            else:
                sendable.append(i)
        gate = asyncio.Semaphore(self.concurrency)
        groups = [[sendable[k] for k in c] for c in chunks([len(items[i][1]) for i in sendable], self.batch_size)]
        batches = [self._batch(gate, [items[i][0] for i in c], [items[i][1] for i in c]) for c in groups]
        for chunk, readings in zip(groups, await asyncio.gather(*batches)):
            for i, r in zip(chunk, readings):
                results[i] = r
        return results

    def recognize(self, items: Sequence[tuple[str, bytes | Exception]]) -> list[Result]:
        """Synchronous :meth:`recognize_async` (connects, reads, closes)."""

        async def run() -> list[Result]:
            async with self:
                return await self.recognize_async(items)

        return asyncio.run(run())


def outcomes(paths: Sequence[str], response, char_probs: bool, latency_ms: float) -> list[Result]:
    """One :class:`Result` per row of a ``spin_ocr`` response: a reading, with its flag if any, or the
    row's ``ERROR``."""
    texts = [t.decode("utf-8") for t in response.as_numpy(TEXT).reshape(-1)]
    confidences = response.as_numpy(CONFIDENCE).reshape(-1)
    errors = [e.decode("utf-8") or None for e in response.as_numpy(ERROR).reshape(-1)]
    flags = [f.decode("utf-8") or None for f in response.as_numpy(FLAG).reshape(-1)]
    probs = response.as_numpy(CHAR_PROBS) if char_probs else None
    results = []
    for i, path in enumerate(paths):
        if errors[i] is not None:
            results.append(Result(path, error=errors[i], latency_ms=latency_ms))
            continue
        row = probs[i, : len(texts[i])].tolist() if probs is not None else None
        results.append(Result(path, texts[i], float(confidences[i]), row, flag=flags[i], latency_ms=latency_ms))
    return results


class BatchSizeClamped(UserWarning):
    """The requested batch size was above the server's ``max_batch_size`` and was lowered to it."""
