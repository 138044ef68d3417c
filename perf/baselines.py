"""In-process baselines on the same weights and request bytes as the server, with the same thread budget.

(a) ``inprocess``: what the ensemble computes, called directly: :func:`spinrec.preprocess.preprocess_batch`
    -> the CPU encoder runtime on the repository's ``model.onnx`` -> :class:`spinrec.decoder.AttentionDecoder`
    (NumPy) -> :func:`spinrec.decoding.decode`. The server can only add to this.
(b) ``eager``: :class:`spinrec.recognizer.Recognizer` on the repository's checkpoint, PyTorch eager, as a
    user would write it.
(c) the FLOP-count limit: encoder FLOP per image (:mod:`perf.flops`) at the 3x3-convolution rate
    measured in this run.
(d) ``paddle_inference``, when Paddle is installed: bytes -> texts through Paddle Inference with oneDNN on the
    same weights, a proxy for PaddleOCR's own recognizer (:mod:`perf.paddle_inference`); skipped with the
    reason recorded otherwise.

Also timed, to say where the time goes: each stage of (a) alone (preprocess, encoder, NumPy decoder:
the served decoder, :class:`spinrec.serving.stages.HeadDecoder`, runs the same AttentionDecoder).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from spinrec import contract


def artifacts(repository: Path) -> dict[str, Path]:
    paths = {
        "onnx": repository / contract.ONNX,
        "checkpoint": repository / contract.CHECKPOINT,
        "charset": repository / contract.CHARSET,
    }
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"model repository not built ({', '.join(missing)} missing): python -m spinrec.repository")
    return paths


class InProcessPipeline:
    """bytes -> texts with the server's stage code, no server. ``runtime``: one the served encoder offers
    (``openvino``, what configs/cpu.pbtxt serves, or ``onnxruntime``), or ``openvino_bf16`` (its bf16
    precision option); ``precision`` is the served encoder's (fp32, bf16, int8: :class:`~spinrec.serving.stages.OnnxEncoder`)."""

    def __init__(self, repository: Path, threads: int = 2, runtime: str = "openvino", stop_at_eos: bool = True, precision: str = "fp32"):
        from spinrec.charset import Charset
        from spinrec.serving.stages import HeadDecoder, OnnxEncoder

        paths = artifacts(repository)
        runtime, precision = ("openvino", "bf16") if runtime == "openvino_bf16" else (runtime, precision)
        self.encoder = OnnxEncoder(paths["onnx"], threads, runtime, precision)
        self.decoder = HeadDecoder(paths["checkpoint"], Charset.from_file(str(paths["charset"])), stop_at_eos)

    def preprocess(self, payloads: Sequence[bytes]) -> np.ndarray:
        from spinrec.preprocess import preprocess_batch

        batch, errors = preprocess_batch(list(payloads))
        if any(errors):
            raise ValueError([str(e) for e in errors if e])
        return batch

    def decode(self, features: np.ndarray) -> list[str]:
        return [r.text for r in self.decoder(features)]

    def __call__(self, payloads: Sequence[bytes]) -> list[str]:
        return self.decode(self.encoder(self.preprocess(payloads)))


def eager_recognizer(repository: Path, threads: int = 2, batch_size: int = 32):
    import torch

    from spinrec import weights
    from spinrec.charset import Charset
    from spinrec.recognizer import Recognizer

    torch.set_num_threads(threads)
    paths = artifacts(repository)
    return Recognizer(weights.load(paths["checkpoint"]), Charset.from_file(str(paths["charset"])), stop_at_eos=True, batch_size=batch_size)


def measure(repository: Path, payloads: Sequence[bytes], threads: int = 2, rounds_b1: int = 16, rounds_b32: int = 4, runtime: str = "openvino") -> dict:
    """Everything in the module docstring, interleaved (see :mod:`perf.timing`); returns a record."""
    import torch

    from perf import paddle_inference
    from perf.flops import conv_probe, model_macs
    from perf.timing import interleaved, one_at_a_time, summary
    from spinrec import weights
    from spinrec.charset import Charset

    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(threads)
    paths = artifacts(repository)
    pipe = InProcessPipeline(repository, threads, runtime)
    rec = eager_recognizer(repository, threads)
    macs = model_macs(weights.load(paths["checkpoint"]))
    flop_per_image = 2 * macs["encoder_mac"]

    payloads = list(payloads)
    if len(payloads) < 32:
        raise ValueError("need at least 32 request payloads")
    texts_inproc = pipe(payloads[:32])
    texts_eager = [r.text for r in rec.recognize(payloads[:32])]
    x32 = pipe.preprocess(payloads[:32])
    f32 = pipe.encoder(x32)

    record: dict = {"threads": threads, "encoder_runtime": runtime, "flop_per_image_encoder": flop_per_image, "macs": macs}
    record["texts_inprocess_equal_eager"] = sum(a == b for a, b in zip(texts_inproc, texts_eager))
    paddle_rec, skipped = paddle_inference.optional(paths["checkpoint"], threads, Charset.from_file(str(paths["charset"])))
    record["paddle_inference"] = {"skipped": skipped} if skipped else paddle_inference.agreement(paddle_rec, rec.model, x32)
    probe, probe_flop, probe_shape = conv_probe(threads=threads)
    record["conv_shape"] = probe_shape

    # Batch 1: one request at a time, cycling through the payloads (different sizes and formats).
    one = one_at_a_time(payloads)

    paddle_b1 = {"paddle_inference": lambda: paddle_rec(one())} if paddle_rec else {}
    paddle_b32 = {"paddle_inference": lambda: paddle_rec(payloads[:32])} if paddle_rec else {}
    t1 = interleaved({
        "inprocess": lambda: pipe(one()),
        "eager": lambda: rec.recognize(one()),
        "encoder_only": lambda: pipe.encoder(x32[:1]),
        **paddle_b1,
    }, rounds_b1, warmup=2, desc="baselines batch 1")
    t32 = interleaved({
        "inprocess": lambda: pipe(payloads[:32]),
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
