"""Build the SPIN encoder's TensorRT engine from its ONNX graph.

    python -m builders.build_engine --onnx spin_encoder/1/model_plugin.onnx \\
        --plugin build/spin_plugin/libspin_plugin.so --output spin_encoder/1/model.plan \\
        --precision fp16 --max-batch 64 [--if-needed] [--verify --images CROPS --checkpoint W.safetensors]

The graph is the encoder exported by :func:`spinrec.export.onnx_export.export_encoder`: with ``blend="plugin"`` its
``SpinBlend`` node is served by ``libspin_plugin.so`` (``--plugin``, loaded before parsing); the decomposed
graph needs no plugin. Writes the plan and ``<plan>.json``: every build option, the graph's and plugin's
hashes, TensorRT version and GPU (``--if-needed`` rebuilds when any of them differs), and updates the timing
cache. ``--verify`` then runs :mod:`builders.verify_engine` on the plan.

Precisions: ``fp32`` (TF32 off), ``tf32`` (TensorRT's default for float32 layers), ``fp16`` (FP16 and TF32; the
GA-SPIN transform stays float32 unless ``--fp16-transform``: its power curves, TPS matmuls and grid sample lose
too much in float16, and the plugin computes in float32 whatever its I/O). TensorRT 10 gets FP16 through its
builder flag with the transform's layers pinned to float32; TensorRT 11 removed that flag and per-layer
precision, so there the graph itself is converted to mixed precision (ModelOpt AutoCast, the transform's nodes
excluded) and built as a strongly typed network.

The text detector's engine (:mod:`builders.build_detector_engine`) is built by the same :func:`build_engine` with
an :class:`~builders.engine_record.ImageProfile` instead of the batch :class:`~builders.engine_record.Profile`
(its graph has no GA-SPIN transform, so nothing is kept in FP32).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from builders.tensorrt_env import BuildError, GpuInfo, load_plugin, query_gpu, require_tensorrt, tensorrt_version, trt
from builders.engine_record import Dims, Profile, ShapeProfile, metadata_path, read_metadata, write_metadata
from builders.verify_engine import add_verify_args, verify_and_record
from spinrec.runtime.tensorrt_encoder import TensorRTError
from spinrec.export.repository import _sha256 as sha256_of  # one file hasher for the builders

PRECISIONS = ("fp32", "tf32", "fp16")
# GA-SPIN's layers and nodes in the exported graph are named after their module path.
TRANSFORM_SCOPE = "/transform/"


@dataclass
class BuildOptions:
    onnx: Path
    plugin: Path | None
    output: Path
    precision: str = "fp16"
    profile: ShapeProfile = field(default_factory=Profile)  # the encoder's batch; the detector's ImageProfile
    workspace_mib: int = 1024
    timing_cache: Path | None = None
    fp16_transform: bool = False


@dataclass(frozen=True)
class PrecisionPlan:
    """How one precision is obtained from the TensorRT at hand."""

    strongly_typed: bool  # network created STRONGLY_TYPED (TensorRT 11 has nothing else)
    tf32: bool
    fp16_flag: bool  # BuilderFlag.FP16 (TensorRT 10)
    pin_transform_fp32: bool  # per-layer precision on the transform's layers (TensorRT 10)
    autocast_fp16: bool  # graph converted to mixed precision before parsing (TensorRT 11)


def precision_plan(precision: str, fp16_transform: bool, has_fp16_flag: bool) -> PrecisionPlan:
    """The builder settings for ``precision`` given whether this TensorRT still has ``BuilderFlag.FP16``."""
    if precision not in PRECISIONS:
        raise BuildError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    fp16 = precision == "fp16"
    return PrecisionPlan(
        strongly_typed=not has_fp16_flag,
        tf32=precision != "fp32",
        fp16_flag=fp16 and has_fp16_flag,
        pin_transform_fp32=fp16 and has_fp16_flag and not fp16_transform,
        autocast_fp16=fp16 and not has_fp16_flag,
    )


def build_key(opts: BuildOptions, gpu: GpuInfo, trt_version: str) -> dict[str, Any]:
    """Everything the plan is a function of: the graph, the plugin, every build option, TensorRT and the GPU.
    Recorded with the plan; a plan whose record differs in any entry is rebuilt."""
    return {
        "onnx_sha256": sha256_of(opts.onnx),
        "plugin_sha256": sha256_of(opts.plugin) if opts.plugin else None,
        "precision": opts.precision,
        "fp16_transform": opts.fp16_transform,
        "profile": opts.profile.key(),
        "workspace_mib": opts.workspace_mib,
        "tensorrt_version": trt_version,
        "gpu": gpu.name,
        "compute_capability": "{}.{}".format(*gpu.compute_capability),
    }


def rebuild_reason(opts: BuildOptions, gpu: GpuInfo, trt_version: str) -> str | None:
    """Why the plan must be (re)built, or None when the existing one has the same :func:`build_key`."""
    if not opts.onnx.is_file():
        raise BuildError(f"ONNX graph {opts.onnx} not found")
    built = read_metadata(opts.output).get("build")
    if not opts.output.is_file() or not isinstance(built, dict):
        return "no plan yet"
    want = build_key(opts, gpu, trt_version)
    changed = [key for key, value in want.items() if built.get(key) != value]
    return f"changed: {', '.join(changed)}" if changed else None


def graph_inputs(onnx_path: Path) -> dict[str, Dims]:
    """The graph's inputs (initializers excluded) and their dimensions, None where dynamic."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return {
        value.name: [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        for value in graph.input
        if value.name not in initializers
    }


