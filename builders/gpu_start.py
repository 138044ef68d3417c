"""The GPU image's start: build what is missing or stale, then serve (``docker/entrypoint.sh`` runs this).

    python -m builders.gpu_start [--no-serve] [TRITONSERVER_ARGS...]

1. the model repository in ``$SPIN_MODELS`` from ``$SPIN_WEIGHTS`` (:mod:`spinrec.export.repository`, when its
   checkpoint changed): configs, decoder weights, the decomposed encoder graph;
2. the encoder graph TensorRT builds from: the ``SpinBlend`` plugin graph when the checkpoint has the
   inner-offset network (``offsets: true``; the plugin implements the blend with offsets only), else the
   decomposed graph from step 1, which TensorRT runs as ordinary layers;
3. the engine, ``$SPIN_PRECISION`` (default fp16) with profile 1/``$SPIN_OPT_BATCH``/``$SPIN_MAX_BATCH``
   (:mod:`builders.build_engine`, rebuilt when the graph, plugin, any option, the GPU or TensorRT changed);
4. the text detector's engine (``spin_detector``, which ``spin_page`` calls) from the graph step 1 installed,
   ``$SPIN_DETECTOR_PRECISION`` (default: ``$SPIN_PRECISION``), its profile checked against the largest input
   ``spin_page``'s configuration sends (:mod:`builders.build_detector_engine`, rebuilt on the same conditions);
5. ``tritonserver`` on the repository, with the plugin library when the engine has the plugin layer.

Every decision is a pure function of the settings and the checkpoint's recorded configuration
(:func:`settings_from_env`, :func:`plan_start`), so it is tested without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from builders.build_detector_engine import detector_build
from builders.build_engine import PRECISIONS, BuildOptions, Profile, sha256_of
from builders.engine_record import ImageProfile
from builders.tensorrt_env import BuildError
from spinrec.export.repository import export_check_options
from spinrec.runtime.tensorrt_encoder import TensorRTError
from spinrec.contract import CHECKPOINT, ENCODER, PAGE, ONNX as DECOMPOSED_GRAPH, PLAN

# CHECKPOINT is the repository builder's copy: both halves come from it.
PLUGIN_GRAPH = DECOMPOSED_GRAPH.with_name("model_plugin.onnx")
TIMING_CACHE = Path(".timing_cache")


@dataclass(frozen=True)
class StartSettings:
    models: Path
    weights: Path | None
    plugin: Path
    precision: str
    opt_batch: int
    max_batch: int
    export_options: tuple[str, ...] = ()  # the repository builder's export-check options (SPIN_MAX_ERROR, ...)
    detector_precision: str = "fp16"


def settings_from_env(env: Mapping[str, str]) -> StartSettings:
    """The image's environment variables (docker/README.md), checked."""
    precision = env.get("SPIN_PRECISION", "fp16")
    detector_precision = env.get("SPIN_DETECTOR_PRECISION") or precision
    for name, value in (("SPIN_PRECISION", precision), ("SPIN_DETECTOR_PRECISION", detector_precision)):
        if value not in PRECISIONS:
            raise BuildError(f"{name}={value!r}: must be one of {', '.join(PRECISIONS)}")
    batches = {}
    for name, default in (("SPIN_OPT_BATCH", 16), ("SPIN_MAX_BATCH", 64)):
        try:
            batches[name] = int(env.get(name, default))
        except ValueError:
            raise BuildError(f"{name}={env[name]!r} is not an integer") from None
    Profile(1, batches["SPIN_OPT_BATCH"], batches["SPIN_MAX_BATCH"])  # refuses a disordered profile
    tolerances: dict[str, float | None] = {}
    for name in ("SPIN_MAX_ERROR", "SPIN_NOISE_FACTOR"):
        try:
            tolerances[name] = float(env[name]) if env.get(name) else None
        except ValueError:
            raise BuildError(f"{name}={env[name]!r} is not a number") from None
    weights = Path(env["SPIN_WEIGHTS"]) if env.get("SPIN_WEIGHTS") else None
    return StartSettings(
        models=Path(env.get("SPIN_MODELS", "/models")),
        weights=weights if weights is not None and weights.is_file() else None,
        plugin=Path(env.get("SPIN_PLUGIN_LIBRARY", "/opt/spin/lib/libspin_plugin.so")),
        precision=precision,
        opt_batch=batches["SPIN_OPT_BATCH"],
        max_batch=batches["SPIN_MAX_BATCH"],
        export_options=tuple(export_check_options(tolerances["SPIN_MAX_ERROR"], tolerances["SPIN_NOISE_FACTOR"])),
        detector_precision=detector_precision,
    )


