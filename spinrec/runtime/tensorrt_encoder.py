"""A serialized TensorRT engine on host arrays (:func:`spinrec.runtime.open_encoder` ``"tensorrt"``): device
buffers and an explicit CUDA stream from cuda-python.

Why cuda-python (``cuda-bindings``) and not PyTorch or pycuda: the GPU image's PyTorch is CPU-only, so it cannot
hold device memory; pycuda is published as source only and compiles against the CUDA headers and driver at
install time, which the Triton image does not carry; cuda-python installs as a wheel, needs nothing but the
driver at run time, and is what NVIDIA's TensorRT Python samples moved to (``samples/python/common_runtime.py``).

TensorRT's module is ``tensorrt`` (NVIDIA's containers, the full wheel) or ``tensorrt_bindings`` (the
bindings-only wheel ``tensorrt-cu12-bindings``, used in the Triton image). A package without ``Builder`` is
tensorrt-stubs' stub folder, not TensorRT. Importing this module never fails for want of TensorRT:
:func:`require_tensorrt` reports it where TensorRT is needed (the engine builders in ``builders/`` share it).
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from typing import Any

import numpy as np

from spinrec.contract import ENCODER_INPUT, ENCODER_OUTPUT, PLUGIN_OP, PLUGIN_VERSION

_TRT_IMPORT_ERROR: Exception | None = None
try:
    import tensorrt as trt
except (ImportError, OSError) as e:
    trt = None  # type: ignore[assignment]
    _TRT_IMPORT_ERROR = e
if trt is None or not hasattr(trt, "Builder"):
    try:
        import tensorrt_bindings as trt  # type: ignore[no-redef]
    except (ImportError, OSError) as e:
        trt, _TRT_IMPORT_ERROR = None, _TRT_IMPORT_ERROR or e  # type: ignore[assignment]
if trt is not None and not hasattr(trt, "Builder"):
    trt, _TRT_IMPORT_ERROR = None, ImportError("only TensorRT's type stubs are installed")  # type: ignore[assignment]


class TensorRTError(RuntimeError):
    """TensorRT, CUDA or the engine is missing or failed; the message says which and what to do."""


def require_tensorrt() -> None:
    if trt is None:
        raise TensorRTError(
            f"TensorRT's Python package is not importable ({_TRT_IMPORT_ERROR}); "
            "run inside NVIDIA's TensorRT/Triton container or install TensorRT 10 or 11"
        )


def load_plugin(plugin: Path, logger: trt.ILogger) -> None:
    """Load ``libspin_plugin.so`` (its static registrar adds the creator) and check the creator is there."""
    if not plugin.is_file():
        raise TensorRTError(f"plugin library {plugin} not found; build it with python -m builders.build_plugin")
    try:
        ctypes.CDLL(str(plugin.resolve()), mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        raise TensorRTError(f"cannot load {plugin}: {e} (built against another TensorRT/CUDA version?)") from e
    trt.init_libnvinfer_plugins(logger, "")
    if trt.get_plugin_registry().get_creator(PLUGIN_OP, PLUGIN_VERSION, "") is None:
        raise TensorRTError(f"{plugin} loaded but registered no {PLUGIN_OP} v{PLUGIN_VERSION} creator")


def record_path(plan: Path) -> Path:
    """The JSON record beside an engine: how it was built (``build``: precision, profile...), from which graph
    and plugin, and its verification."""
    return plan.with_name(plan.name + ".json")


def read_record(plan: Path) -> dict[str, Any]:
    try:
        return json.loads(record_path(plan).read_text())
    except (OSError, ValueError):
        return {}


def cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime`` from 12.6 on, ``cuda.cudart`` before)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # type: ignore[no-redef]
        except ImportError as e:
            raise TensorRTError(f"running an engine needs cuda-python for device buffers ({e}): pip install cuda-python") from e
    return runtime


def check(cuda: Any, result: tuple, what: str) -> Any:
    """Unpack a cuda-python call's ``(error, *values)`` and raise on an error."""
    err, *values = result
    if err != cuda.cudaError_t.cudaSuccess:
        _, name = cuda.cudaGetErrorName(err)
        raise TensorRTError(f"{what} failed: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else values


class EngineRunner:
    """One engine, one execution context, one CUDA stream of its own (never the legacy default stream, which
    would serialize against every other stream on the device and make TensorRT synchronize around it)."""

    def __init__(self, plan: Path, plugin: Path | None):
        require_tensorrt()
        self.cudart = cudart()
        self.logger = trt.Logger(trt.Logger.WARNING)
        if plugin is not None:
            load_plugin(plugin, self.logger)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise TensorRTError(f"cannot deserialize {plan} (other TensorRT version or GPU, or plugin missing)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        try:
            self.stream = check(self.cudart, self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        except RuntimeError as e:  # cuda-python's way of saying the driver (libcuda) is missing
            raise TensorRTError(f"no usable CUDA driver: {e}") from e

    def close(self) -> None:
        if self.stream is not None:
            check(self.cudart, self.cudart.cudaStreamDestroy(self.stream), "cudaStreamDestroy")
            self.stream = None

    def __enter__(self) -> EngineRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _dtype(self, name: str) -> np.dtype:
        return np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Host arrays by input name -> host arrays by output name (float32 in, the engine's I/O types)."""
        cuda = self.cudart
        if set(feeds) != set(self.inputs):
            raise TensorRTError(f"engine inputs are {self.inputs}, got {sorted(feeds)}")
        host_in = {n: np.ascontiguousarray(a, dtype=self._dtype(n)) for n, a in feeds.items()}
        device: list[int] = []
        h2d, d2h = cuda.cudaMemcpyKind.cudaMemcpyHostToDevice, cuda.cudaMemcpyKind.cudaMemcpyDeviceToHost
        try:
            for name, array in host_in.items():
                if not self.context.set_input_shape(name, array.shape):
                    raise TensorRTError(f"{name} shape {array.shape} is outside the engine's profile")
                ptr = check(cuda, cuda.cudaMalloc(max(array.nbytes, 1)), "cudaMalloc")
                device.append(ptr)
                check(cuda, cuda.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, h2d, self.stream), "copy to device")
                self.context.set_tensor_address(name, int(ptr))
            host_out = {}
            for name in self.outputs:
                dims = self.context.get_tensor_shape(name)
                host_out[name] = np.empty(tuple(dims[i] for i in range(len(dims))), dtype=self._dtype(name))
                ptr = check(cuda, cuda.cudaMalloc(max(host_out[name].nbytes, 1)), "cudaMalloc")
                device.append(ptr)
                self.context.set_tensor_address(name, int(ptr))
            if not self.context.execute_async_v3(int(self.stream)):
                raise TensorRTError("engine execution failed (see the TensorRT log above)")
            for name, ptr in zip(self.outputs, device[len(host_in) :]):
                out = host_out[name]
                check(cuda, cuda.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes, d2h, self.stream), "copy to host")
            check(cuda, cuda.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        finally:
            for ptr in device:
                cuda.cudaFree(ptr)
        return host_out


class TensorRTEncoder:
    """The encoder engine (``model.plan``) as an :class:`~spinrec.runtime.Encoder`. ``plugin``: the
    ``SpinBlend`` plugin library a plugin engine needs (default: the one its build record names);
    ``precision``: what the engine was built at, checked against its build record where there is one."""

    name = "tensorrt"

    def __init__(self, plan: str | Path, plugin: str | Path | None = None, precision: str | None = None):
        plan = Path(plan)
        record = read_record(plan)
        built = record.get("build", {}).get("precision") if isinstance(record.get("build"), dict) else None
        if precision is not None and built is not None and precision != built:
            raise TensorRTError(f"{plan} was built at {built}, not {precision}")
        self.requested = self.precision = precision or built or "unknown"
        if plugin is None and record.get("plugin"):
            plugin = record["plugin"]
        self.runner = EngineRunner(plan, Path(plugin) if plugin is not None else None)

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> TensorRTEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.runner({ENCODER_INPUT: np.ascontiguousarray(images, np.float32)})[ENCODER_OUTPUT]
