"""The exported encoder graph compiled by OpenVINO's CPU plugin (:func:`spinrec.runtime.open_encoder` ``"openvino"``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: /proc/cpuinfo flags that make int8 (VNNI, AMX-INT8) and bf16 (AVX512_BF16, AMX-BF16) fast.
FAST_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16")


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
        "flags": [f for f in FAST_FLAGS if f in flags],
    }


class OpenVinoEncoder:
    """``precision`` is set explicitly (``fp32``, or ``bf16`` only when asked): left to its default, the
    plugin may pick bf16 on CPUs that have it, which changes decoded text (perf/README.md). An INT8 IR
    (:data:`~spinrec.contract.INT8_FILES` next to ``graph``) runs with precision ``int8``: its quantized
    operations in int8, the rest in float32. A precision this CPU lacks runs as fp32
    (:func:`spinrec.runtime.effective_precision`). Option ``batch`` compiles for one batch size instead of
    a dynamic one (perf experiments only). Option ``runtime_cache`` bounds the plugin's cache of per-shape kernels
    (``CPU_RUNTIME_CACHE_CAPACITY``, 5,000 entries by default): a graph fed many input shapes (the text detector: every
    photograph size is one) otherwise grows by megabytes per new shape (measured on the detector: 1,248 -> 1,752 MiB
    over 120 shapes by default, flat at 1,306-1,328 MiB with 16).
    """

    name = "openvino"

    def __init__(self, graph: str | Path, threads: int | None = 1, precision: str = "fp32", batch: int | None = None, runtime_cache: int | None = None):
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        from spinrec.runtime import effective_precision, int8_artifact

        core = ov.Core()
        self.requested = precision
        if precision != "fp32":
            precision = effective_precision(precision, self.name, core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        self.precision = precision
        model = core.read_model(str(int8_artifact(self.name, graph) if precision == "int8" else graph))
        if batch is not None:
            model.reshape({model.inputs[0].get_any_name(): [batch, *model.inputs[0].get_partial_shape()[1:].to_shape()]})
        config = {
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            props.num_streams: 1,
            hints.inference_precision: ov.Type.bf16 if precision == "bf16" else ov.Type.f32,
            # Triton runs several processes on the same cores: pinning each pool to cores only makes them collide.
            hints.enable_cpu_pinning: False,
        }
        if threads is not None:
            config[props.inference_num_threads] = threads
        if runtime_cache is not None:
            config["CPU_RUNTIME_CACHE_CAPACITY"] = str(runtime_cache)
        compiled = core.compile_model(model, "CPU", config)
        self._request = compiled.create_infer_request()
        self._output = compiled.outputs[0]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self._request.infer({0: np.ascontiguousarray(images, np.float32)})
        return np.array(self._request.get_tensor(self._output).data, copy=True)