def check_graph(onnx_path: Path, profile: ShapeProfile) -> None:
    """Refuse, before TensorRT is involved, a graph whose inputs ``profile`` cannot serve
    (:meth:`Profile.check_inputs`, :meth:`ImageProfile.check_inputs`)."""
    profile.check_inputs(graph_inputs(onnx_path), onnx_path)


def check_dynamic_batch(onnx_path: Path) -> None:
    """The encoder's graph: dynamic first (batch) dimension, fixed other dimensions (:meth:`Profile.check_inputs`)."""
    check_graph(onnx_path, Profile())


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
    """TensorRT 10: ask for float32 on every float layer of the GA-SPIN transform; returns how many were pinned."""
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


def autocast_fp16(opts: BuildOptions) -> Path:
    """TensorRT 11: the graph converted to FP16 with FP32 I/O by ModelOpt AutoCast (NVIDIA's replacement for
    the FP16 builder flag), the transform's nodes kept in FP32 unless ``fp16_transform``. Written beside the plan."""
    try:
        import onnx
        from modelopt.onnx.autocast import convert_to_mixed_precision
    except ImportError as e:
        raise BuildError(
            f"TensorRT {tensorrt_version()} builds FP16 engines from a mixed-precision graph only, made with "
            f"ModelOpt AutoCast, which is not installed ({e}): pip install 'nvidia-modelopt[onnx]', or build fp32/tf32"
        ) from e
    excluded = [] if opts.fp16_transform else [f"^{TRANSFORM_SCOPE}.*"]
    converted = convert_to_mixed_precision(
        onnx_path=str(opts.onnx),
        low_precision_type="fp16",
        nodes_to_exclude=excluded,
        keep_io_types=True,
        # The SpinBlend node's shape and type come from the plugin (only plugin graphs pass one).
        **({"trt_plugins": [str(opts.plugin)]} if opts.plugin else {}),
    )
    path = opts.output.with_name(opts.output.stem + ".fp16.onnx")
    onnx.save(converted, str(path))
    return path


def attach_timing_cache(config: trt.IBuilderConfig, path: Path | None) -> str:
    """Give ``config`` the timing cache at ``path`` when it fits this GPU and TensorRT, else a fresh one (the old
    file is overwritten after the build). A cache from another GPU or TensorRT version only costs build time,
    so it is discarded with a warning, never fatal. Returns what happened, for the plan's record."""
    blob = path.read_bytes() if path is not None and path.is_file() else b""
    if blob:
        try:
            cache = config.create_timing_cache(blob)
            if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
                return "reused"
        except (RuntimeError, TypeError, ValueError):
            pass  # an unreadable cache is treated as a mismatched one
        print(f"build_engine: warning: timing cache {path} is from another GPU or TensorRT version (or damaged); "
              "discarded, the build times every tactic afresh", file=sys.stderr)  # fmt: skip
    if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
        raise BuildError("TensorRT refused an empty timing cache")
    return "discarded (other GPU or TensorRT)" if blob else "new"


