"""CMake builds of spinrec/kernels/spinBlendPlugin.

Everywhere: the ``spin_blend`` target (kernel + CPU reference, no TensorRT) configures, builds and computes the
op with plain CMake commands; a configuration without CUDA refuses the plugin and says why. Wherever NVIDIA's published TensorRT headers sit beside the repository (``../shared/third_party``, as in
CI): the plugin compiles against them with warnings as errors (compile-only, no libnvinfer), needs exactly one
symbol from TensorRT at load time (``getPluginRegistry``) and links one CUDA runtime, the shared one. Where
TensorRT itself is installed: the plugin links libnvinfer and registers the SpinBlend creator with the fields
the ONNX node carries.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from builders import build_plugin
from builders.build_plugin import find_nvinfer, find_tensorrt_headers
from spinrec import kernels
from spinrec.contract import KERNEL_DIR
from spinrec.kernels import KernelBuildError, nvcc_path
from spinrec.runtime.ort_spin_blend import BlendLibrary
from builders import tensorrt_env
from test_engine_build import plugin_library  # noqa: F401  (session fixture shared with the engine tests)
from test_plugin_kernel import GPU_ARCHS, SPIN, TOL, random_inputs, torch_blend


def test_cmake_builds_the_kernel_library_without_tensorrt(tmp_path):
    if shutil.which("cmake") is None or nvcc_path() is None:
        pytest.skip("needs cmake and nvcc")
    build = tmp_path / "build"
    configure = ["cmake", "-S", str(KERNEL_DIR), "-B", str(build), "-DSPIN_BUILD_PLUGIN=OFF",
                 f"-DCMAKE_CUDA_COMPILER={nvcc_path()}", "-DCMAKE_CUDA_ARCHITECTURES=75"]  # fmt: skip
    for cmd in (configure, ["cmake", "--build", str(build), "-j", "2"]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    library = BlendLibrary(build / "libspin_blend.so")
    assert library.has_kernel
    inputs = random_inputs(np.random.default_rng(0), 2)
    np.testing.assert_allclose(library.reference(**inputs, exponents=SPIN, eps=1e-5), torch_blend(inputs), rtol=0, atol=TOL)


def test_cmake_targets_every_gpu_generation_by_default(tmp_path):
    """Enabling CUDA sets CMAKE_CUDA_ARCHITECTURES to nvcc's default (sm_75 only), so the list must be set
    before it; a configure without the option (and without SPIN_WITH_CUDA: CMake finds nvcc) must end up with
    the whole list."""
    if shutil.which("cmake") is None or nvcc_path() is None:
        pytest.skip("needs cmake and nvcc")
    build = tmp_path / "build"
    configure = ["cmake", "-S", str(KERNEL_DIR), "-B", str(build), "-DSPIN_BUILD_PLUGIN=OFF", f"-DCMAKE_CUDA_COMPILER={nvcc_path()}"]
    done = subprocess.run(configure, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "SPIN_WITH_CUDA:BOOL=ON" in (build / "CMakeCache.txt").read_text()  # check_language(CUDA) found nvcc
    flags = (build / "CMakeFiles" / "spin_blend.dir" / "flags.make").read_text()
    for arch in GPU_ARCHS[:-1]:
        assert f"--generate-code=arch=compute_{arch},code=[sm_{arch}]" in flags
    last = GPU_ARCHS[-1]
    assert f"--generate-code=arch=compute_{last},code=[compute_{last},sm_{last}]" in flags  # + PTX for newer GPUs


def test_cmake_refuses_the_plugin_without_cuda(tmp_path):
    if shutil.which("cmake") is None:
        pytest.skip("needs cmake")
    with pytest.raises(KernelBuildError, match="the TensorRT plugin needs CUDA"):
        kernels.cmake_configure(tmp_path / "build", {"SPIN_WITH_CUDA": "OFF"})


@pytest.mark.tensorrt
def test_plugin_library_registers_the_spin_blend_creator(plugin_library):  # noqa: F811
    assert plugin_library.is_file()
    if tensorrt_env.trt is None:
        # Without TensorRT's Python package, check at least that the creator and the C entry points are there.
        lib = ctypes.CDLL(str(plugin_library), mode=ctypes.RTLD_GLOBAL)
        assert hasattr(lib, "spinBlendLaunch")
        return
    trt = tensorrt_env.trt
    logger = trt.Logger(trt.Logger.WARNING)
    tensorrt_env.load_plugin(plugin_library, logger)
    creator = trt.get_plugin_registry().get_creator("SpinBlend", "1", "")
    assert creator is not None
    assert {f.name for f in creator.field_names} == {"exponents", "eps"}
    fields = trt.PluginFieldCollection(
        [
            trt.PluginField("exponents", np.array(SPIN, dtype=np.float32), trt.PluginFieldType.FLOAT32),
            trt.PluginField("eps", np.array([1e-5], dtype=np.float32), trt.PluginFieldType.FLOAT32),
        ]
    )
    plugin = creator.create_plugin("spin_blend", fields, trt.TensorRTPhase.BUILD)
    assert plugin is not None
    bad = trt.PluginFieldCollection([trt.PluginField("eps", np.array([1e-5], dtype=np.float32), trt.PluginFieldType.FLOAT32)])
    assert creator.create_plugin("spin_blend", bad, trt.TensorRTPhase.BUILD) is None  # exponents are required


# --- against NVIDIA's published headers, without TensorRT (CI) ----------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_HEADERS = REPO_ROOT.parent / "shared" / "third_party" / "tensorrt-10.5.0"


@pytest.fixture(scope="session")
def compiled_plugin(tmp_path_factory) -> Path:
    """libspin_plugin.so compiled once per session against the published TensorRT 10.5 headers, warnings as
    errors, libnvinfer not linked (one GPU architecture: the kernel's coverage is test_plugin_kernel's job)."""
    if not (PUBLISHED_HEADERS / "include" / "NvInfer.h").is_file():
        pytest.skip(f"NVIDIA's TensorRT headers are not at {PUBLISHED_HEADERS} (CI puts ../shared beside the repository)")
    if shutil.which("cmake") is None or nvcc_path() is None:
        pytest.skip("needs cmake and nvcc")
    build = tmp_path_factory.mktemp("plugin_compile_only")
    return build_plugin.build_plugin(build, PUBLISHED_HEADERS, compile_only=True, warnings_as_errors=True, cuda_archs="75")


def _dynamic_symbols(library: Path, *flags: str) -> set[str]:
    """Dynamic symbol names (version suffix dropped) from ``nm -D``; weak undefined ones are left out."""
    done = subprocess.run(["nm", "-D", *flags, str(library)], capture_output=True, text=True, check=True)
    names = set()
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[-2] not in ("w", "v"):
            names.add(parts[-1].split("@")[0])
    return names


def _dependencies(library: Path) -> dict[str, Path]:
    """NEEDED libraries as the loader resolves them (ldd); a dependency it cannot find fails the test."""
    done = subprocess.run(["ldd", str(library)], capture_output=True, text=True, check=True)
    found = {}
    for line in done.stdout.splitlines():
        m = re.match(r"\s*(\S+) => (.*?) \(0x", line)
        if m:
            assert m[2] != "not found", f"{library.name} needs {m[1]}, which the loader does not find"
            found[m[1]] = Path(m[2])
    return found


@pytest.mark.tensorrt_headers
def test_plugin_compiles_against_published_tensorrt_headers_with_warnings_as_errors(compiled_plugin):
    assert compiled_plugin.is_file()
    cache = (compiled_plugin.parent / "CMakeCache.txt").read_text()
    assert "CMAKE_COMPILE_WARNING_AS_ERROR:UNINITIALIZED=ON" in cache
    assert f"TENSORRT_INCLUDE_DIR:PATH={PUBLISHED_HEADERS / 'include'}" in cache
    flags = (compiled_plugin.parent / "CMakeFiles" / "spin_plugin.dir" / "flags.make").read_text()
    assert "-Werror" in flags and "-Wextra" in flags


@pytest.mark.tensorrt_headers
def test_plugin_needs_only_get_plugin_registry_from_tensorrt(compiled_plugin):
    """Every undefined symbol but one is provided by the libraries the plugin links (CUDA runtime, C++ runtime,
    libc); the one left for the host process is TensorRT's getPluginRegistry (REGISTER_TENSORRT_PLUGIN's call),
    so no other TensorRT entry point and no out-of-line nvinfer1:: symbol was pulled in."""
    undefined = _dynamic_symbols(compiled_plugin, "--undefined-only")
    provided = set()
    for dependency in _dependencies(compiled_plugin).values():
        provided |= _dynamic_symbols(dependency, "--defined-only")
    unresolved = undefined - provided
    demangled = subprocess.run(["c++filt"], input="\n".join(sorted(unresolved)), capture_output=True, text=True).stdout
    assert unresolved == {"getPluginRegistry"}, demangled
    assert "nvinfer1::" not in demangled


@pytest.mark.tensorrt_headers
def test_plugin_links_one_cuda_runtime_the_shared_one(compiled_plugin):
    needed = _dependencies(compiled_plugin)
    assert any(name.startswith("libcudart.so") for name in needed), sorted(needed)
    # A static cudart inside the library would define the runtime API itself.
    defined = _dynamic_symbols(compiled_plugin, "--defined-only")
    assert not {"cudaGetErrorString", "cudaLaunchKernel", "__cudaRegisterFatBinary"} & defined
    link = (compiled_plugin.parent / "CMakeFiles" / "spin_plugin.dir" / "link.txt").read_text()
    assert "cudart_static" not in link


@pytest.mark.tensorrt_headers
def test_tensorrt_root_finds_debian_multiarch_layout(tmp_path):
    """NVIDIA's containers and .deb packages put TensorRT in include/<arch>/ and lib/<arch>/ under /usr: both the
    Python lookup and CMake's find it there from TENSORRT_ROOT. The library here is an empty stand-in file (no
    libnvinfer exists on this machine): only its path is looked up, nothing is linked."""
    if not (PUBLISHED_HEADERS / "include" / "NvInfer.h").is_file():
        pytest.skip(f"NVIDIA's TensorRT headers are not at {PUBLISHED_HEADERS}")
    if shutil.which("cmake") is None or nvcc_path() is None:
        pytest.skip("needs cmake and nvcc")
    root = tmp_path / "usr"
    (root / "include").mkdir(parents=True)
    os.symlink(PUBLISHED_HEADERS / "include", root / "include" / "x86_64-linux-gnu")
    (root / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    (root / "lib" / "x86_64-linux-gnu" / "libnvinfer.so").write_bytes(b"")
    assert find_tensorrt_headers(root) == root / "include" / "x86_64-linux-gnu"
    assert find_nvinfer(root) == root / "lib" / "x86_64-linux-gnu" / "libnvinfer.so"
    output = kernels.cmake_configure(tmp_path / "build", build_plugin.configure_options(root, cuda_archs="75"))
    assert f"TensorRT: {root}/include/x86_64-linux-gnu, {root}/lib/x86_64-linux-gnu/libnvinfer.so" in output
