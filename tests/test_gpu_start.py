"""The GPU image's start decisions (builders/gpu_start.py), for checkpoints with and without the offset network.

Which graph the engine is built from, which precision and profile, what triggers an export or rebuild, and
what tritonserver is given are pure functions: checked here without a GPU. For both kinds of checkpoint the
chosen graph is really exported and passes the engine builder's checks that run before TensorRT.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import onnx
import pytest
import torch

from builders import build_engine, gpu_start
from builders.engine_record import ImageProfile
from builders.tensorrt_env import BuildError
from spinrec import weights
from spinrec.export import onnx_export
from spinrec.contract import DETECTOR_ONNX
from spinrec.export.repository import read_record
from spinrec.models import SPIN, SPINConfig
from spinrec.runtime import ort_spin_blend

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(backbone_out_channels=64, neck_hidden_size=32, neck_out_channels=(32, 64), head_hidden_size=32)
ENV = {"SPIN_MODELS": "/models", "SPIN_PLUGIN_LIBRARY": "/opt/spin/lib/libspin_plugin.so"}
#: The largest detector input side the shipped spin_page config sends (checked in test_detector_engine_follows_the_settings).
SIDE = 1984


def test_settings_from_the_image_environment(tmp_path):
    settings = gpu_start.settings_from_env(ENV)
    assert (settings.precision, settings.opt_batch, settings.max_batch) == ("fp16", 16, 64)
    assert settings.weights is None  # SPIN_WEIGHTS unset: the repository builder picks the default
    ckpt = tmp_path / "w.safetensors"
    ckpt.write_bytes(b"x")
    settings = gpu_start.settings_from_env({**ENV, "SPIN_WEIGHTS": str(ckpt), "SPIN_PRECISION": "fp32", "SPIN_MAX_BATCH": "128"})
    assert (settings.weights, settings.precision, settings.max_batch) == (ckpt, "fp32", 128)
    assert gpu_start.settings_from_env({**ENV, "SPIN_WEIGHTS": str(tmp_path / "absent")}).weights is None
    with pytest.raises(BuildError, match="SPIN_PRECISION='int8'"):
        gpu_start.settings_from_env({**ENV, "SPIN_PRECISION": "int8"})
    assert gpu_start.settings_from_env(ENV).export_options == ()
    tolerant = gpu_start.settings_from_env({**ENV, "SPIN_MAX_ERROR": "2e-4", "SPIN_NOISE_FACTOR": "5"})
    assert tolerant.export_options == ("--max-error", "0.0002", "--noise-factor", "5.0")
    with pytest.raises(BuildError, match="SPIN_MAX_ERROR='tight' is not a number"):
        gpu_start.settings_from_env({**ENV, "SPIN_MAX_ERROR": "tight"})
    with pytest.raises(BuildError, match="SPIN_MAX_BATCH='lots' is not an integer"):
        gpu_start.settings_from_env({**ENV, "SPIN_MAX_BATCH": "lots"})
    with pytest.raises(BuildError, match="min <= opt <= max"):
        gpu_start.settings_from_env({**ENV, "SPIN_OPT_BATCH": "32", "SPIN_MAX_BATCH": "16"})


def test_offsets_on_builds_the_plugin_graph_and_loads_the_plugin():
    settings = gpu_start.settings_from_env(ENV)
    plan = gpu_start.plan_start(settings, offsets=True, checkpoint_sha256="aa", exported=None, config_max_batch=64, detector_max_side=SIDE)
    assert plan.blend == "plugin" and plan.export_reason == "no plugin graph yet"
    assert plan.engine.onnx == Path("/models/spin_encoder/1/model_plugin.onnx")
    assert plan.engine.plugin == settings.plugin == plan.server_plugin
    assert (plan.engine.precision, plan.engine.profile.opt, plan.engine.profile.max) == ("fp16", 16, 64)
    assert plan.engine.output == Path("/models/spin_encoder/1/model.plan")
    assert plan.engine.timing_cache == Path("/models/.timing_cache")
    cmd = gpu_start.server_command(settings, plan, ["--log-verbose=1"])
    assert "--backend-config=tensorrt,plugins=/opt/spin/lib/libspin_plugin.so" in cmd and cmd[-1] == "--log-verbose=1"
    # Exported from this checkpoint before: kept; from another one: exported again.
    assert gpu_start.plan_start(settings, True, "aa", {"checkpoint_sha256": "aa"}, 64, SIDE).export_reason is None
    assert gpu_start.plan_start(settings, True, "bb", {"checkpoint_sha256": "aa"}, 64, SIDE).export_reason == "checkpoint changed"


def test_offsets_off_builds_the_decomposed_graph_without_the_plugin():
    """A checkpoint without the offset network (the default before 2026-12-03): the plugin graph cannot
    express it, so the engine is built from the repository builder's decomposed graph and tritonserver gets
    no plugin library."""
    settings = gpu_start.settings_from_env({**ENV, "SPIN_PRECISION": "tf32"})
    plan = gpu_start.plan_start(settings, offsets=False, checkpoint_sha256="aa", exported=None, config_max_batch=64, detector_max_side=SIDE)
    assert plan.blend == "decomposed" and plan.export_reason is None
    assert plan.engine.onnx == Path("/models/spin_encoder/1/model.onnx") and plan.engine.plugin is None
    assert plan.server_plugin is None and not any("plugins=" in a for a in gpu_start.server_command(settings, plan, []))
    assert plan.engine.precision == "tf32"


def test_engine_profile_must_cover_the_served_batch():
    config_max = gpu_start.encoder_max_batch((ROOT / "model_repository" / "spin_encoder" / "config.pbtxt").read_text())
    settings = gpu_start.settings_from_env({**ENV, "SPIN_OPT_BATCH": "8", "SPIN_MAX_BATCH": str(config_max // 2)})
    with pytest.raises(BuildError, match=f"below spin_encoder's max_batch_size {config_max}"):
        gpu_start.plan_start(settings, True, "aa", None, config_max, SIDE)


def test_detector_engine_follows_the_settings():
    """The text detector's engine: the repository builder's graph, no plugin, the shared timing cache, the encoder's
    precision unless SPIN_DETECTOR_PRECISION says otherwise, a profile covering every input spin_page's shipped config sends."""
    page_config = (ROOT / "model_repository" / "spin_page" / "config.pbtxt").read_text()
    assert gpu_start.page_max_side(page_config) == SIDE  # max_side_len 2000 -> 1984 (62.5 x 32 rounds to 62 x 32)
    plan = gpu_start.plan_start(gpu_start.settings_from_env({**ENV, "SPIN_PRECISION": "tf32"}), True, "aa", None, 64, SIDE)
    detector = plan.detector
    assert (detector.onnx, detector.output) == (Path("/models/spin_detector/1/model.onnx"), Path("/models/spin_detector/1/model.plan"))
    assert detector.plugin is None and detector.precision == "tf32" and detector.timing_cache == plan.engine.timing_cache
    assert detector.profile == ImageProfile((32, 32), (736, 1312), (2048, 2048))
    settings = gpu_start.settings_from_env({**ENV, "SPIN_DETECTOR_PRECISION": "fp32"})
    assert (settings.precision, settings.detector_precision) == ("fp16", "fp32")
    assert gpu_start.plan_start(settings, True, "aa", None, 64, SIDE).detector.precision == "fp32"
    assert gpu_start.settings_from_env({**ENV, "SPIN_DETECTOR_PRECISION": ""}).detector_precision == "fp16"
    with pytest.raises(BuildError, match="SPIN_DETECTOR_PRECISION='int8'"):
        gpu_start.settings_from_env({**ENV, "SPIN_DETECTOR_PRECISION": "int8"})
    # A spin_page config that would send larger photographs than the engine's profile serves is refused at start.
    wide = page_config.replace('key: "max_side_len" value: { string_value: "2000" }', 'key: "max_side_len" value: { string_value: "3000" }')
    assert gpu_start.page_max_side(wide) == 3008
    with pytest.raises(BuildError, match="up to 3008 pixels a side, beyond its engine's profile"):
        gpu_start.plan_start(settings, True, "aa", None, 64, gpu_start.page_max_side(wide))


