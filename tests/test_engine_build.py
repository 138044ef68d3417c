"""The TensorRT engine builders (builders/build_engine.py, verify_engine.py; the detector's, which reuse them, are
type-checked here too and tested in test_detector_engine.py) and the engine runtime they share
(spinrec/runtime/tensorrt_encoder.py).

Here: their TensorRT API use type-checks against ``tensorrt-stubs`` (mypy); every decision that needs no
TensorRT runs (which settings each precision takes on TensorRT 10 and 11, what triggers a rebuild, the static
batch refusal, batch chunks inside the profile, the timing-cache fallback); the verification logic runs with
ONNX Runtime standing on both sides. Where TensorRT and a CUDA GPU exist (scripts/gpu_check.sh): the plugin
alone in an engine matches the PyTorch op, and the encoder engine builds and passes verification against ONNX
Runtime in FP32 and FP16.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from builders import build_engine, tensorrt_env, verify_engine
from builders.build_engine import BuildOptions, Profile
from builders.build_plugin import build_plugin, find_nvinfer, find_tensorrt_headers
from builders.tensorrt_env import BuildError, GpuInfo
from spinrec.runtime.tensorrt_encoder import TensorRTError
from spinrec import weights
from spinrec.export import onnx_export
from spinrec.models.blend import spin_blend
from spinrec.models import SPIN, SPINConfig
from spinrec.models.gaspin import SPTransformerNetwork
from test_plugin_kernel import SPIN as SPIN_EXPONENTS
from test_plugin_kernel import TOL, random_inputs

ROOT = Path(__file__).resolve().parents[1]
BUILDERS = [
    ROOT / "builders" / f"{name}.py"
    for name in ("tensorrt_env", "engine_record", "build_plugin", "build_engine", "verify_engine", "build_detector_engine", "verify_detector", "gpu_start", "gpu_report")
]
BUILDERS.append(ROOT / "spinrec" / "runtime" / "tensorrt_encoder.py")
SMALL = SPINConfig(backbone_out_channels=64, neck_hidden_size=32, neck_out_channels=(32, 64), head_hidden_size=32)

has_tensorrt = tensorrt_env.trt is not None


def _has_cuda_python() -> bool:
    try:
        from spinrec.runtime.tensorrt_encoder import cudart

        cudart()
        return True
    except TensorRTError:
        return False


def tensorrt_gpu(test):
    """Marks (and skips where they are missing) tests that need TensorRT, cuda-python and a CUDA GPU. The
    engine runs on cuda-python's device buffers, so the GPU image's CPU-only PyTorch is enough."""
    marks = [
        pytest.mark.tensorrt,
        pytest.mark.gpu,
        pytest.mark.skipif(not has_tensorrt, reason="needs TensorRT's Python package (run scripts/gpu_check.sh on a GPU host)"),
        pytest.mark.skipif(not _has_cuda_python(), reason="needs cuda-python (pip install cuda-python)"),
        pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU and driver"),
    ]
    for mark in marks:
        test = mark(test)
    return test


@pytest.fixture(scope="session")
def plugin_library(tmp_path_factory) -> Path:
    """``$SPIN_PLUGIN_LIBRARY``, or libspin_plugin.so built and linked with CMake against the TensorRT found.
    Headers without libnvinfer (NVIDIA's published headers, CI) compile the plugin but cannot link or load it:
    test_plugin_build's compile-only tests cover that case, these skip."""
    if os.environ.get("SPIN_PLUGIN_LIBRARY"):
        return Path(os.environ["SPIN_PLUGIN_LIBRARY"])
    if find_tensorrt_headers() is None:
        pytest.skip("TensorRT headers (NvInfer.h) not installed: the plugin links only where TensorRT is (see its README)")
    if find_nvinfer() is None:
        pytest.skip("TensorRT headers found but no libnvinfer: the plugin compiles (test_plugin_build) but cannot be linked or loaded here")
    return build_plugin(tmp_path_factory.mktemp("plugin_build"))


@pytest.fixture(scope="module")
def small_graphs(tmp_path_factory):
    """A small SPIN with offsets exported both ways, and its checkpoint."""
    torch.manual_seed(0)
    model = SPIN(SMALL).eval()
    out = tmp_path_factory.mktemp("graphs")
    onnx_export.export_encoder(model, out / "decomposed.onnx")
    onnx_export.export_encoder(model, out / "plugin.onnx", blend="plugin")
    weights.save(model, out / "w.safetensors")
    return out


# --- static checks and errors (run everywhere) ---------------------------------------------------------------


def _repaired_stubs(dst: Path) -> Path:
    """A copy of tensorrt-stubs' packages that Python can parse.

    tensorrt-stubs (10.8 to 10.13) is generated from pybind11 signatures and a few of them are not Python: four
    Python-plugin methods take a parameter named ``in`` and ``add_scale_nd`` puts a required argument after
    defaults. Those signatures become ``(self, *args, **kwargs)``; every other stub is left as published. The
    stubs also sit in plain folders without py.typed, so mypy reads them through MYPYPATH.
    """
    import ast

    files = [f for f in importlib.metadata.files("tensorrt-stubs") or [] if str(f).endswith(".pyi")]
    for f in files:
        target = dst / str(f)
        target.parent.mkdir(parents=True, exist_ok=True)
        lines = Path(f.locate()).read_text().split("\n")
        while True:
            try:
                ast.parse("\n".join(lines))
                break
            except SyntaxError as e:
                line = lines[e.lineno - 1]
                m = re.match(r"^(\s*def \w+)\((.*)\)( -> .*:)$", line)
                assert m, f"unexpected syntax error in {f}:{e.lineno}: {line}"
                head = "self, " if m[2].lstrip().startswith("self") else ""
                lines[e.lineno - 1] = f"{m[1]}({head}*args: typing.Any, **kwargs: typing.Any){m[3]}"
        target.write_text("\n".join(lines))
    return dst


@pytest.fixture(scope="module")
def mypy_run(tmp_path_factory):
    pytest.importorskip("mypy", reason="mypy not installed (pip install mypy==2.4.1)")
    try:
        importlib.metadata.distribution("tensorrt-stubs")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("tensorrt-stubs not installed (pip install --no-deps tensorrt-stubs==10.13.0.35.1)")
    work = tmp_path_factory.mktemp("mypy")
    stubs = _repaired_stubs(work / "stubs")
    config = work / "mypy.ini"
    # Errors inside the generated stubs are theirs; torch/numpy/spinrec are not what this check is about.
    config.write_text(
        "[mypy]\npython_version = 3.11\ncheck_untyped_defs = True\nignore_missing_imports = True\n"
        "[mypy-tensorrt.*,tensorrt_bindings.*]\nignore_errors = True\n"
        "[mypy-torch.*,numpy.*,spinrec.*,tqdm.*,onnx.*,onnxruntime.*,cuda.*,modelopt.*]\nfollow_imports = skip\n"
    )

    def run(*paths: Path) -> subprocess.CompletedProcess:
        env = dict(os.environ, MYPYPATH=str(stubs))
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(work / "cache"), *map(str, paths)]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)

    return run