@dataclass(frozen=True)
class StartPlan:
    blend: str  # "plugin" or "decomposed"
    export_reason: str | None  # why the plugin graph must be (re)exported; None: current or not used
    engine: BuildOptions
    server_plugin: Path | None  # library tritonserver loads for the TensorRT backend
    detector: BuildOptions  # the text detector's engine (no plugin)


def blend_for(offsets: bool) -> str:
    """The plugin implements SPIN's blend with its offset network only; without it the decomposed graph is built."""
    return "plugin" if offsets else "decomposed"


def export_reason(checkpoint_sha256: str, exported: Mapping[str, object] | None) -> str | None:
    """Why the plugin graph must be exported: none yet, or exported from another checkpoint."""
    if exported is None:
        return "no plugin graph yet"
    if exported.get("checkpoint_sha256") != checkpoint_sha256:
        return "checkpoint changed"
    return None


def encoder_max_batch(config_text: str) -> int:
    m = re.search(r"^\s*max_batch_size:\s*(\d+)", config_text, re.MULTILINE)
    if m is None:
        raise BuildError("spin_encoder/config.pbtxt has no max_batch_size")
    return int(m[1])


def page_max_side(config_text: str) -> int:
    """The largest side of a detector input ``spin_page`` sends with the options of its ``config.pbtxt``: a
    photograph resized to at most ``max_side_len`` a side, rounded to a multiple of 32 (:func:`spinrec.page.detect.input_size`)."""
    from spinrec.page.detect import DetectorOptions, input_size

    params = dict(re.findall(r'parameters\s*\{\s*key:\s*"(\w+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"', config_text))
    try:
        options = DetectorOptions.from_params(params)
    except ValueError as e:
        raise BuildError(f"spin_page/config.pbtxt: {e}") from None
    return max(input_size(options.max_side_len, options.max_side_len, options))


def plan_start(
    settings: StartSettings,
    offsets: bool,
    checkpoint_sha256: str,
    exported: Mapping[str, object] | None,
    config_max_batch: int,
    detector_max_side: int,
) -> StartPlan:
    """Which graph, which precision and profile, what to export: from the settings, the checkpoint's recorded
    ``offsets``, its hash, the record of the last plugin export, the encoder config's max_batch_size and the
    largest detector input spin_page's config sends (:func:`page_max_side`)."""
    if settings.max_batch < config_max_batch:
        raise BuildError(
            f"SPIN_MAX_BATCH={settings.max_batch} is below spin_encoder's max_batch_size {config_max_batch}: "
            "Triton would refuse the engine; raise SPIN_MAX_BATCH"
        )
    detector_profile = ImageProfile()
    if detector_max_side > min(detector_profile.max):
        raise BuildError(
            f"spin_page's max_side_len sends the detector inputs up to {detector_max_side} pixels a side, beyond its engine's "
            f"profile ({detector_profile.max[0]}x{detector_profile.max[1]}): lower max_side_len in spin_page/config.pbtxt"
        )
    blend = blend_for(offsets)
    models = settings.models
    engine = BuildOptions(
        onnx=models / (PLUGIN_GRAPH if blend == "plugin" else DECOMPOSED_GRAPH),
        plugin=settings.plugin if blend == "plugin" else None,
        output=models / PLAN,
        precision=settings.precision,
        profile=Profile(1, settings.opt_batch, settings.max_batch),
        timing_cache=models / TIMING_CACHE,
    )
    return StartPlan(
        blend=blend,
        export_reason=export_reason(checkpoint_sha256, exported) if blend == "plugin" else None,
        engine=engine,
        server_plugin=engine.plugin,
        detector=detector_build(models, settings.detector_precision, detector_profile, timing_cache=models / TIMING_CACHE),
    )


