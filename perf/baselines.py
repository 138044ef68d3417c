"""In-process baselines on the same weights and request bytes as the server, with the same thread budget.

(a) ``inprocess``: what the ensemble computes, called directly: :class:`spinrec.pipeline.Pipeline` with the
    CPU encoder runtime on the repository's ``model.onnx`` and the NumPy decoder. The server can only add to this.
(b) ``eager``: the same :class:`~spinrec.pipeline.Pipeline` on PyTorch eager (the repository's checkpoint), as a
    user would run it.
(c) the FLOP-count limit: encoder FLOP per image (:mod:`perf.flops`) at the 3x3-convolution rate
    measured in this run.
(d) ``paddle_inference``, when Paddle is installed: bytes -> texts through Paddle Inference with oneDNN on the
    same weights, a proxy for PaddleOCR's own recognizer (:mod:`perf.paddle_inference`); skipped with the
    reason recorded otherwise.

Also timed, to say where the time goes: each stage of (a) alone (preprocess, encoder, NumPy decoder:
the served decoder, :class:`spinrec.decoder.HeadDecoder`, is the pipeline's).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from spinrec import contract
from spinrec.pipeline import Pipeline


def inprocess(repository: Path, threads: int = 2, runtime: str = "openvino", precision: str = "fp32") -> Pipeline:
    """(a): bytes -> texts with the server's stage code, no server (:meth:`Pipeline.from_repository`).
    ``runtime``: one the served encoder offers (``openvino``, what configs/cpu.pbtxt serves, or
    ``onnxruntime``), or ``openvino_bf16`` (its bf16 precision option)."""
    runtime, precision = ("openvino", "bf16") if runtime == "openvino_bf16" else (runtime, precision)
    return Pipeline.from_repository(repository, runtime, threads=threads, precision=precision)


def measure(repository: Path, payloads: Sequence[bytes], threads: int = 2, rounds_b1: int = 16, rounds_b32: int = 4, runtime: str = "openvino") -> dict:
    """Everything in the module docstring, interleaved (see :mod:`perf.timing`); returns a record."""
    from perf import paddle_inference
    from perf.flops import conv_probe, model_macs
    from perf.timing import interleaved, one_at_a_time, summary
    from spinrec.charset import Charset

    warnings.filterwarnings("ignore", category=UserWarning)
    pipe = inprocess(repository, threads, runtime)
    rec = Pipeline.from_repository(repository, "torch", threads=threads)
    checkpoint = repository / contract.CHECKPOINT
    macs = model_macs(rec.encoder.model)  # type: ignore[attr-defined]
    flop_per_image = 2 * macs["encoder_mac"]

    payloads = list(payloads)
    if len(payloads) < 32:
        raise ValueError("need at least 32 request payloads")
    texts_inproc = pipe.texts(payloads[:32])
    texts_eager = [r.text for r in rec.recognize(payloads[:32])]
    x32 = pipe.preprocess(payloads[:32])
    f32 = pipe.encoder(x32)

    record: dict = {"threads": threads, "encoder_runtime": runtime, "flop_per_image_encoder": flop_per_image, "macs": macs}
    record["texts_inprocess_equal_eager"] = sum(a == b for a, b in zip(texts_inproc, texts_eager))
    paddle_rec, skipped = paddle_inference.optional(checkpoint, threads, Charset.from_file(str(repository / contract.CHARSET)))
    record["paddle_inference"] = {"skipped": skipped} if skipped else paddle_inference.agreement(paddle_rec, rec.encoder.model, x32)  # type: ignore[attr-defined]
    probe, probe_flop, probe_shape = conv_probe(threads=threads)
    record["conv_shape"] = probe_shape

    # Batch 1: one request at a time, cycling through the payloads (different sizes and formats).
    one = one_at_a_time(payloads)

    paddle_b1 = {"paddle_inference": lambda: paddle_rec(one())} if paddle_rec else {}
    paddle_b32 = {"paddle_inference": lambda: paddle_rec(payloads[:32])} if paddle_rec else {}
    t1 = interleaved({
        "inprocess": lambda: pipe.texts(one()),
        "eager": lambda: rec.recognize(one()),
        "encoder_only": lambda: pipe.encoder(x32[:1]),
        **paddle_b1,
    }, rounds_b1, warmup=2, desc="baselines batch 1")
    t32 = interleaved({
        "inprocess": lambda: pipe.texts(payloads[:32]),
        "eager": lambda: rec.recognize(payloads[:32]),
        "encoder_only": lambda: pipe.encoder(x32),
        "preprocess_only": lambda: pipe.preprocess(payloads[:32]),
        "decoder_numpy": lambda: pipe.decode(f32),
        # The convolution that sets the FLOP limit, in the same rounds: same background load.
        "conv3x3": probe,
        **paddle_b32,
    }, rounds_b32, warmup=1, desc="baselines batch 32")
    t1_dec = interleaved({
        "decoder_numpy": lambda: pipe.decode(f32[:1]),
        "preprocess_only": lambda: pipe.preprocess(one()),
    }, rounds_b1, warmup=1, desc="stages batch 1")
    gflops = probe_flop / float(np.median(t32.pop("conv3x3"))) / 1e9
    record["conv_gflops"] = gflops
    record["flop_limit_images_per_s"] = gflops * 1e9 / flop_per_image
    record["batch1"] = {k: summary(v, 1) for k, v in {**t1, **t1_dec}.items()}
    record["batch32"] = {k: summary(v, 32) for k, v in t32.items()}
    lim = record["flop_limit_images_per_s"]
    record["share_of_flop_limit"] = {
        "encoder_only_b32": record["batch32"]["encoder_only"]["items_per_s"] / lim,
        "inprocess_b32": record["batch32"]["inprocess"]["items_per_s"] / lim,
        "eager_b32": record["batch32"]["eager"]["items_per_s"] / lim,
    }
    return record