def test_builders_typecheck_against_tensorrt_stubs(mypy_run):
    done = mypy_run(*BUILDERS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_sees_tensorrt_api_misuse(mypy_run, tmp_path):
    """The check above is live: the same setup rejects a wrong argument type and a method TensorRT lacks."""
    bad = tmp_path / "bad_builder.py"
    bad.write_text(
        "import tensorrt as trt\n"
        "builder = trt.Builder(trt.Logger(trt.Logger.WARNING))\n"
        "config = builder.create_builder_config()\n"
        "config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, '1 GiB')\n"
        "builder.build_engine_from_onnx('x.onnx')\n"
    )
    done = mypy_run(bad)
    assert done.returncode == 1
    assert 'incompatible type "str"; expected "int"' in done.stdout
    assert '"Builder" has no attribute "build_engine_from_onnx"' in done.stdout


def test_profile_must_be_ordered():
    with pytest.raises(BuildError, match="min <= opt <= max"):
        Profile(4, 2, 8)
    assert Profile(1, 16, 64).shapes([1, 32, 100]) == [[1, 1, 32, 100], [16, 1, 32, 100], [64, 1, 32, 100]]


def test_precision_settings_on_tensorrt_10_and_11():
    """TensorRT 10 (BuilderFlag.FP16 exists): weakly typed, FP16 flag, the transform pinned to FP32 by per-layer
    precision. TensorRT 11 (no FP16 flag, no per-layer precision): strongly typed, FP16 from an AutoCast graph."""
    plan = build_engine.precision_plan
    assert plan("fp32", False, True) == build_engine.PrecisionPlan(False, False, False, False, False)
    assert plan("tf32", False, True) == build_engine.PrecisionPlan(False, True, False, False, False)
    assert plan("fp16", False, True) == build_engine.PrecisionPlan(False, True, True, True, False)
    assert plan("fp16", True, True) == build_engine.PrecisionPlan(False, True, True, False, False)
    assert plan("fp32", False, False) == build_engine.PrecisionPlan(True, False, False, False, False)
    assert plan("fp16", False, False) == build_engine.PrecisionPlan(True, True, False, False, True)
    with pytest.raises(BuildError, match="precision must be one of"):
        plan("int8", False, True)


def test_cli_reports_missing_graph(tmp_path, capsys):
    code = build_engine.main(["--onnx", str(tmp_path / "none.onnx"), "--plugin", "x.so", "--output", str(tmp_path / "m.plan")])
    assert code == 2
    assert "ONNX graph" in capsys.readouterr().err


@pytest.mark.skipif(has_tensorrt, reason="TensorRT is installed here")
def test_cli_reports_missing_tensorrt(small_graphs, tmp_path, capsys):
    code = build_engine.main(["--onnx", str(small_graphs / "decomposed.onnx"), "--output", str(tmp_path / "m.plan")])
    assert code == 2
    assert "TensorRT's Python package is not importable" in capsys.readouterr().err


def test_static_batch_graph_is_refused_before_tensorrt(small_graphs, tmp_path, capsys):
    import onnx

    build_engine.check_dynamic_batch(small_graphs / "decomposed.onnx")
    build_engine.check_dynamic_batch(small_graphs / "plugin.onnx")
    static = onnx.load(str(small_graphs / "decomposed.onnx"))
    static.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 8
    onnx.save(static, str(tmp_path / "static.onnx"))
    code = build_engine.main(["--onnx", str(tmp_path / "static.onnx"), "--output", str(tmp_path / "m.plan")])
    assert code == 2
    assert "input 'image' has a static batch of 8" in capsys.readouterr().err


def test_missing_plugin_library_is_named(tmp_path):
    with pytest.raises(TensorRTError, match="plugin library .* not found"):
        tensorrt_env.load_plugin(tmp_path / "libspin_plugin.so", None)


def test_plugin_build_without_headers_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORRT_ROOT", str(tmp_path / "no_tensorrt"))
    with pytest.raises(BuildError, match="NvInfer.h"):
        build_plugin(tmp_path / "b")


def test_rebuild_reason_tracks_every_build_option(tmp_path):
    graph, plugin, plan = tmp_path / "g.onnx", tmp_path / "libspin_plugin.so", tmp_path / "model.plan"
    graph.write_bytes(b"graph v1")
    plugin.write_bytes(b"plugin v1")
    opts = BuildOptions(graph, plugin, plan, "fp16", Profile(1, 16, 64), 1024, tmp_path / "tc.bin")
    gpu = GpuInfo("NVIDIA H100 80GB HBM3", (9, 0))
    assert build_engine.rebuild_reason(opts, gpu, "10.5.0") == "no plan yet"
    plan.write_bytes(b"plan")
    build_engine.write_metadata(plan, {"build": build_engine.build_key(opts, gpu, "10.5.0")})
    assert build_engine.rebuild_reason(opts, gpu, "10.5.0") is None
    opts.timing_cache = tmp_path / "elsewhere.bin"  # where the cache lives does not change the plan
    assert build_engine.rebuild_reason(opts, gpu, "10.5.0") is None
    assert build_engine.rebuild_reason(opts, GpuInfo("NVIDIA L4", (8, 9)), "10.5.0") == "changed: gpu, compute_capability"
    assert build_engine.rebuild_reason(opts, gpu, "11.1.0") == "changed: tensorrt_version"
    opts.fp16_transform = True
    assert build_engine.rebuild_reason(opts, gpu, "10.5.0") == "changed: fp16_transform"
    opts.fp16_transform = False
    plugin.write_bytes(b"plugin v2")
    assert build_engine.rebuild_reason(opts, gpu, "10.5.0") == "changed: plugin_sha256"
    graph.write_bytes(b"graph v2")
    opts.precision, opts.profile, opts.workspace_mib = "fp32", Profile(1, 8, 32), 512
    assert build_engine.rebuild_reason(opts, gpu, "10.5.0") == "changed: onnx_sha256, plugin_sha256, precision, profile, workspace_mib"
    build_engine.write_metadata(plan, {"tensorrt_version": "10.5.0"})  # a record from before options were recorded
    assert build_engine.rebuild_reason(opts, gpu, "10.5.0") == "no plan yet"


class _RecordedConfig:
    """Stands in for trt.IBuilderConfig in the one call pattern attach_timing_cache uses (no TensorRT runs
    here): as TensorRT documents, set_timing_cache(cache, ignore_mismatch=False) returns False for a cache made
    on another device or version. The cache here is its blob."""

    def __init__(self, compatible: bytes):
        self.compatible, self.attached = compatible, None

    def create_timing_cache(self, blob: bytes) -> bytes:
        return blob

    def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False
        if cache not in (b"", self.compatible):
            return False
        self.attached = cache
        return True


def test_timing_cache_from_another_gpu_is_discarded_with_a_warning(tmp_path, capsys):
    cache = tmp_path / "tc.bin"
    config = _RecordedConfig(compatible=b"this GPU")
    assert build_engine.attach_timing_cache(config, cache) == "new" and config.attached == b""
    cache.write_bytes(b"this GPU")
    assert build_engine.attach_timing_cache(config, cache) == "reused" and config.attached == b"this GPU"
    assert capsys.readouterr().err == ""
    cache.write_bytes(b"an A100 with TensorRT 10.3")
    assert build_engine.attach_timing_cache(config, cache) == "discarded (other GPU or TensorRT)"
    assert config.attached == b""
    assert "from another GPU or TensorRT version" in capsys.readouterr().err


@pytest.mark.parametrize("n, lo, hi", [(1, 1, 64), (64, 1, 64), (65, 1, 64), (130, 8, 64), (3, 4, 8), (9, 4, 8), (200, 16, 16)])
def test_batch_chunks_stay_inside_the_profile_and_cover_every_row(n, lo, hi):
    chunks = verify_engine.chunk_indices(n, Profile(lo, lo, hi))
    assert all(lo <= len(c) <= hi for c in chunks)
    assert set(np.concatenate(chunks).tolist()) == set(range(n))


def test_verify_logic_with_onnx_runtime_on_both_sides(small_graphs, tmp_path):
    """The comparison the GPU check relies on, run where ONNX Runtime is the only runtime: the plugin graph
    (SpinBlend through the kernel's host reference) against the decomposed graph passes; a run that perturbs
    the features beyond the tolerance fails and names the crops whose texts changed."""
    from spinrec.runtime.ort_spin_blend import session

    plugin_ort, decomposed_ort = session(small_graphs / "plugin.onnx"), session(small_graphs / "decomposed.onnx")
    calls = []

    def plugin_run(x):
        calls.append(len(x))
        return plugin_ort.run(["features"], {"image": x})[0]

    def reference(x):
        return decomposed_ort.run(["features"], {"image": x})[0]

    rng = np.random.default_rng(0)
    profile = Profile(2, 4, 8)
    crops = tmp_path / "crops"
    crops.mkdir()
    from conftest import WORDS, render_word

    for i, word in enumerate(WORDS[:5]):
        (crops / f"{i}_{word}.png").write_bytes(render_word(word))
    image_sets = {"crops": verify_engine.load_images(crops)}
    random_sets = {"random_b3": rng.uniform(-1, 1, (3, 1, 32, 100)).astype(np.float32)}
    decode = verify_engine.decoder_of(small_graphs / "w.safetensors")
    report = verify_engine.compare(plugin_run, reference, random_sets, image_sets, profile, 1e-4, decode)
    assert report["passed"], report
    assert report["max_abs_error"] <= 1e-4 and report["texts_identical"] == "5/5"
    assert all(2 <= b <= 8 for b in calls)  # 5 crops: one chunk of 5; 3 random: one of 3

    def perturbed(x):
        out = reference(x)
        out[0] = -out[0]  # the first row of every chunk reads something else
        return out

    report = verify_engine.compare(perturbed, reference, {}, image_sets, profile, 1e-4, decode)
    assert not report["passed"] and report["max_abs_error"] > 1e-4
    assert report["sets"]["crops"]["texts_identical"] in ("4/5", "5/5")

    def broken(x):
        out = reference(x)
        out[-1, 0, 0] = np.nan
        return out

    report = verify_engine.compare(broken, reference, random_sets, {}, profile, 1e-4)
    assert not report["passed"] and report["max_abs_error"] == float("inf")


# --- TensorRT + GPU ------------------------------------------------------------------------------------------


@tensorrt_gpu
@pytest.mark.parametrize("precision, tol", [("fp32", TOL), ("fp16", 1e-2)])  # fp16: image and output rounded to half
def test_plugin_engine_matches_pytorch(plugin_library, tmp_path, precision, tol):
    net = SPTransformerNetwork(1, 6).eval()
    with torch.no_grad():
        net.bn.weight.fill_(1.2)
        net.bn.bias.fill_(0.1)
    graph = tmp_path / "blend.onnx"
    onnx_export.export_blend(net, graph, blend="plugin")
    plan = tmp_path / "blend.plan"
    opts = BuildOptions(graph, plugin_library, plan, precision, Profile(1, 4, 8), 256)
    build_engine.build_engine(opts)
    from spinrec.runtime.tensorrt_encoder import EngineRunner

    runner = EngineRunner(plan, plugin_library)
    for batch in (1, 3, 8):
        inputs = random_inputs(np.random.default_rng(batch), batch)
        feeds = {name: inputs[name] for name in onnx_export.BLEND_INPUTS}
        got = runner(feeds)[onnx_export.BLEND_OUTPUT]
        t = {k: torch.from_numpy(v) for k, v in feeds.items()}
        want = spin_blend(t["image"], t["weights"], t["offsets"], t["gate"], net.bn.weight.detach(), net.bn.bias.detach(), SPIN_EXPONENTS, 1e-5)
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=tol)


