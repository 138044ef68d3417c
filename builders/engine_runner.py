"""Run a serialized TensorRT engine on host arrays: device buffers and an explicit CUDA stream from cuda-python.

Why cuda-python (``cuda-bindings``) and not PyTorch or pycuda: the GPU image's PyTorch is CPU-only, so it cannot
hold device memory; pycuda is published as source only and compiles against the CUDA headers and driver at
install time, which the Triton image does not carry; cuda-python installs as a wheel, needs nothing but the
driver at run time, and is what NVIDIA's TensorRT Python samples moved to (``samples/python/common_runtime.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from builders.tensorrt_env import BuildError, load_plugin, require_tensorrt, trt


def _cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime`` from 12.6 on, ``cuda.cudart`` before)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # type: ignore[no-redef]
        except ImportError as e:
            raise BuildError(f"running an engine needs cuda-python for device buffers ({e}): pip install cuda-python") from e
    return runtime


def check(cudart: Any, result: tuple, what: str) -> Any:
    """Unpack a cuda-python call's ``(error, *values)`` and raise on an error."""
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        _, name = cudart.cudaGetErrorName(err)
        raise BuildError(f"{what} failed: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else values


class EngineRunner:
    """One engine, one execution context, one CUDA stream of its own (never the legacy default stream, which
    would serialize against every other stream on the device and make TensorRT synchronize around it)."""

    def __init__(self, plan: Path, plugin: Path | None):
        require_tensorrt()
        self.cudart = _cudart()
        self.logger = trt.Logger(trt.Logger.WARNING)
        if plugin is not None:
            load_plugin(plugin, self.logger)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise BuildError(f"cannot deserialize {plan} (other TensorRT version or GPU, or plugin missing)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        try:
            self.stream = check(self.cudart, self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        except RuntimeError as e:  # cuda-python's way of saying the driver (libcuda) is missing
            raise BuildError(f"no usable CUDA driver: {e}") from e

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
        cudart = self.cudart
        if set(feeds) != set(self.inputs):
            raise BuildError(f"engine inputs are {self.inputs}, got {sorted(feeds)}")
        host_in = {n: np.ascontiguousarray(a, dtype=self._dtype(n)) for n, a in feeds.items()}
        device: list[int] = []
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        try:
            for name, array in host_in.items():
                if not self.context.set_input_shape(name, array.shape):
                    raise BuildError(f"{name} shape {array.shape} is outside the engine's profile")
                ptr = check(cudart, cudart.cudaMalloc(max(array.nbytes, 1)), "cudaMalloc")
                device.append(ptr)
                check(cudart, cudart.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, h2d, self.stream), "copy to device")
                self.context.set_tensor_address(name, int(ptr))
            host_out = {}
            for name in self.outputs:
                dims = self.context.get_tensor_shape(name)
                host_out[name] = np.empty(tuple(dims[i] for i in range(len(dims))), dtype=self._dtype(name))
                ptr = check(cudart, cudart.cudaMalloc(max(host_out[name].nbytes, 1)), "cudaMalloc")
                device.append(ptr)
                self.context.set_tensor_address(name, int(ptr))
            if not self.context.execute_async_v3(int(self.stream)):
                raise BuildError("engine execution failed (see the TensorRT log above)")
            for name, ptr in zip(self.outputs, device[len(host_in) :]):
                out = host_out[name]
                check(cudart, cudart.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes, d2h, self.stream), "copy to host")
            check(cudart, cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        finally:
            for ptr in device:
                cudart.cudaFree(ptr)
        return host_out
