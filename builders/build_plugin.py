"""Build ``libspin_plugin.so`` (spinrec/kernels/spinBlendPlugin) with CMake.

    python -m builders.build_plugin --build-dir build/spin_plugin [--tensorrt-root DIR] [--compile-only] [--werror]

TensorRT is looked up under ``--tensorrt-root`` (else ``$TENSORRT_ROOT``) in a tarball's layout (``include/``,
``lib/``) and Debian's multiarch layout (``include/<arch>/``, ``lib/<arch>/``: NVIDIA's containers and .deb
packages), then in the system paths. ``--compile-only`` needs only the headers: the library is compiled and
linked without libnvinfer (its one TensorRT symbol, ``getPluginRegistry``, resolves when a process that has
TensorRT loads it), which is how CI checks the plugin against NVIDIA's headers.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import Sequence

from builders.tensorrt_env import BuildError
from spinrec import kernels
from spinrec.kernels import KernelBuildError

TARGET = "spin_plugin"  # CMakeLists.txt's target: lib{TARGET}.so
_ARCH_DIRS = (f"{platform.machine()}-linux-gnu", "x86_64-linux-gnu", "aarch64-linux-gnu")


def _roots(root: str | Path | None) -> list[Path]:
    root = root or os.environ.get("TENSORRT_ROOT")
    return [Path(root)] if root else [Path("/usr"), Path("/usr/local")]


def _candidates(root: Path, top: str) -> list[Path]:
    """``root/top`` then ``root/top/<arch>`` for each multiarch triplet, without repeats."""
    folders = [root / top] + [root / top / arch for arch in _ARCH_DIRS]
    return list(dict.fromkeys(folders))


def find_tensorrt_headers(root: str | Path | None = None) -> Path | None:
    """The folder holding NvInfer.h under ``root`` (or ``$TENSORRT_ROOT``), else under /usr and /usr/local."""
    folders = [f for r in _roots(root) for f in _candidates(r, "include")]
    return next((f for f in folders if (f / "NvInfer.h").is_file()), None)


def find_nvinfer(root: str | Path | None = None) -> Path | None:
    """libnvinfer.so (or its runtime name libnvinfer.so.N) in the same places as the headers."""
    folders = [f for r in _roots(root) for top in ("lib", "lib64") for f in _candidates(r, top)]
    for folder in folders:
        found = sorted(folder.glob("libnvinfer.so*")) if folder.is_dir() else []
        if found:
            return found[0]
    return None


def configure_options(
    tensorrt_root: str | Path | None = None,
    compile_only: bool = False,
    warnings_as_errors: bool = False,
    cuda_archs: str | None = None,
) -> dict[str, str]:
    """The CMake options (``-D``) of the plugin build; TensorRT's headers must be findable first."""
    if find_tensorrt_headers(tensorrt_root) is None:
        raise BuildError("TensorRT headers (NvInfer.h) not found: pass --tensorrt-root or set TENSORRT_ROOT")
    options = {"SPIN_PLUGIN_COMPILE_ONLY": "ON" if compile_only else "OFF"}
    root = tensorrt_root or os.environ.get("TENSORRT_ROOT")
    if root:
        options["TENSORRT_ROOT"] = str(root)
    if warnings_as_errors:
        options["CMAKE_COMPILE_WARNING_AS_ERROR"] = "ON"
    if cuda_archs:
        options["CMAKE_CUDA_ARCHITECTURES"] = cuda_archs
    try:
        options.update(kernels.cuda_options(cuda=True))
    except KernelBuildError as e:
        raise BuildError(f"the plugin needs CUDA: {e}") from e
    return options


def build_plugin(
    build_dir: Path,
    tensorrt_root: str | Path | None = None,
    compile_only: bool = False,
    warnings_as_errors: bool = False,
    cuda_archs: str | None = None,
    jobs: int | None = None,
) -> Path:
    """Configure and build the ``spin_plugin`` target; returns the library."""
    options = configure_options(tensorrt_root, compile_only, warnings_as_errors, cuda_archs)
    try:
        return kernels.cmake_build(build_dir, TARGET, options, jobs)
    except KernelBuildError as e:
        raise BuildError(str(e)) from e


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m builders.build_plugin", description=__doc__.split("\n\n")[0])
    p.add_argument("--build-dir", type=Path, required=True)
    p.add_argument("--tensorrt-root", default=None, help="TensorRT installation (default: $TENSORRT_ROOT, else the system paths)")
    p.add_argument("--compile-only", action="store_true", help="headers only, libnvinfer not linked")
    p.add_argument("--werror", action="store_true", help="warnings fail the build")
    p.add_argument("--cuda-archs", default=None, help="CMAKE_CUDA_ARCHITECTURES (default: every GPU generation, see CMakeLists.txt)")
    p.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (default: one per CPU)")
    args = p.parse_args(argv)
    try:
        library = build_plugin(args.build_dir, args.tensorrt_root, args.compile_only, args.werror, args.cuda_archs, args.jobs)
    except BuildError as e:
        print(f"build_plugin: error: {e}", file=sys.stderr)
        return 2
    print(library)
    return 0


if __name__ == "__main__":
    sys.exit(main())
