"""The ``SpinBlend`` plugin's kernel library from Python, and ONNX Runtime sessions for plugin graphs.

The library is the ``spin_blend`` target of ``spinrec/kernels/spinBlendPlugin``'s CMake build
(``spinBlendKernel.cu`` for the GPU kernel, ``spinBlendReference.cpp`` for the CPU reference that runs the
kernel's own per-pixel functions), loaded with ctypes. On CPU, a graph exported with ``blend="plugin"``
runs in ONNX Runtime with the node implemented by that reference through an onnxruntime-extensions PyOp.

PyOps read only scalar attributes (int, float, string), so :func:`session` hands ORT a copy of the graph
whose ``SpinBlend`` nodes also carry the ``exponents`` list as the string attribute ``exponents_text``;
the file itself keeps exactly the plugin's fields.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from spinrec import kernels
from spinrec.contract import KERNEL_DIR, PLUGIN_DOMAIN, PLUGIN_OP

TARGET = "spin_blend"  # CMakeLists.txt's target: lib{TARGET}.so
SOURCES = ("spinBlendKernel.cuh", "spinBlendKernel.cu", "spinBlendReference.cpp", "CMakeLists.txt")
MAX_EXPONENTS = 32  # spin::kMaxExponents
LIBRARY_ENV = "SPINREC_BLEND_LIBRARY"
EXPONENTS_TEXT = "exponents_text"
_FLOAT32, _FLOAT16 = 0, 1  # spin::IoType


def has_plugin_nodes(proto: onnx.ModelProto) -> bool:
    """Whether the graph holds ``SpinBlend`` nodes (so plain ONNX Runtime cannot run it)."""
    return any(node.op_type == PLUGIN_OP for node in proto.graph.node)


class BlendLibraryError(RuntimeError):
    """The kernel library could not be found or loaded (a failed build raises
    :class:`spinrec.kernels.KernelBuildError`)."""


class _Shape(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in ("batch", "channels", "height", "width", "off_height", "off_width")]


class _Curves(ctypes.Structure):
    _fields_ = [("count", ctypes.c_int32), ("exponents", ctypes.c_float * MAX_EXPONENTS), ("eps", ctypes.c_float)]


def configuration(cuda: bool) -> dict[str, str]:
    """The CMake options of the library: the ``spin_blend`` target alone (no TensorRT), with the CUDA kernel
    (every GPU architecture of CMakeLists.txt) or the reference alone (host compiler)."""
    return {"SPIN_BUILD_PLUGIN": "OFF", **kernels.cuda_options(cuda)}


def build_library(build_dir: str | Path, cuda: bool) -> Path:
    """Build the ``spin_blend`` target in ``build_dir`` (see :func:`configuration`); returns the library."""
    return kernels.cmake_build(build_dir, TARGET, configuration(cuda))


def _build_digest(options: dict[str, str]) -> str:
    """Identifies a build: the sources, the build script and the configuration (compiler paths included;
    CMake takes the host compiler from $CXX)."""
    digest = hashlib.sha256(repr((sorted(options.items()), os.environ.get("CXX"))).encode())
    for name in SOURCES:
        digest.update((KERNEL_DIR / name).read_bytes())
    return digest.hexdigest()[:16]


def default_library() -> Path:
    """``$SPINREC_BLEND_LIBRARY`` if set; otherwise a build cached under ``~/.cache/spinrec`` keyed by the
    sources and the configuration (the CUDA kernel for every GPU architecture where nvcc exists, the
    reference alone with the host compiler otherwise)."""
    if os.environ.get(LIBRARY_ENV):
        path = Path(os.environ[LIBRARY_ENV])
        if not path.exists():
            raise BlendLibraryError(f"{LIBRARY_ENV}={path} does not exist")
        return path
    if not (KERNEL_DIR / SOURCES[0]).exists():
        raise BlendLibraryError(f"plugin sources not found in {KERNEL_DIR}; set {LIBRARY_ENV} to a built library")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spinrec"
    cuda = kernels.nvcc_path() is not None
    target = cache / f"lib{TARGET}_{_build_digest(configuration(cuda))}{'_gpu' if cuda else ''}.so"
    if not target.exists():
        # Build beside the target and rename, so concurrent processes never load a half-written file.
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            os.replace(build_library(tmp, cuda), target)
    return target


class BlendLibrary:
    """ctypes view of the library's ``spinBlendReference`` (CPU) and ``spinBlendLaunch`` (GPU)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._lib = ctypes.CDLL(str(self.path))
        except OSError as e:
            raise BlendLibraryError(f"cannot load {self.path}: {e}") from e
        pointers = [ctypes.c_void_p] * 7  # image, weights, offsets, gate, norm_weight, norm_bias, out
        self._lib.spinBlendReference.argtypes = [ctypes.c_int32, *pointers, _Shape, ctypes.POINTER(_Curves)]
        self._lib.spinBlendReference.restype = ctypes.c_int32
        self.has_kernel = hasattr(self._lib, "spinBlendLaunch")
        if self.has_kernel:
            self._lib.spinBlendLaunch.argtypes = [
                ctypes.c_int32, *pointers, _Shape, ctypes.POINTER(_Curves), ctypes.c_void_p
            ]
            self._lib.spinBlendLaunch.restype = ctypes.c_int32

    @staticmethod
    def _describe(image_shape, weights_shape, offsets_shape, gate_shape, norm_shape, exponents, eps):
        if len(image_shape) != 4 or len(offsets_shape) != 4:
            raise ValueError(f"image and offsets must be 4-D, got {tuple(image_shape)} and {tuple(offsets_shape)}")
        b, c, h, w = image_shape
        k = len(exponents)
        if not 0 < k <= MAX_EXPONENTS:
            raise ValueError(f"{k} exponents; the kernel takes 1..{MAX_EXPONENTS}")
        expected = {"weights": (b, k), "offsets": (b, c), "gate": (b,), "norm_weight/norm_bias": (c,)}
        got = {
            "weights": tuple(weights_shape),
            "offsets": tuple(offsets_shape[:2]),
            "gate": tuple(gate_shape),
            "norm_weight/norm_bias": tuple(norm_shape),
        }
        for name, shape in expected.items():
            if got[name] != shape:
                raise ValueError(f"{name} has shape {got[name]}, expected {shape} for image {tuple(image_shape)}")
        curves = _Curves(count=k, eps=float(eps))
        curves.exponents[:k] = [float(e) for e in exponents]
        return _Shape(b, c, h, w, offsets_shape[2], offsets_shape[3]), curves

    def reference(
        self,
        image: np.ndarray,
        weights: np.ndarray,
        offsets: np.ndarray,
        gate: np.ndarray,
        norm_weight: np.ndarray,
        norm_bias: np.ndarray,
        exponents: Sequence[float],
        eps: float,
    ) -> np.ndarray:
        """The op on the CPU: ``image`` float32 or float16 ``[B, C, H, W]``, the rest float32 (see
        :func:`spinrec.models.blend.spin_blend`); returns an array of ``image``'s dtype."""
        if image.dtype not in (np.float32, np.float16):
            raise TypeError(f"image must be float32 or float16, not {image.dtype}")
        image = np.ascontiguousarray(image)
        floats = [np.ascontiguousarray(a, dtype=np.float32) for a in (weights, offsets, gate, norm_weight, norm_bias)]
        if floats[3].shape != floats[4].shape:
            raise ValueError(f"norm_weight {floats[3].shape} and norm_bias {floats[4].shape} differ")
        shape, curves = self._describe(image.shape, floats[0].shape, floats[1].shape, floats[2].shape, floats[3].shape, exponents, eps)
        out = np.empty_like(image)
        io = _FLOAT16 if image.dtype == np.float16 else _FLOAT32
        ptrs = [a.ctypes.data for a in (image, *floats, out)]
        status = self._lib.spinBlendReference(io, *ptrs, shape, ctypes.byref(curves))
        if status != 0:
            raise ValueError(f"spinBlendReference rejected shape {tuple(image.shape)} / {len(exponents)} exponents / eps {eps}")
        return out

    def launch(self, image, weights, offsets, gate, norm_weight, norm_bias, exponents: Sequence[float], eps: float):
        """The CUDA kernel on torch CUDA tensors (``image`` float32/float16, the rest float32, contiguous), on
        the current torch stream; returns the output tensor."""
        import torch

        if not self.has_kernel:
            raise BlendLibraryError(f"{self.path} was built without the CUDA kernel")
        tensors = [image, weights, offsets, gate, norm_weight, norm_bias]
        if not all(t.is_cuda and t.is_contiguous() for t in tensors):
            raise ValueError("launch needs contiguous CUDA tensors")
        if image.dtype not in (torch.float32, torch.float16) or any(t.dtype != torch.float32 for t in tensors[1:]):
            raise TypeError("image must be float32/float16 and the other inputs float32")
        shape, curves = self._describe(image.shape, weights.shape, offsets.shape, gate.shape, norm_weight.shape, exponents, eps)
        out = torch.empty_like(image)
        io = _FLOAT16 if image.dtype == torch.float16 else _FLOAT32
        stream = torch.cuda.current_stream(image.device).cuda_stream
        status = self._lib.spinBlendLaunch(io, *[t.data_ptr() for t in (*tensors, out)], shape, ctypes.byref(curves), stream)
        if status != 0:
            raise RuntimeError(f"spinBlendLaunch failed with cudaError {status}")
        return out