def server_command(settings: StartSettings, plan: StartPlan, extra: Sequence[str]) -> list[str]:
    cmd = ["tritonserver", f"--model-repository={settings.models}"]
    if plan.server_plugin is not None:
        cmd.append(f"--backend-config=tensorrt,plugins={plan.server_plugin}")
    return [*cmd, "--backend-config=python,shm-default-byte-size=16777216", *extra]


def _export_record(models: Path) -> Path:
    return models / PLUGIN_GRAPH.with_suffix(".json")


def prepare(settings: StartSettings) -> StartPlan:
    """Steps 1-4 of the module doc; returns the plan that was carried out."""
    from builders import build_engine
    from spinrec.export import repository as build_repository
    from spinrec import weights as spin_weights
    from spinrec.models import SPINConfig

    # --no-int8: the INT8 encoders are the CPU configuration's; calibrating them needs NNCF, OpenVINO and the
    # synthetic generator's fonts and word list, none of which the GPU image has.
    repo_args = ["--output", str(settings.models), "--if-needed", "--no-int8", *settings.export_options]
    if settings.weights is not None:
        repo_args += ["--weights", str(settings.weights)]
    else:
        print("gpu_start: no checkpoint at SPIN_WEIGHTS: the repository builder decides (untrained weights are announced)", file=sys.stderr)
    if build_repository.main(repo_args) != 0:
        raise BuildError("the model repository could not be built (see above)")

    checkpoint = settings.models / CHECKPOINT
    config = spin_weights.config_of(spin_weights.read_metadata(checkpoint))
    offsets = (config or SPINConfig()).offsets
    checkpoint_sha = sha256_of(checkpoint)
    record = _export_record(settings.models)
    exported = json.loads(record.read_text()) if record.is_file() else None
    config_max = encoder_max_batch((settings.models / ENCODER / "config.pbtxt").read_text())
    max_side = page_max_side((settings.models / PAGE / "config.pbtxt").read_text())
    plan = plan_start(settings, offsets, checkpoint_sha, exported, config_max, max_side)
    print(f"gpu_start: checkpoint offsets={offsets}: {plan.blend} graph, {settings.precision} engine", file=sys.stderr)

    if plan.export_reason is not None:
        from spinrec.export import onnx_export

        print(f"gpu_start: exporting the plugin graph ({plan.export_reason})", file=sys.stderr)
        record.unlink(missing_ok=True)
        if onnx_export.main(["--weights", str(checkpoint), "--output", str(plan.engine.onnx), "--blend", "plugin"]) != 0:
            raise BuildError("the plugin graph differs from PyTorch beyond the export tolerance (see above)")
        record.write_text(json.dumps({"checkpoint_sha256": checkpoint_sha}) + "\n")

    build_engine.ensure_engine(plan.engine, True, "gpu_start")
    build_engine.ensure_engine(plan.detector, True, "gpu_start")
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m builders.gpu_start", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--no-serve", action="store_true", help="build only; print the tritonserver command instead of running it")
    args, extra = p.parse_known_args(argv)
    try:
        settings = settings_from_env(os.environ)
        plan = prepare(settings)
    except TensorRTError as e:
        print(f"gpu_start: error: {e}", file=sys.stderr)
        return 2
    cmd = server_command(settings, plan, extra)
    if args.no_serve:
        print(" ".join(cmd))
        return 0
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(cmd[0], cmd)
    return 0  # not reached: exec replaces this process


if __name__ == "__main__":
    sys.exit(main())
