"""The encoder and decoder stages as plain array functions; the preprocessor is
:func:`spinrec.preprocess.preprocess_batch` itself.

Each Triton Python model wraps one of these (:mod:`spinrec.serving.triton`); the tests run them in
process too, against :class:`spinrec.recognizer.Recognizer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from spinrec.charset import Charset
from spinrec.decoding import Reading, decode


RUNTIMES = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16")


def onnxruntime_encoder(path: str | Path, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """The encoder graph in an ONNX Runtime session (all graph optimisations) -> ``run(images)``."""
    import onnxruntime as ort

    from spinrec.contract import ENCODER_INPUT as INPUT_NAME, ENCODER_OUTPUT as OUTPUT_NAME

    options = ort.SessionOptions()
    # One process per Triton instance: its thread pool must not grow with the machine's core count.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda images: session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


def openvino_encoder(
    path: str | Path, threads: int = 1, precision: str = "fp32", batch: int | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """The same graph compiled by OpenVINO's CPU plugin -> ``run(images)``.

    ``precision`` is set explicitly (``fp32``, or ``bf16`` only when asked): left to its default, the
    plugin may pick bf16 on CPUs that have it, which changes decoded text (perf/README.md). ``batch``
    compiles for one batch size instead of a dynamic one (perf experiments only).
    """
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    core = ov.Core()
    model = core.read_model(str(path))
    if batch is not None:
        model.reshape({model.inputs[0].get_any_name(): [batch, *model.inputs[0].get_partial_shape()[1:].to_shape()]})
    compiled = core.compile_model(model, "CPU", {
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        props.inference_num_threads: threads,
        props.num_streams: 1,
        hints.inference_precision: {"fp32": ov.Type.f32, "bf16": ov.Type.bf16}[precision],
        # Triton runs several processes on the same cores: pinning each pool to cores only makes them collide.
        hints.enable_cpu_pinning: False,
    })  # fmt: skip
    request = compiled.create_infer_request()
    output = compiled.outputs[0]

    def run(images: np.ndarray) -> np.ndarray:
        request.infer({0: images})
        return np.array(request.get_tensor(output).data, copy=True)

    return run


class OnnxEncoder:
    """The exported encoder graph (``image`` ``[B,1,32,100]`` -> ``features`` ``[B,26,512]``), run by
    ONNX Runtime or OpenVINO (``runtime``, one of :data:`RUNTIMES`). ``precision`` is ``fp32``, or
    ``bf16`` with OpenVINO on CPUs with bf16 instructions: faster, but it changes some decoded texts, so
    it is never chosen unless asked for (perf/README.md has the measured trade)."""

    def __init__(self, path: str | Path, threads: int = 1, runtime: str = "onnxruntime", precision: str = "fp32"):
        if runtime not in RUNTIMES:
            raise ValueError(f"encoder runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
        if precision not in PRECISIONS:
            raise ValueError(f"encoder precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        if precision != "fp32" and runtime != "openvino":
            raise ValueError(f"encoder precision {precision} needs runtime openvino (ONNX Runtime runs this graph in fp32 only)")
        self.runtime, self.precision = runtime, precision
        self._run = onnxruntime_encoder(path, threads) if runtime == "onnxruntime" else openvino_encoder(path, threads, precision)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self._run(np.ascontiguousarray(images, np.float32))


def cupy_module():
    """CuPy, or a ValueError saying how to get it (only the GPU decoder needs it)."""
    try:
        import cupy
    except ImportError:
        raise ValueError("device 'gpu' needs CuPy: pip install cupy-cuda12x (the spinrec[gpu] extra)") from None
    return cupy


class HeadDecoder:
    """Features ``[B,26,C]`` -> one :class:`Reading` per row, the whole batch in one greedy loop.

    Runs :class:`spinrec.decoder.AttentionDecoder`, so decoder processes never load PyTorch; only the
    ``head.*`` tensors of the checkpoint are read. ``device="cpu"`` computes with NumPy; ``"gpu"`` with
    CuPy on the current CUDA device, taking CuPy arrays (e.g. from DLPack) or host arrays; only the
    ``[B, S, classes]`` probabilities come back to the host.
    """

    def __init__(self, checkpoint: str | Path, charset: Charset | None = None, stop_at_eos: bool = True, device: str = "cpu"):
        from spinrec.decoder import AttentionDecoder

        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be cpu or gpu, got {device!r}")
        self.xp = cupy_module() if device == "gpu" else np
        try:
            self.decoder = AttentionDecoder.from_checkpoint(checkpoint, xp=self.xp)
        except KeyError as e:
            raise ValueError(f"{checkpoint}: {e.args[0]}") from None
        self.charset = charset or Charset()
        classes = self.decoder.w_gen.shape[1]
        if self.charset.num_classes != classes:
            raise ValueError(f"charset has {self.charset.num_classes} classes but the head of {checkpoint} predicts {classes}")
        self.stop_at_eos = stop_at_eos

    def __call__(self, features) -> list[Reading]:
        probs = self.decoder(self.xp.asarray(features), self.stop_at_eos)
        if self.xp is not np:
            probs = probs.get()
        return decode(probs, self.charset, self.stop_at_eos)


def pack_readings(readings: Sequence[Reading]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Readings -> ``TEXT`` (object ``[N,1]``, UTF-8), ``CONFIDENCE`` (float32 ``[N,1]``) and ``CHAR_PROBS``
    (float32 ``[N,L]``): row ``i`` holds ``len(text_i)`` probabilities, then zeros up to ``L``, the longest
    text (at least 1, so the tensor is never empty)."""
    n = len(readings)
    text = np.array([[r.text.encode("utf-8")] for r in readings], dtype=object).reshape(n, 1)
    confidence = np.array([[r.confidence] for r in readings], dtype=np.float32).reshape(n, 1)
    width = max([1] + [len(r.char_probs) for r in readings])
    char_probs = np.zeros((n, width), dtype=np.float32)
    for i, r in enumerate(readings):
        char_probs[i, : len(r.char_probs)] = r.char_probs
    return text, confidence, char_probs
