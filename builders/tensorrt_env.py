"""What the TensorRT builders share: the ``tensorrt`` module (or None), the GPU they build for, the plugin.

TensorRT's module is ``tensorrt`` (NVIDIA's containers, the full wheel) or ``tensorrt_bindings`` (the
bindings-only wheel ``tensorrt-cu12-bindings``, used in the Triton image). A package without ``Builder`` is
tensorrt-stubs' stub folder, not TensorRT. :func:`require_tensorrt` reports the failure where TensorRT is needed,
so that everything else here (and the builders' decisions) imports and runs on machines without it.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from spinrec.contract import PLUGIN_OP, PLUGIN_VERSION

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

MIN_COMPUTE_CAPABILITY = (7, 5)


class BuildError(RuntimeError):
    """A precondition or build step failed; the message says which and what to do."""


@dataclass
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]


def require_tensorrt() -> None:
    if trt is None:
        raise BuildError(
            f"TensorRT's Python package is not importable ({_TRT_IMPORT_ERROR}); "
            "run inside NVIDIA's TensorRT/Triton container or install TensorRT 10 or 11"
        )


def tensorrt_version() -> str:
    require_tensorrt()
    return str(trt.__version__)


def query_gpu() -> GpuInfo:
    """Name and compute capability of GPU 0 from nvidia-smi (present wherever the driver is)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise BuildError("no NVIDIA driver (nvidia-smi not found): TensorRT engines are built on the target GPU")
    done = subprocess.run(
        [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader", "--id=0"], capture_output=True, text=True
    )
    if done.returncode != 0 or "," not in done.stdout:
        raise BuildError(f"nvidia-smi found no GPU: {done.stderr.strip() or done.stdout.strip()}")
    name, cc = (part.strip() for part in done.stdout.strip().split(",", 1))
    major, minor = (int(p) for p in cc.split("."))
    gpu = GpuInfo(name, (major, minor))
    if gpu.compute_capability < MIN_COMPUTE_CAPABILITY:
        raise BuildError(f"{gpu.name} (sm_{major}{minor}) is not supported: the plugin is compiled for sm_75 and newer")
    return gpu


def load_plugin(plugin: Path, logger: trt.ILogger) -> None:
    """Load ``libspin_plugin.so`` (its static registrar adds the creator) and check the creator is there."""
    if not plugin.is_file():
        raise BuildError(f"plugin library {plugin} not found; build it with python -m builders.build_plugin")
    try:
        ctypes.CDLL(str(plugin.resolve()), mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        raise BuildError(f"cannot load {plugin}: {e} (built against another TensorRT/CUDA version?)") from e
    trt.init_libnvinfer_plugins(logger, "")
    if trt.get_plugin_registry().get_creator(PLUGIN_OP, PLUGIN_VERSION, "") is None:
        raise BuildError(f"{plugin} loaded but registered no {PLUGIN_OP} v{PLUGIN_VERSION} creator")
