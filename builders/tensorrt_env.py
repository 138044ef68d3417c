"""What the TensorRT builders share: the ``tensorrt`` module (or None), the GPU they build for, the plugin loader.

TensorRT itself (``trt``, None where it is missing), :func:`require_tensorrt` and :func:`load_plugin` come from the
package's TensorRT encoder runtime (:mod:`spinrec.runtime.tensorrt_encoder`), which runs the engines these build;
:class:`BuildError` is one of its errors, so one ``except`` catches both.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from spinrec.runtime.tensorrt_encoder import TensorRTError, load_plugin, require_tensorrt, trt  # noqa: F401 (shared with the builders)

MIN_COMPUTE_CAPABILITY = (7, 5)


class BuildError(TensorRTError):
    """A precondition or build step failed; the message says which and what to do."""


@dataclass
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]


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