def build_engine(opts: BuildOptions) -> dict[str, Any]:
    """Parse, configure, build; write the plan, its JSON metadata and the timing cache. Returns the metadata."""
    if not opts.onnx.is_file():
        raise BuildError(
            f"ONNX graph {opts.onnx} not found; the encoder's is exported by spinrec.export.onnx_export.export_encoder, "
            "the text detector's installed by the repository builder (python -m builders.build_repository)"
        )
    check_graph(opts.onnx, opts.profile)
    require_tensorrt()
    plan_of = precision_plan(opts.precision, opts.fp16_transform, hasattr(trt.BuilderFlag, "FP16"))
    gpu = query_gpu()
    key = build_key(opts, gpu, tensorrt_version())
    logger = trt.Logger(trt.Logger.WARNING)
    if opts.plugin is not None:
        load_plugin(opts.plugin, logger)

    graph = autocast_fp16(opts) if plan_of.autocast_fp16 else opts.onnx
    builder = trt.Builder(logger)
    # TensorRT 10 opts in with STRONGLY_TYPED; 11 is strongly typed whatever the flags (and may drop the flag).
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    flags = 1 << int(strongly_typed) if plan_of.strongly_typed and strongly_typed is not None else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        hint = "" if opts.plugin else " (a graph with SpinBlend nodes needs --plugin libspin_plugin.so)"
        raise BuildError(f"TensorRT could not parse {graph}{hint}:\n{errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mib << 20)
    if plan_of.tf32:
        config.set_flag(trt.BuilderFlag.TF32)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    pinned = 0
    if plan_of.fp16_flag:
        # No platform_has_fast_fp16 check (gone in TensorRT 11): every GPU the plugin supports (sm_75+) has it.
        config.set_flag(trt.BuilderFlag.FP16)
    if plan_of.pin_transform_fp32:
        pinned = pin_transform_fp32(network)
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)

    # The encoder's inputs are batched on dim 0 ("image"; the blend graph has four); the detector's one
    # photograph varies in height and width.
    profile = builder.create_optimization_profile()
    input_shapes: dict[str, list[list[int]]] = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tensor.shape
        lo, mid, hi = input_shapes[tensor.name] = opts.profile.input_shapes([dims[d] for d in range(len(dims))])
        profile.set_shape(tensor.name, trt.Dims(lo), trt.Dims(mid), trt.Dims(hi))
    config.add_optimization_profile(profile)
    cache_note = attach_timing_cache(config, opts.timing_cache)
    monitor = progress_monitor()  # referenced until the build returns, as TensorRT requires
    config.progress_monitor = monitor

    # An interrupted build must not leave a record that vouches for a plan it did not write.
    metadata_path(opts.output).unlink(missing_ok=True)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BuildError("TensorRT failed to build the engine (see the log above)")
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = opts.output.with_name(opts.output.name + ".tmp")
    tmp.write_bytes(bytes(plan))
    os.replace(tmp, opts.output)
    if opts.timing_cache:
        opts.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        opts.timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))

    metadata: dict[str, Any] = {
        "build": key,
        "network": "strongly typed" if plan_of.strongly_typed else "weakly typed",
        "transform_layers_pinned_fp32": pinned,
        "profile_shapes": input_shapes,
        "timing_cache": cache_note,
        "onnx": str(opts.onnx),
        "parsed_graph": str(graph),
        "plugin": str(opts.plugin) if opts.plugin else None,
        "plan_bytes": opts.output.stat().st_size,
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_metadata(opts.output, metadata)
    return metadata


def ensure_engine(opts: BuildOptions, if_needed: bool, prog: str) -> dict[str, Any] | None:
    """Build ``opts.output`` unless ``if_needed`` and it is current (:func:`rebuild_reason`), saying which on
    stderr. Returns the new plan's record, or None when the existing plan was kept."""
    reason: str | None = "requested"
    if if_needed:
        reason = rebuild_reason(opts, query_gpu(), tensorrt_version())  # the GPU first: no driver is the likelier news
    if reason is None:
        print(f"{prog}: {opts.output} is current", file=sys.stderr)
        return None
    print(f"{prog}: building {opts.output}, {opts.precision} ({reason})", file=sys.stderr)
    metadata = build_engine(opts)
    print(f"{prog}: wrote {opts.output} ({metadata['plan_bytes']} bytes)", file=sys.stderr)
    return metadata


def add_profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-batch", type=int, default=1)
    p.add_argument("--opt-batch", type=int, default=16)
    p.add_argument("--max-batch", type=int, default=64, help=">= the Triton config's max_batch_size")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m builders.build_engine", description=__doc__.split("\n\n")[0])
    p.add_argument("--onnx", type=Path, required=True, help="encoder graph (plugin or decomposed blend)")
    p.add_argument("--plugin", type=Path, default=None, help="libspin_plugin.so (needed for graphs with SpinBlend nodes)")
    p.add_argument("--output", type=Path, required=True, help="model.plan to write (plus model.plan.json)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16")
    add_profile_args(p)
    p.add_argument("--workspace-mib", type=int, default=1024)
    p.add_argument("--timing-cache", type=Path, default=None, help="read if it fits this GPU/TensorRT, written after the build")
    p.add_argument("--fp16-transform", action="store_true", help="let the GA-SPIN transform run in FP16 too")
    p.add_argument("--if-needed", action="store_true", help="keep an existing plan with the same graph, plugin, options, GPU and TensorRT")
    p.add_argument("--verify", action="store_true", help="then compare the engine with ONNX Runtime (builders.verify_engine)")
    add_verify_args(p)
    return p.parse_args(argv)


def run_builder(prog: str, options: Callable[[], BuildOptions], if_needed: bool, verify: Callable[[BuildOptions], int] | None) -> int:
    """A builder command's body: its options (checked), the engine built unless ``if_needed`` finds it current,
    then ``verify`` when given. Returns the exit status: verify's, else 0; 2 with one line for a TensorRT or build error."""
    try:
        opts = options()
        ensure_engine(opts, if_needed, prog)
        return verify(opts) if verify is not None else 0
    except TensorRTError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def options() -> BuildOptions:
        profile = Profile(args.min_batch, args.opt_batch, args.max_batch)
        return BuildOptions(
            args.onnx, args.plugin, args.output, args.precision, profile, args.workspace_mib, args.timing_cache, args.fp16_transform
        )

    def verify(opts: BuildOptions) -> int:
        return verify_and_record(opts.output, opts.plugin, opts.onnx, Profile(args.min_batch, args.opt_batch, args.max_batch), args)

    return run_builder("build_engine", options, args.if_needed, verify if args.verify else None)


if __name__ == "__main__":
    sys.exit(main())
