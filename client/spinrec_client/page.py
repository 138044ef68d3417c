"""Read whole photographs with the server's ``spin_page`` model: one request per photograph, every word's
quadrilateral, text and confidence back in reading order (:mod:`spinrec_client.contract`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spinrec_client.contract import CONFIDENCE, FLAG, IMAGE, MAX_BYTES, PAGE, PAGE_FLAG, PAGE_OUTPUTS, QUADS, SCORE, TEXT
from spinrec_client.ocr import PROTOCOLS, ClientError, _api, _message


class PageError(ValueError):
    """The server refused this photograph (the message says why); other photographs are unaffected."""


@dataclass
class Word:
    quad: list[list[float]]  #: 4 corners ``[x, y]``, clockwise from the word's top left, in the photograph's pixels
    text: str
    confidence: float  #: the recognizer's
    score: float  #: the detector's
    flag: str = ""  #: empty, or why the reading is doubtful

    def to_dict(self) -> dict:
        return {"quad": self.quad, "text": self.text, "confidence": self.confidence, "score": self.score, **({"flag": self.flag} if self.flag else {})}


@dataclass
class PageResult:
    words: list[Word] = field(default_factory=list)
    #: Empty, or what the server could not do in full (``words_limited: ...``).
    flag: str = ""

    def to_dict(self) -> dict:
        return {"words": [w.to_dict() for w in self.words], **({"flag": self.flag} if self.flag else {})}


class PageClient:
    """Synchronous client of ``spin_page`` (``with PageClient(url, protocol) as c: c.read(data)``);
    ``url`` ``host:port`` (default: Triton's port for ``protocol`` on 127.0.0.1), ``protocol`` ``http`` or ``grpc``."""

    def __init__(self, url: str | None = None, protocol: str = "http", timeout: float = 120.0):
        self.api, _ = _api(protocol)
        self.protocol, self.url, self.timeout = protocol, url or PROTOCOLS[protocol], timeout
        self.client = self.api.InferenceServerClient(self.url, **({"network_timeout": timeout, "connection_timeout": timeout} if protocol == "http" else {}))
        try:
            ready = self.client.is_model_ready(PAGE)
        except Exception as e:
            raise ClientError(f"cannot reach the server at {self.url} over {protocol}: {_message(e)}") from None
        if not ready:
            raise ClientError(f"the server at {self.url} does not serve {PAGE} (built before whole-photograph reading? rebuild the repository)")

    def __enter__(self) -> PageClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def read(self, data: bytes) -> PageResult:
        """One photograph's encoded bytes -> its words; :class:`PageError` when the server refuses it."""
        if len(data) > MAX_BYTES:
            raise PageError(f"encoded image too large: {len(data)} bytes (limit {MAX_BYTES})")
        outputs = [self.api.InferRequestedOutput(name) for name in PAGE_OUTPUTS]
        kwargs = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        try:
            response = self.client.infer(PAGE, [self._input(data)], outputs=outputs, **kwargs)
        except Exception as e:
            raise PageError(_message(e)) from None
        quads = response.as_numpy(QUADS).reshape(-1, 4, 2)
        texts, flags = response.as_numpy(TEXT).reshape(-1), response.as_numpy(FLAG).reshape(-1)
        confidences, scores = response.as_numpy(CONFIDENCE).reshape(-1), response.as_numpy(SCORE).reshape(-1)
        words = [
            Word(np.round(q, 1).tolist(), t.decode("utf-8"), float(c), float(s), f.decode("utf-8"))
            for q, t, c, s, f in zip(quads, texts, confidences, scores, flags)
        ]
        return PageResult(words, response.as_numpy(PAGE_FLAG).reshape(-1)[0].decode("utf-8"))

    def _input(self, data: bytes):
        """``IMAGE`` as ``spin_page`` takes it: one photograph, shape ``[1]`` (no batch dimension)."""
        request = self.api.InferInput(IMAGE, [1], "BYTES")
        request.set_data_from_numpy(np.array([data], dtype=object))
        return request
