"""CMake builds of builders/plugins/spinBlendPlugin.

Here: the reference library target (kernel + CPU reference, no TensorRT) configures, builds and computes the
op. The TensorRT plugin itself needs NvInfer.h, which only a TensorRT installation has (NVIDIA's TensorRT or
Triton containers): there it must build and, with TensorRT's Python package, register the SpinBlend creator
with the fields the ONNX node carries.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from spinrec.ort_spin_blend import PLUGIN_DIR, BlendLibrary, nvcc_path
from test_engine_build import build_engine, plugin_library  # noqa: F401  (session fixture shared with the engine tests)
from test_plugin_kernel import SPIN, TOL, random_inputs, torch_blend


def test_cmake_builds_the_reference_library_without_tensorrt(tmp_path):
    if shutil.which("cmake") is None or nvcc_path() is None:
        pytest.skip("needs cmake and nvcc")
    build = tmp_path / "build"
    configure = ["cmake", "-S", str(PLUGIN_DIR), "-B", str(build), "-DSPIN_BUILD_PLUGIN=OFF",
                 f"-DCMAKE_CUDA_COMPILER={nvcc_path()}", "-DCMAKE_CUDA_ARCHITECTURES=75"]  # fmt: skip
    for cmd in (configure, ["cmake", "--build", str(build), "-j", "2"]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    library = BlendLibrary(build / "libspin_blend_reference.so")
    inputs = random_inputs(np.random.default_rng(0), 2)
    np.testing.assert_allclose(library.reference(**inputs, exponents=SPIN, eps=1e-5), torch_blend(inputs), rtol=0, atol=TOL)


def test_cmake_targets_every_gpu_generation_by_default(tmp_path):
    """Enabling CUDA in project() sets CMAKE_CUDA_ARCHITECTURES to nvcc's default (sm_75 only), so the
    list must be set before it; a configure without the option must end up with the whole list."""
    if shutil.which("cmake") is None or nvcc_path() is None:
        pytest.skip("needs cmake and nvcc")
    build = tmp_path / "build"
    configure = ["cmake", "-S", str(PLUGIN_DIR), "-B", str(build), "-DSPIN_BUILD_PLUGIN=OFF", f"-DCMAKE_CUDA_COMPILER={nvcc_path()}"]
    done = subprocess.run(configure, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    flags = next(build.glob("CMakeFiles/spin_blend_reference.dir/flags.make")).read_text()
    for arch in (75, 80, 86, 89):
        assert f"--generate-code=arch=compute_{arch},code=[sm_{arch}]" in flags
    assert "--generate-code=arch=compute_90,code=[compute_90,sm_90]" in flags  # + PTX for newer GPUs


@pytest.mark.tensorrt
def test_plugin_library_registers_the_spin_blend_creator(plugin_library):  # noqa: F811
    assert plugin_library.is_file()
    if build_engine.trt is None:
        # Without TensorRT's Python package, check at least that the creator and the C entry points are there.
        lib = ctypes.CDLL(str(plugin_library), mode=ctypes.RTLD_GLOBAL)
        assert hasattr(lib, "spinBlendLaunch")
        return
    trt = build_engine.trt
    logger = trt.Logger(trt.Logger.WARNING)
    build_engine.load_plugin(plugin_library, logger)
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
