"""One way to run the encoder (``image`` ``[N,1,32,100]`` float32 -> ``features`` ``[N,26,512]`` float32,
:mod:`spinrec.contract`) on any runtime: :func:`open_encoder` ``(kind, artifact, threads, precision)``.

Kinds (one module each, imported only when opened, so serving on CPU never loads PyTorch or TensorRT):

- ``torch``: the checkpoint (or a :class:`~spinrec.models.spin.SPIN`) in PyTorch eager, TorchScript or
  ``torch.compile``; the reference every other runtime is compared with;
- ``onnxruntime``, ``openvino``: the exported ONNX graph on CPU, what the Triton encoder model serves
  (:data:`SERVED`); int8 runs the quantized graph of :data:`~spinrec.contract.INT8_FILES` next to it. Both run
  any one-input, one-output graph at fp32, dynamic shapes included: the text detector (``spin_detector``) too;
- ``tensorrt``: a serialized engine (``model.plan``) on the GPU, device buffers from cuda-python.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

KINDS = ("torch", "onnxruntime", "openvino", "tensorrt")
#: The kinds the Triton encoder model offers through its ``runtime`` parameter (CPU, no PyTorch).
SERVED = ("onnxruntime", "openvino")
#: What each kind can run at (TensorRT's precision is fixed when the engine is built).
PRECISIONS = {
    "torch": ("fp32", "bf16"),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
    "tensorrt": ("fp32", "tf32", "fp16"),
}
#: OpenVINO ``OPTIMIZATION_CAPABILITIES`` a reduced precision needs to be worth running.
NEEDS = {"bf16": "BF16", "int8": "INT8"}


class Encoder(Protocol):
    """``images`` float32 ``[N, 1, 32, 100]`` -> ``features`` float32 ``[N, 26, C]`` on the host."""

    name: str  #: the kind (one of :data:`KINDS`)
    requested: str  #: the precision asked for
    precision: str  #: the precision that runs (see :func:`effective_precision`)

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


def effective_precision(precision: str, runtime: str, capabilities: Sequence[str]) -> str:
    """The precision an encoder runs at: ``precision``, or ``fp32`` where OpenVINO reports that this CPU
    cannot run it (``capabilities``: its ``OPTIMIZATION_CAPABILITIES``). bf16 needs AVX512_BF16 or AMX;
    int8 runs on any CPU OpenVINO reports INT8 for (AVX2 and up), fast with VNNI or AMX. ONNX Runtime's
    QDQ graph runs everywhere (MLAS has int8 kernels for every x86-64 level)."""
    if runtime == "openvino" and precision in NEEDS and NEEDS[precision] not in capabilities:
        return "fp32"
    return precision


def _check_precision(kind: str, precision: str) -> None:
    if precision not in PRECISIONS[kind]:
        if precision == "bf16" and kind == "onnxruntime":
            raise ValueError(f"encoder precision {precision} needs runtime openvino (ONNX Runtime runs this graph in fp32 only)")
        raise ValueError(f"encoder precision {precision!r}: {kind} runs {', '.join(PRECISIONS[kind])}")


def int8_artifact(kind: str, graph: str | Path) -> Path:
    """The quantized graph a ``kind`` encoder runs for ``graph`` at int8 (the repository builder writes it
    unless ``--no-int8``; :func:`open_encoder` runs fp32 where it is absent)."""
    from spinrec.contract import INT8_FILES

    return Path(graph).with_name(INT8_FILES[kind])


def open_encoder(kind: str, artifact: Any, threads: int | None = None, precision: str | None = None, **options: Any) -> Encoder:
    """The encoder ``artifact`` on runtime ``kind`` with ``threads`` threads (None: the runtime's default)
    at ``precision`` (default fp32; for tensorrt, what the engine was built at).

    ``artifact``: the ONNX graph (onnxruntime, openvino), the engine (tensorrt; ``precision`` is read from its
    build record), the checkpoint or a SPIN model (torch). ``options`` are the backend's own (see each
    module). Where OpenVINO reports that this CPU lacks a reduced precision, or the int8 graph was not built
    (``--no-int8``), the encoder runs fp32 with a warning instead of failing: ``.precision`` is what runs,
    ``.requested`` what was asked for.
    """
    if kind not in KINDS:
        raise ValueError(f"encoder runtime {kind!r}: expected one of {', '.join(KINDS)}")
    if kind == "tensorrt":
        from spinrec.runtime.tensorrt_encoder import TensorRTEncoder

        return TensorRTEncoder(artifact, precision=precision, **options)
    requested = precision = precision or "fp32"
    _check_precision(kind, precision)
    if kind == "torch":
        from spinrec.runtime.torch_encoder import TorchEncoder

        return TorchEncoder(artifact, threads, precision, **options)
    int8_graph = int8_artifact(kind, artifact)
    if precision == "int8" and not int8_graph.is_file():
        # The served config asks for int8; a repository built without it still serves, in fp32.
        warnings.warn(
            f"encoder precision int8: {int8_graph} is missing (the repository was built with --no-int8, or its checkpoint "
            "failed the builder's INT8 gate: build.json says which); running fp32"
        )
        precision = "fp32"
    encoder: Encoder
    if kind == "onnxruntime":
        from spinrec.runtime.onnxruntime_encoder import OnnxRuntimeEncoder

        encoder = OnnxRuntimeEncoder(artifact, threads, precision, **options)
    else:
        from spinrec.runtime.openvino_encoder import OpenVinoEncoder

        encoder = OpenVinoEncoder(artifact, threads, precision, **options)
        if encoder.precision != precision:
            warnings.warn(f"encoder precision {precision}: this CPU has no {NEEDS[precision]} support in OpenVINO; running fp32")
    encoder.requested = requested
    return encoder