_active: BlendLibrary | None = None


def _register_pyop() -> None:
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    @onnx_op(
        op_type=PLUGIN_OP,
        inputs=[PyCustomOpDef.dt_float] * 6,
        outputs=[PyCustomOpDef.dt_float],
        attrs={EXPONENTS_TEXT: PyCustomOpDef.dt_string, "eps": PyCustomOpDef.dt_float},
    )
    def spin_blend_node(image, weights, offsets, gate, norm_weight, norm_bias, **attrs):
        assert _active is not None, "session() sets the library before ORT can call the node"
        exponents = [float(t) for t in attrs[EXPONENTS_TEXT].split(",")]
        return _active.reference(image, weights, offsets, gate, norm_weight, norm_bias, exponents, attrs["eps"])


def with_exponent_text(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` whose ``SpinBlend`` nodes also carry ``exponents`` as a comma-separated string
    (exact: each value is the shortest repr of a float32)."""
    original, proto = proto, onnx.ModelProto()
    proto.CopyFrom(original)
    for node in proto.graph.node:
        if node.op_type != PLUGIN_OP:
            continue
        if node.domain != PLUGIN_DOMAIN:
            raise ValueError(f"{PLUGIN_OP} node {node.name!r} is in domain {node.domain!r}, expected {PLUGIN_DOMAIN!r}")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if "exponents" not in attrs or "eps" not in attrs:
            raise ValueError(f"{PLUGIN_OP} node {node.name!r} lacks the exponents/eps attributes")
        text = ",".join(repr(float(np.float32(e))) for e in attrs["exponents"])
        node.attribute.append(onnx.helper.make_attribute(EXPONENTS_TEXT, text))
    return proto


def session(model: str | Path | onnx.ModelProto, library: str | Path | None = None, threads: int | None = None):
    """An ONNX Runtime CPU session for ``model``; graphs with ``SpinBlend`` nodes run them with the kernel
    library's host reference (``library``, default :func:`default_library`)."""
    import onnxruntime as ort

    global _active
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    if has_plugin_nodes(proto):
        from onnxruntime_extensions import get_library_path

        lib = BlendLibrary(library or default_library())
        if _active is None:
            _register_pyop()
        _active = lib
        options.register_custom_ops_library(get_library_path())
        proto = with_exponent_text(proto)
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
