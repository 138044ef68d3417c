#!/usr/bin/env python3
"""Build the SPIN encoder's TensorRT engine from the plugin ONNX graph, and verify it against ONNX Runtime.

    python builders/build_engine.py --onnx build/spin_encoder_plugin.onnx \\
        --plugin build/spin_plugin/libspin_plugin.so \\
        --output model_repository/spin_encoder/1/model.plan --precision fp16 --max-batch 64 --verify

The ONNX graph is the encoder exported with ``spinrec.onnx_export.export_encoder(..., blend="plugin")``;
its ``SpinBlend`` node is served by ``libspin_plugin.so`` (``builders/plugins/spinBlendPlugin``), loaded
here before parsing. Writes the plan, ``<plan>.json`` (TensorRT version, GPU, precision, profile, sources;
after ``--verify`` also the comparison) and updates the timing cache.

Precisions: ``fp32`` (TF32 off), ``tf32`` (TensorRT's default for float32 layers), ``fp16`` (FP16 and TF32
allowed; the GA-SPIN transform's layers stay float32 unless ``--fp16-transform``: its power curves, TPS
matmuls and grid sample lose too much in float16, and the plugin computes in float32 whatever its I/O).

``--verify`` runs the engine on random images at the profile's min/opt/max batch and on ``--images``
(real word crops), compares with ONNX Runtime running the same graph on CPU (the node through the kernel's
host reference, :mod:`spinrec.ort_spin_blend`) and reports the max abs error per output; with
``--checkpoint`` it decodes both outputs with the model's attention head and reports how many texts agree.
Needs PyTorch with CUDA for device buffers.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

# TensorRT's module is "tensorrt" (NVIDIA's containers, the full wheel) or "tensorrt_bindings" (the
# bindings-only wheel tensorrt-cu12-bindings, used in the Triton image). A package without "Builder" is
# tensorrt-stubs' stub folder, not TensorRT. require_tensorrt() reports the failure where TensorRT is needed.
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

INPUT_NAME, OUTPUT_NAME = "image", "features"
IMAGE_SHAPE = (1, 32, 100)
PLUGIN_NAME, PLUGIN_VERSION = "SpinBlend", "1"
# GA-SPIN's layers in the exported graph are named after their module path.
TRANSFORM_SCOPE = "/transform/"
MIN_COMPUTE_CAPABILITY = (7, 5)
PRECISIONS = ("fp32", "tf32", "fp16")
# Defaults for --tolerance: float32 engines differ from ORT by reordering only; fp16 by half rounding.
TOLERANCE = {"fp32": 1e-3, "tf32": 2e-2, "fp16": 5e-2}
PLUGIN_SOURCE_DIR = Path(__file__).resolve().parent / "plugins" / "spinBlendPlugin"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


class BuildError(RuntimeError):
    """A precondition or build step failed; the message says which and what to do."""


@dataclass
class Profile:
    """The optimization profile of the batch dimension (the engine serves min..max)."""

    min: int = 1
    opt: int = 16
    max: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise BuildError(f"need 1 <= min <= opt <= max batch, got {self.min}/{self.opt}/{self.max}")

    def shapes(self, item_shape: Sequence[int]) -> list[list[int]]:
        """min/opt/max shapes of an input whose per-item shape is ``item_shape``."""
        return [[b, *item_shape] for b in (self.min, self.opt, self.max)]


@dataclass
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]


@dataclass
class BuildOptions:
    onnx: Path
    plugin: Path | None
    output: Path
    precision: str = "fp16"
    profile: Profile = field(default_factory=Profile)
    workspace_mib: int = 1024
    timing_cache: Path | None = None
    fp16_transform: bool = False


def require_tensorrt() -> None:
    if trt is None:
        raise BuildError(
            f"TensorRT's Python package is not importable ({_TRT_IMPORT_ERROR}); "
            "run inside NVIDIA's TensorRT/Triton container or install TensorRT 10"
        )


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
        raise BuildError(
            f"{gpu.name} (sm_{major}{minor}) is not supported: the plugin is compiled for sm_75 and newer"
        )
    return gpu


def find_tensorrt_headers(root: str | Path | None = None) -> Path | None:
    """The include folder holding NvInfer.h: under ``root`` (or ``$TENSORRT_ROOT``), else the system paths
    of NVIDIA's TensorRT/Triton containers."""
    root = root or os.environ.get("TENSORRT_ROOT")
    candidates = [Path(root) / "include"] if root else []
    candidates += [Path("/usr/include/x86_64-linux-gnu"), Path("/usr/include/aarch64-linux-gnu"), Path("/usr/include")]
    return next((c for c in candidates if (c / "NvInfer.h").is_file()), None)


