"""The encoder and decoder stages as plain array functions; the preprocessor is
:func:`spinrec.preprocess.preprocess_batch` itself.

Each Triton Python model wraps one of these (:mod:`spinrec.serving.triton`); the tests run them in
process too, against :class:`spinrec.recognizer.Recognizer`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from spinrec.charset import Charset
from spinrec.contract import INT8_FILES
from spinrec.decoding import Reading, decode


RUNTIMES = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
#: OpenVINO ``OPTIMIZATION_CAPABILITIES`` a reduced precision needs to be worth running.
_NEEDS = {"bf16": "BF16", "int8": "INT8"}
#: /proc/cpuinfo flags that make int8 (VNNI, AMX-INT8) and bf16 (AVX512_BF16, AMX-BF16) fast.
_FAST_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16")


def cpu_capabilities() -> dict:
    """This CPU's name, OpenVINO's optimization capabilities and the int8/bf16 instruction flags it has."""
    import openvino as ov

    core = ov.Core()
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    return {
        "name": core.get_property("CPU", "FULL_DEVICE_NAME"),
        "openvino": list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
        "flags": [f for f in _FAST_FLAGS if f in flags],
    }


def effective_precision(precision: str, runtime: str, capabilities: Sequence[str]) -> str:
    """The precision an encoder runs at: ``precision``, or ``fp32`` where OpenVINO reports that this CPU
    cannot run it (``capabilities``: its ``OPTIMIZATION_CAPABILITIES``). bf16 needs AVX512_BF16 or AMX;
    int8 runs on any CPU OpenVINO reports INT8 for (AVX2 and up), fast with VNNI or AMX. ONNX Runtime's
    QDQ graph runs everywhere (MLAS has int8 kernels for every x86-64 level)."""
    if runtime == "openvino" and precision in _NEEDS and _NEEDS[precision] not in capabilities:
        return "fp32"
    return precision


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
    plugin may pick bf16 on CPUs that have it, which changes decoded text (perf/README.md). An INT8 IR
    (``path`` from :data:`INT8_FILES`) runs with precision ``int8``: its quantized operations in int8, the
    rest in float32. ``batch`` compiles for one batch size instead of a dynamic one (perf experiments only).
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
        hints.inference_precision: ov.Type.bf16 if precision == "bf16" else ov.Type.f32,
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
    ONNX Runtime or OpenVINO (``runtime``, one of :data:`RUNTIMES`) at ``precision`` (one of
    :data:`PRECISIONS`): ``fp32``; ``bf16`` (OpenVINO only); ``int8``, the quantized graph of
    :data:`INT8_FILES` next to ``path``. Reduced precisions are faster but change some decoded texts, so
    they are chosen only under the accuracy gate (``python -m spinrec.quantize gate``). Where OpenVINO
    reports that the CPU lacks a precision, or the int8 graph was not built, the encoder runs fp32 with a
    warning instead of failing;
    :attr:`precision` is what runs, :attr:`requested` what was asked for.
    """

    def __init__(self, path: str | Path, threads: int = 1, runtime: str = "onnxruntime", precision: str = "fp32"):
        if runtime not in RUNTIMES:
            raise ValueError(f"encoder runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
        if precision not in PRECISIONS:
            raise ValueError(f"encoder precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        if precision == "bf16" and runtime != "openvino":
            raise ValueError(f"encoder precision {precision} needs runtime openvino (ONNX Runtime runs this graph in fp32 only)")
        self.runtime, self.requested = runtime, precision
        if runtime == "openvino" and precision != "fp32":
            import openvino as ov

            precision = effective_precision(precision, runtime, ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
            if precision != self.requested:
                warnings.warn(f"encoder precision {self.requested}: this CPU has no {_NEEDS[self.requested]} support in OpenVINO; running fp32")
        if precision == "int8":
            int8_path = Path(path).with_name(INT8_FILES[runtime])
            if int8_path.is_file():
                path = int8_path
            else:  # a repository built with --no-int8 still serves the configured default, in fp32
                warnings.warn(f"encoder precision int8: {int8_path} is missing (built with --no-int8); running fp32")
                precision = "fp32"
        self.precision = precision
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
