"""The exported encoder graph in an ONNX Runtime CPU session (:func:`spinrec.runtime.open_encoder` ``"onnxruntime"``).

(Named ``*_encoder`` so that the module never shadows the ``onnxruntime`` package for a script run beside it.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: ``optimization`` -> ONNX Runtime's GraphOptimizationLevel member.
LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


class OnnxRuntimeEncoder:
    """``precision`` fp32, or int8: the QDQ graph of :data:`~spinrec.contract.INT8_FILES` next to ``graph``.

    Options: ``optimization`` (one of :data:`LEVELS`, ``all`` as served); ``spinning=False`` stops idle pool
    threads busy-waiting after each run (they take CPU from the other stages' processes); ``blend_reference``
    runs a plugin graph's ``SpinBlend`` nodes with the kernel's host reference (:mod:`spinrec.runtime.ort_spin_blend`,
    which needs the ``torch`` extra's onnx and onnxruntime-extensions).
    """

    name = "onnxruntime"

    def __init__(self, graph: str | Path, threads: int | None = 1, precision: str = "fp32", optimization: str = "all",
                 spinning: bool = True, blend_reference: bool = False):  # fmt: skip
        import onnxruntime as ort

        from spinrec.runtime import int8_artifact

        if optimization not in LEVELS:
            raise ValueError(f"ONNX Runtime optimization {optimization!r}: expected one of {', '.join(LEVELS)}")
        self.requested = self.precision = precision
        path = graph if precision == "fp32" else int8_artifact(self.name, graph)
        if blend_reference:
            from spinrec.runtime.ort_spin_blend import session

            self.session = session(path, threads=threads)
            return
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[optimization])
        # One process per Triton instance: its thread pool must not grow with the machine's core count.
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        # The graph's own names: the encoder's are the contract's, and the text detector's graph runs here too.
        (output,), (input_,) = self.session.get_outputs(), self.session.get_inputs()
        return self.session.run([output.name], {input_.name: np.ascontiguousarray(images, np.float32)})[0]