def build_plugin(build_dir: Path, tensorrt_root: str | Path | None = None, jobs: int = 2) -> Path:
    """Configure and build ``libspin_plugin.so`` with CMake (builders/plugins/spinBlendPlugin); returns it."""
    headers = find_tensorrt_headers(tensorrt_root)
    if headers is None:
        raise BuildError("TensorRT headers (NvInfer.h) not found: set TENSORRT_ROOT to a TensorRT installation")
    if shutil.which("cmake") is None:
        raise BuildError("cmake not found")
    root = tensorrt_root or os.environ.get("TENSORRT_ROOT") or headers.parent
    steps = [
        ["cmake", "-S", str(PLUGIN_SOURCE_DIR), "-B", str(build_dir), f"-DTENSORRT_ROOT={root}"],
        ["cmake", "--build", str(build_dir), "--target", "spin_plugin", "-j", str(jobs)],
    ]
    for cmd in tqdm(steps, desc="plugin"):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"{' '.join(cmd)} failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
    return build_dir / "libspin_plugin.so"


def load_plugin(plugin: Path, logger: trt.ILogger) -> None:
    """Load ``libspin_plugin.so`` (its static registrar adds the creator) and check the creator is there."""
    if not plugin.is_file():
        raise BuildError(f"plugin library {plugin} not found; build it with builders/plugins/spinBlendPlugin/CMakeLists.txt")
    try:
        ctypes.CDLL(str(plugin.resolve()), mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        raise BuildError(f"cannot load {plugin}: {e} (built against another TensorRT/CUDA version?)") from e
    trt.init_libnvinfer_plugins(logger, "")
    if trt.get_plugin_registry().get_creator(PLUGIN_NAME, PLUGIN_VERSION, "") is None:
        raise BuildError(f"{plugin} loaded but registered no {PLUGIN_NAME} v{PLUGIN_VERSION} creator")


def progress_monitor() -> trt.IProgressMonitor:
    """TensorRT's build phases as nested tqdm bars (TensorRT calls the monitor from its own threads)."""
    bars: dict[str, tqdm] = {}
    lock = threading.Lock()

    class TqdmMonitor(trt.IProgressMonitor):
        def phase_start(self, phase_name: str, parent_phase: str, num_steps: int) -> None:
            with lock:
                bars[phase_name] = tqdm(total=num_steps, desc=phase_name, position=len(bars), leave=False)

        def step_complete(self, phase_name: str, step: int) -> bool:
            with lock:
                bar = bars.get(phase_name)
                if bar is not None:
                    bar.update(step + 1 - bar.n)
            return True

        def phase_finish(self, phase_name: str) -> None:
            with lock:
                bar = bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

    return TqdmMonitor()


def pin_transform_fp32(network: trt.INetworkDefinition) -> int:
    """Ask for float32 on every float layer of the GA-SPIN transform; returns how many were pinned."""
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not layer.name.startswith(TRANSFORM_SCOPE):
            continue
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outputs or any(t.dtype != trt.float32 for t in outputs):
            continue  # shape arithmetic and index tensors keep their types
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


def build_engine(opts: BuildOptions) -> dict[str, Any]:
    """Parse, configure, build; write the plan, its JSON metadata and the timing cache. Returns the metadata."""
    if opts.precision not in PRECISIONS:
        raise BuildError(f"precision must be one of {PRECISIONS}, not {opts.precision!r}")
    if not opts.onnx.is_file():
        raise BuildError(f"ONNX graph {opts.onnx} not found; export it with export_encoder(model, path, blend='plugin')")
    require_tensorrt()
    gpu = query_gpu()
    logger = trt.Logger(trt.Logger.WARNING)
    if opts.plugin is not None:
        load_plugin(opts.plugin, logger)

    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(opts.onnx)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        hint = "" if opts.plugin else f" (a graph with {PLUGIN_NAME} nodes needs --plugin libspin_plugin.so)"
        raise BuildError(f"TensorRT could not parse {opts.onnx}{hint}:\n{errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mib << 20)
    pinned = 0
    if opts.precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    else:
        config.set_flag(trt.BuilderFlag.TF32)
    if opts.precision == "fp16":
        if not builder.platform_has_fast_fp16:
            raise BuildError(f"{gpu.name} has no fast FP16; build with --precision tf32 or fp32")
        config.set_flag(trt.BuilderFlag.FP16)
        if not opts.fp16_transform:
            pinned = pin_transform_fp32(network)
            config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)

    # Every input is batched on dim 0 (the encoder has just "image"; the blend graph has four).
    profile = builder.create_optimization_profile()
    input_shapes: dict[str, list[list[int]]] = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tensor.shape
        item = [dims[d] for d in range(1, len(dims))]
        if len(dims) == 0 or any(d < 0 for d in item):
            raise BuildError(f"input {tensor.name!r} {dims} must have a dynamic batch and fixed other dims")
        lo, mid, hi = input_shapes[tensor.name] = opts.profile.shapes(item)
        profile.set_shape(tensor.name, trt.Dims(lo), trt.Dims(mid), trt.Dims(hi))
    config.add_optimization_profile(profile)

    cache_bytes = opts.timing_cache.read_bytes() if opts.timing_cache and opts.timing_cache.exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise BuildError(f"timing cache {opts.timing_cache} was made by another TensorRT version or GPU; delete it")
    monitor = progress_monitor()  # referenced until the build returns, as TensorRT requires
    config.progress_monitor = monitor

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BuildError("TensorRT failed to build the engine (see the log above)")
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_bytes(bytes(plan))
    if opts.timing_cache:
        opts.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        opts.timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))

    metadata: dict[str, Any] = {
        "tensorrt_version": trt.__version__,
        "gpu": gpu.name,
        "compute_capability": "{}.{}".format(*gpu.compute_capability),
        "precision": opts.precision,
        "transform_layers_pinned_fp32": pinned,
        "profile": {**asdict(opts.profile), "shapes": input_shapes},
        "workspace_mib": opts.workspace_mib,
        "onnx": str(opts.onnx),
        "onnx_sha256": hashlib.sha256(opts.onnx.read_bytes()).hexdigest(),
        "plugin": str(opts.plugin) if opts.plugin else None,
        "plan_bytes": opts.output.stat().st_size,
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_metadata(opts.output, metadata)
    return metadata


def rebuild_reason(opts: BuildOptions, gpu: GpuInfo, tensorrt_version: str) -> str | None:
    """Why the plan must be (re)built, or None when the existing one was built from the same graph with the
    same settings, TensorRT version and GPU (plans are tied to all of them)."""
    if not opts.onnx.is_file():
        raise BuildError(f"ONNX graph {opts.onnx} not found")
    meta_file = metadata_path(opts.output)
    if not opts.output.is_file() or not meta_file.is_file():
        return "no plan yet"
    meta = json.loads(meta_file.read_text())
    want = {
        "onnx_sha256": hashlib.sha256(opts.onnx.read_bytes()).hexdigest(),
        "tensorrt_version": tensorrt_version,
        "gpu": gpu.name,
        "compute_capability": "{}.{}".format(*gpu.compute_capability),
        "precision": opts.precision,
        "workspace_mib": opts.workspace_mib,
    }
    changed = [key for key, value in want.items() if meta.get(key) != value]
    profile = meta.get("profile", {})
    if [profile.get(k) for k in ("min", "opt", "max")] != [opts.profile.min, opts.profile.opt, opts.profile.max]:
        changed.append("profile")
    return f"changed: {', '.join(changed)}" if changed else None


def metadata_path(plan: Path) -> Path:
    return plan.with_name(plan.name + ".json")


def write_metadata(plan: Path, metadata: dict[str, Any]) -> None:
    metadata_path(plan).write_text(json.dumps(metadata, indent=2) + "\n")


class EngineRunner:
    """Runs a serialized engine on torch CUDA tensors (one execution context, torch's current stream)."""

    def __init__(self, plan: Path, plugin: Path | None):
        import torch

        if not torch.cuda.is_available():
            raise BuildError("running an engine needs PyTorch with CUDA for device buffers")
        self.torch = torch
        require_tensorrt()
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

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """float32 host arrays by input name -> float32 host arrays by output name."""
        torch = self.torch
        if set(feeds) != set(self.inputs):
            raise BuildError(f"engine inputs are {self.inputs}, got {sorted(feeds)}")
        device = {n: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).cuda() for n, a in feeds.items()}
        for name, tensor in device.items():
            if not self.context.set_input_shape(name, tuple(tensor.shape)):
                raise BuildError(f"{name} shape {tuple(tensor.shape)} is outside the engine's profile")
            self.context.set_tensor_address(name, tensor.data_ptr())
        results = {}
        for name in self.outputs:
            dims = self.context.get_tensor_shape(name)
            results[name] = torch.empty(dims[0 : len(dims)], dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, results[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise BuildError("engine execution failed")
        stream.synchronize()
        return {name: t.cpu().numpy() for name, t in results.items()}


def load_images(folder: Path) -> np.ndarray:
    """Preprocessed ``[N, 1, 32, 100]`` word crops from the image files in ``folder``."""
    from spinrec.preprocess import preprocess_batch

    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise BuildError(f"no images in {folder}")
    batch, errors = preprocess_batch([p.read_bytes() for p in paths])
    bad = [str(p) for p, e in zip(paths, errors) if e is not None]
    if bad:
        raise BuildError(f"unreadable images: {bad}")
    return batch


def verify_engine(
    plan: Path,
    plugin: Path | None,
    onnx_path: Path,
    profile: Profile,
    images: Path | None = None,
    checkpoint: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Engine vs ONNX Runtime on random and real inputs: max abs error per set and output, and text agreement
    when a checkpoint is given."""
    from spinrec.ort_spin_blend import session

    engine = EngineRunner(plan, plugin)
    ort_session = session(onnx_path)
    rng = np.random.default_rng(seed)
    batches = sorted({profile.min, profile.opt, profile.max})
    sets = {f"random_b{b}": rng.uniform(-1, 1, size=(b, *IMAGE_SHAPE)).astype(np.float32) for b in batches}
    if images is not None:
        real = load_images(images)
        for start in range(0, len(real), profile.max):
            sets[f"images_{start}"] = real[start : start + profile.max]
    model = None
    if checkpoint is not None:
        from spinrec import weights

        model = weights.load(checkpoint).eval()

    report: dict[str, Any] = {"sets": {}, "max_abs_error": {OUTPUT_NAME: 0.0}}
    agree = total = 0
    for name, batch in tqdm(sets.items(), desc="verify"):
        got = engine({INPUT_NAME: batch})[OUTPUT_NAME]
        (ref,) = ort_session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        err = float(np.max(np.abs(got - ref)))
        entry: dict[str, Any] = {"batch": len(batch), "max_abs_error": {OUTPUT_NAME: err}}
        report["max_abs_error"][OUTPUT_NAME] = max(report["max_abs_error"][OUTPUT_NAME], err)
        if model is not None:
            texts_trt, texts_ort = decode_texts(model, got), decode_texts(model, ref)
            same = sum(a == b for a, b in zip(texts_trt, texts_ort))
            entry["text_agreement"] = f"{same}/{len(batch)}"
            agree, total = agree + same, total + len(batch)
        report["sets"][name] = entry
    if total:
        report["text_agreement"] = agree / total
    return report


def decode_texts(model: Any, features: np.ndarray) -> list[str]:
    import torch

    from spinrec.decoding import decode

    with torch.inference_mode():
        probs = model.decode(torch.from_numpy(features)).numpy()
    return [r.text for r in decode(probs)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--onnx", type=Path, required=True, help="encoder graph exported with blend='plugin'")
    p.add_argument("--plugin", type=Path, default=None, help="libspin_plugin.so (needed for graphs with SpinBlend nodes)")
    p.add_argument("--output", type=Path, required=True, help="model.plan to write (plus model.plan.json)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16")
    p.add_argument("--min-batch", type=int, default=1)
    p.add_argument("--opt-batch", type=int, default=16)
    p.add_argument("--max-batch", type=int, default=64, help=">= the Triton config's max_batch_size")
    p.add_argument("--workspace-mib", type=int, default=1024)
    p.add_argument("--timing-cache", type=Path, default=None, help="read if present, written after the build")
    p.add_argument("--fp16-transform", action="store_true", help="let the GA-SPIN transform run in FP16 too")
    p.add_argument("--verify", action="store_true", help="compare the engine with ONNX Runtime after building")
    p.add_argument("--verify-only", action="store_true", help="verify an existing plan without rebuilding")
    p.add_argument("--if-needed", action="store_true", help="keep an existing plan built from the same graph, GPU, TensorRT and settings")
    p.add_argument("--images", type=Path, default=None, help="folder of word crops for --verify")
    p.add_argument("--checkpoint", type=Path, default=None, help="weights for --verify's text agreement")
    p.add_argument("--tolerance", type=float, default=None, help="max abs error accepted by --verify")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        profile = Profile(args.min_batch, args.opt_batch, args.max_batch)
        if args.verify_only:
            if not metadata_path(args.output).exists():
                raise BuildError(f"{metadata_path(args.output)} not found: build the plan first")
            metadata = json.loads(metadata_path(args.output).read_text())
        else:
            opts = BuildOptions(
                args.onnx, args.plugin, args.output, args.precision, profile, args.workspace_mib, args.timing_cache, args.fp16_transform
            )
            reason: str | None = "requested"
            if args.if_needed:
                require_tensorrt()
                reason = rebuild_reason(opts, query_gpu(), trt.__version__)
            if reason is None:
                metadata = json.loads(metadata_path(args.output).read_text())
                print(f"{args.output} is current ({metadata['gpu']}, TensorRT {metadata['tensorrt_version']})")
            else:
                metadata = build_engine(opts)
                print(f"wrote {args.output} ({metadata['plan_bytes']} bytes) for {metadata['gpu']}, {args.precision} ({reason})")
        if args.verify or args.verify_only:
            report = verify_engine(args.output, args.plugin, args.onnx, profile, args.images, args.checkpoint)
            tolerance = args.tolerance if args.tolerance is not None else TOLERANCE[metadata["precision"]]
            report["tolerance"] = tolerance
            metadata["verify"] = report
            write_metadata(args.output, metadata)
            print(json.dumps(report, indent=2))
            if report["max_abs_error"][OUTPUT_NAME] > tolerance:
                print(f"FAILED: max abs error {report['max_abs_error'][OUTPUT_NAME]:.3g} > {tolerance}", file=sys.stderr)
                return 1
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