@tensorrt_gpu
@pytest.mark.parametrize("blend", ["plugin", "decomposed"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_encoder_engine_builds_and_verifies(plugin_library, small_graphs, tmp_path, precision, blend):
    from conftest import WORDS, render_word

    crops = tmp_path / "crops"
    crops.mkdir()
    for i, word in enumerate(WORDS):
        (crops / f"{i}.png").write_bytes(render_word(word))
    plan, cache = tmp_path / "1" / "model.plan", tmp_path / "tc.bin"
    args = ["--onnx", str(small_graphs / f"{blend}.onnx"), "--output", str(plan), "--precision", precision,
            "--min-batch", "2", "--opt-batch", "4", "--max-batch", "8", "--timing-cache", str(cache),
            "--verify", "--images", str(crops)]  # fmt: skip
    if blend == "plugin":
        args += ["--plugin", str(plugin_library)]
    if precision == "fp32":
        # Texts only in FP32: this untrained model's readings are near-ties that half rounding may tip (the
        # shipped default's FP16 texts are checked by scripts/gpu_check.sh).
        args += ["--checkpoint", str(small_graphs / "w.safetensors")]
    assert build_engine.main(args) == 0
    meta = json.loads(build_engine.metadata_path(plan).read_text())
    assert meta["build"]["precision"] == precision and meta["profile_shapes"]["image"][2] == [8, 1, 32, 100]
    assert meta["build"]["tensorrt_version"] and meta["build"]["gpu"] and cache.stat().st_size > 0
    report = meta["verify"]
    assert report["passed"] and report["max_abs_error"] <= verify_engine.TOLERANCE[precision]
    assert report["texts_identical"] == (f"{len(WORDS)}/{len(WORDS)}" if precision == "fp32" else None)
    assert build_engine.main([*args, "--if-needed"]) == 0  # current: verified again, not rebuilt
    assert verify_engine.main(["--plan", str(plan), "--images", str(crops)]) == 0
