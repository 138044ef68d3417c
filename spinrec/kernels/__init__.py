"""The SpinBlend kernel and TensorRT plugin sources (``spinBlendPlugin/``) and their one build, CMake.

``spinBlendPlugin/CMakeLists.txt`` has two targets: ``spin_blend`` (``libspin_blend.so``: the CPU reference,
plus the CUDA kernel when CUDA is enabled; :mod:`spinrec.runtime.ort_spin_blend` loads it for ONNX Runtime) and
``spin_plugin`` (``libspin_plugin.so``, the TensorRT plugin; ``builders/build_plugin.py``). :func:`cmake_build`
is how both are built from Python.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping

from tqdm import tqdm

from spinrec.contract import KERNEL_DIR


class KernelBuildError(RuntimeError):
    """CMake, the CUDA toolkit or a build step is missing or failed; the message says which."""


def cuda_home() -> Path | None:
    """The CUDA toolkit folder holding include/cuda_fp16.h: $CUDA_HOME, $CUDA_PATH, the one of nvcc on PATH
    (through wrapper scripts: then /usr/local/cuda*), newest first."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parents[1]))
    candidates += [str(p) for p in sorted(Path("/usr/local").glob("cuda*"), reverse=True)]
    return next((Path(c) for c in candidates if c and Path(c, "include", "cuda_fp16.h").is_file()), None)


def nvcc_path() -> Path | None:
    """nvcc of :func:`cuda_home`, else the one on PATH, or None."""
    home = cuda_home()
    if home is not None and (home / "bin" / "nvcc").is_file():
        return home / "bin" / "nvcc"
    found = shutil.which("nvcc")
    return Path(found) if found else None


def cuda_options(cuda: bool) -> dict[str, str]:
    """The CUDA part of a configuration, found here so that CMake uses the toolkit :func:`cuda_home` names:
    with ``cuda``, nvcc (the kernel); without, the host compiler alone, with the toolkit's headers
    (``cuda_fp16.h`` is part of the reference's interface)."""
    home = cuda_home()
    if not cuda:
        if home is None:
            raise KernelBuildError("CUDA headers not found (set CUDA_HOME): the reference needs cuda_fp16.h")
        return {"SPIN_WITH_CUDA": "OFF", "CUDAToolkit_ROOT": str(home)}
    nvcc = nvcc_path()
    if nvcc is None:
        raise KernelBuildError("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    return {"SPIN_WITH_CUDA": "ON", "CMAKE_CUDA_COMPILER": str(nvcc)}


def _cmake() -> str:
    cmake = shutil.which("cmake")
    if cmake is None:
        raise KernelBuildError(f"cmake not found on PATH: it builds the kernel library and the plugin from {KERNEL_DIR}")
    return cmake


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise KernelBuildError(f"{' '.join(cmd)} failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
    return done.stdout


def cmake_configure(build_dir: str | Path, options: Mapping[str, str]) -> str:
    """Configure ``spinBlendPlugin/`` into ``build_dir`` with ``-D`` ``options``; returns CMake's output."""
    return _run([_cmake(), "-S", str(KERNEL_DIR), "-B", str(build_dir), *(f"-D{k}={v}" for k, v in options.items())])


def cmake_build(build_dir: str | Path, target: str, options: Mapping[str, str], jobs: int | None = None) -> Path:
    """Configure (:func:`cmake_configure`) and build ``target``; returns its library, ``build_dir/lib<target>.so``."""
    build = [_cmake(), "--build", str(build_dir), "--target", target, "-j", str(jobs or os.cpu_count() or 2)]
    with tqdm(total=2, desc=target, file=sys.stderr) as progress:
        cmake_configure(build_dir, options)
        progress.update()
        _run(build)
        progress.update()
    return Path(build_dir) / f"lib{target}.so"