def test_gpu_image_installs_what_whole_photographs_need():
    """The repository builder refuses to build without the detector graph rapidocr carries, and spin_page needs
    pyclipper: the GPU image installs both (not the whole serve extra), pinned as the serve extra pins them."""
    import tomllib

    serve = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    pins = {spec.split("==")[0]: spec for spec in serve}
    install = next(line for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines() if "/opt/spin/src[gpu,torch]" in line)
    for package in ("rapidocr", "pyclipper"):
        assert f" {pins[package]} " in f"{install} ", f"docker/Dockerfile must install {pins[package]}"


def test_shipped_default_checkpoint_gets_a_graph_its_builder_accepts(tmp_path):
    default = ROOT / "weights" / "default.safetensors"
    if not default.is_file():
        pytest.skip("no embedded default checkpoint")
    config = weights.config_of(weights.read_metadata(default)) or SPINConfig()
    plan = gpu_start.plan_start(gpu_start.settings_from_env(ENV), config.offsets, "aa", None, 64, SIDE)
    assert plan.blend == gpu_start.blend_for(config.offsets)
    if config.offsets:
        onnx_export.export_encoder(weights.load(default), tmp_path / "plugin.onnx", blend="plugin")
    else:
        with pytest.raises(ValueError, match="offset network"):  # what the old entrypoint ran into
            onnx_export.export_encoder(weights.load(default), tmp_path / "plugin.onnx", blend="plugin")


