"""Server vs in-process, paired call by call, for the two targets that compare them.

perf_analyzer and the baselines run minutes apart; on a shared machine the background load changes in
between by more than the 3 ms and 15 % the targets are about. Here each in-process call is immediately
followed by the same work through the server (gRPC, ``tritonclient``), round after round:

- latency: one image in process, the same image as one ``spin_ocr`` request; the overhead is the median
  of the per-pair differences (server - in-process);
- throughput: 32 images as one in-process batch, the same 32 images as 32 concurrent single-image
  requests (what the dynamic batchers must turn back into a batch); images/s of each, ratio of medians.

The Python gRPC client adds its own (small) cost to the server side; that is part of what a user pays.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from tqdm import tqdm

from spinrec_client.ocr import image_input


class GrpcOcr:
    """Minimal blocking ``spin_ocr`` client: bytes -> text."""

    def __init__(self, url: str, connections: int = 32):
        import tritonclient.grpc as grpc

        self.grpc = grpc
        self.clients = [grpc.InferenceServerClient(url) for _ in range(connections)]
        self.pool = ThreadPoolExecutor(connections)

    def _one(self, client, payload: bytes) -> str:
        res = client.infer("spin_ocr", [image_input(self.grpc, [payload])], outputs=[self.grpc.InferRequestedOutput("TEXT")])
        return res.as_numpy("TEXT").reshape(-1)[0].decode()

    def one(self, payload: bytes) -> str:
        return self._one(self.clients[0], payload)

    def many(self, payloads: Sequence[bytes]) -> list[str]:
        futures = [self.pool.submit(self._one, self.clients[i % len(self.clients)], p) for i, p in enumerate(payloads)]
        return [f.result() for f in futures]


def measure(pipe, grpc_url: str, payloads: Sequence[bytes], pairs_b1: int = 24, rounds_b32: int = 4) -> dict:
    """``pipe``: bytes -> texts in process (:meth:`spinrec.pipeline.Pipeline.texts`)."""
    client = GrpcOcr(grpc_url)
    payloads = list(payloads)
    # Same texts both ways (the server runs the same stages on the same weights).
    same = sum(a == b for a, b in zip(pipe(payloads[:32]), client.many(payloads[:32])))
    for p in payloads[:2]:  # warm both paths
        pipe([p]), client.one(p)
    inproc, server = [], []
    for i in tqdm(range(pairs_b1), desc="paired batch 1", leave=False):
        p = payloads[i % len(payloads)]
        first_server = i % 2 == 1  # alternate which goes first
        for which in ((server, inproc) if first_server else (inproc, server)):
            t0 = time.perf_counter()
            client.one(p) if which is server else pipe([p])
            which.append(time.perf_counter() - t0)
    inproc_a, server_a = np.array(inproc), np.array(server)
    b32_in, b32_srv = [], []
    for r in tqdm(range(rounds_b32), desc="paired batch 32", leave=False):
        batch = [payloads[(r * 32 + k) % len(payloads)] for k in range(32)]
        for which in ((b32_srv, b32_in) if r % 2 else (b32_in, b32_srv)):
            t0 = time.perf_counter()
            client.many(batch) if which is b32_srv else pipe(batch)
            which.append(time.perf_counter() - t0)
    return {
        "texts_equal_server_vs_inprocess": f"{same}/32",
        "batch1": {
            "pairs": pairs_b1,
            "inprocess_p50_ms": float(np.median(inproc_a)) * 1e3,
            "server_p50_ms": float(np.median(server_a)) * 1e3,
            "overhead_ms_median_of_pairs": float(np.median(server_a - inproc_a)) * 1e3,
            "overhead_ms_p25_p75": [float(np.percentile(server_a - inproc_a, q)) * 1e3 for q in (25, 75)],
        },
        "batch32": {
            "rounds": rounds_b32,
            "inprocess_images_per_s": 32 / float(np.median(b32_in)),
            "server_images_per_s": 32 / float(np.median(b32_srv)),
            "server_over_inprocess": float(np.median(b32_in)) / float(np.median(b32_srv)),
        },
    }