def test_gpu_check_report_states_every_engine_and_set(tmp_path):
    """scripts/gpu_check.sh's report from plan records as build_engine and verify_engine write them; the
    verification part is a real comparison (the same ONNX Runtime run on both sides, one text changed)."""
    import numpy as np

    from builders import gpu_report, verify_engine

    profile = build_engine.Profile(1, 2, 4)
    batch = np.random.default_rng(0).uniform(-1, 1, (3, 4)).astype(np.float32)
    texts = iter([["a", "b", "c"], ["a", "b", "x"]])
    verify = verify_engine.compare(lambda x: x, lambda x: x, {}, {"crops": (["1.png", "2.png", "3.png"], batch)}, profile,
                                   1e-3, lambda f: next(texts))  # fmt: skip
    assert not verify["passed"] and verify["texts_identical"] == "2/3"
    key = {"gpu": "NVIDIA H200", "compute_capability": "9.0", "tensorrt_version": "10.5.0", "precision": "fp16"}
    plans = {}
    for name, meta in {"fp16": {"build": key, "network": "weakly typed", "plugin": None, "plan_bytes": 3 << 20, "verify": verify}}.items():
        plans[name] = tmp_path / f"{name}.plan"
        build_engine.write_metadata(plans[name], meta)
    out = tmp_path / "report.md"
    perf = tmp_path / "summary.md"
    perf.write_text("# perf run\n| concurrency | infer/s |\n|---|---|\n| 1 | 900 |\n")
    code = gpu_report.main(["--engine", f"fp16={plans['fp16']}", "--perf-summary", str(perf), "--note", "note one", "--out", str(out)])
    text = out.read_text()
    assert code == 1  # a text differs: the check fails
    assert "GPU NVIDIA H200 (compute capability 9.0), TensorRT 10.5.0" in text and "note one" in text
    assert "| fp16 | decomposed | weakly typed | 3.0 | 0.00e+00 | 0.001 | 2/3 | **NO** |" in text
    assert "- fp16, crops/3.png: engine `c`, ONNX Runtime `x`" in text
    assert "## perf run" in text and "| 1 | 900 |" in text


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU is here: the start would go on to build the engine")
@pytest.mark.parametrize("offsets", [True, False])
def test_start_prepares_everything_up_to_the_gpu(offsets, tmp_path, capsys):
    """The start's glue, run for real with a small checkpoint of each kind: repository built, plugin graph exported
    (and recorded) only with offsets, then it stops where the GPU is needed, saying so. The graph it chose has
    the dynamic batch and fixed item shape the engine builder requires before TensorRT sees it."""
    torch.manual_seed(0)
    checkpoint = tmp_path / "w.safetensors"
    weights.save(SPIN(SPINConfig(offsets=offsets, **SMALL)).eval(), checkpoint)
    models = tmp_path / "models"
    env = {**ENV, "SPIN_MODELS": str(models), "SPIN_WEIGHTS": str(checkpoint), "SPIN_MAX_ERROR": "3e-4"}
    with pytest.raises(BuildError, match="nvidia-smi not found"):
        gpu_start.prepare(gpu_start.settings_from_env(env))
    assert (models / "spin_encoder" / "1" / "model.onnx").is_file()
    assert read_record(models)["int8"] == {}  # no INT8 calibration: the image lacks NNCF, OpenVINO and the fonts
    assert read_record(models)["onnx"]["tolerance"] >= 3e-4  # SPIN_MAX_ERROR reached the export check
    assert (models / gpu_start.PLUGIN_GRAPH).is_file() == offsets
    assert (models / gpu_start.PLUGIN_GRAPH.with_suffix(".json")).is_file() == offsets
    assert f"checkpoint offsets={offsets}: {'plugin' if offsets else 'decomposed'} graph, fp16 engine" in capsys.readouterr().err
    chosen = models / (gpu_start.PLUGIN_GRAPH if offsets else gpu_start.DECOMPOSED_GRAPH)
    assert ort_spin_blend.has_plugin_nodes(onnx.load(str(chosen))) == offsets
    build_engine.check_dynamic_batch(chosen)
    build_engine.check_graph(models / DETECTOR_ONNX, ImageProfile())  # the detector engine's graph, as its build checks it


def test_shell_scripts_pass_shellcheck():
    """scripts/gpu_check.sh runs only on a GPU host with Docker, the image's entrypoint only in the image: here
    they are at least checked statically, with the other shell scripts (setup, serve, test, CI, the fresh-machine test)."""
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (scripts/setup.sh --dev installs it as root)")
    scripts = [*sorted((ROOT / "scripts").glob("*.sh")), ROOT / "docker" / "entrypoint.sh", ROOT / "tests" / "fresh_machine.sh", ROOT / ".ci" / "run"]
    done = subprocess.run(["shellcheck", "--shell=bash", *map(str, scripts)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
