"""The TensorRT engine builder (builders/build_engine.py).

Here: its TensorRT API use type-checks against ``tensorrt-stubs`` (mypy), and it fails with clear messages
when TensorRT, the plugin, the graph or a sane profile is missing. Where TensorRT and a CUDA GPU exist
(scripts/gpu_check.sh): the plugin alone in an engine matches the PyTorch op, and the encoder engine builds
and passes ``--verify`` against ONNX Runtime in FP32 and FP16.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spinrec import onnx_export, weights
from spinrec.blend import spin_blend
from spinrec.models import SPIN, SPINConfig
from spinrec.models.gaspin import SPTransformerNetwork
from test_plugin_kernel import SPIN as SPIN_EXPONENTS
from test_plugin_kernel import TOL, random_inputs

ROOT = Path(__file__).resolve().parents[1]
BUILDER = ROOT / "builders" / "build_engine.py"
SMALL = SPINConfig(backbone_out_channels=64, neck_hidden_size=32, neck_out_channels=(32, 64), head_hidden_size=32)


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_engine", BUILDER)
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_engine"] = module
    spec.loader.exec_module(module)
    return module


build_engine = _load_builder()

has_tensorrt = build_engine.trt is not None


def tensorrt_gpu(test):
    """Marks (and skips where they are missing) tests that need TensorRT and a CUDA GPU."""
    marks = [
        pytest.mark.tensorrt,
        pytest.mark.gpu,
        pytest.mark.skipif(not has_tensorrt, reason="needs TensorRT's Python package (run scripts/gpu_check.sh in the TensorRT container)"),
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    ]
    for mark in marks:
        test = mark(test)
    return test


@pytest.fixture(scope="session")
def plugin_library(tmp_path_factory) -> Path:
    """``$SPIN_PLUGIN_LIBRARY``, or libspin_plugin.so built with CMake against the TensorRT found."""
    if os.environ.get("SPIN_PLUGIN_LIBRARY"):
        return Path(os.environ["SPIN_PLUGIN_LIBRARY"])
    if build_engine.find_tensorrt_headers() is None:
        pytest.skip("TensorRT headers (NvInfer.h) not installed: the plugin compiles only where TensorRT is (see its README)")
    return build_engine.build_plugin(tmp_path_factory.mktemp("plugin_build"))


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
        "[mypy-torch.*,numpy.*,spinrec.*,tqdm.*,onnx.*,onnxruntime.*]\nfollow_imports = skip\n"
    )

    def run(path: Path) -> subprocess.CompletedProcess:
        env = dict(os.environ, MYPYPATH=str(stubs))
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(work / "cache"), str(path)]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)

    return run


def test_builder_typechecks_against_tensorrt_stubs(mypy_run):
    done = mypy_run(BUILDER)
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
    with pytest.raises(build_engine.BuildError, match="min <= opt <= max"):
        build_engine.Profile(4, 2, 8)
    assert build_engine.Profile(1, 16, 64).shapes([1, 32, 100]) == [[1, 1, 32, 100], [16, 1, 32, 100], [64, 1, 32, 100]]


def test_cli_reports_missing_graph(tmp_path, capsys):
    code = build_engine.main(["--onnx", str(tmp_path / "none.onnx"), "--plugin", "x.so", "--output", str(tmp_path / "m.plan")])
    assert code == 2
    assert "ONNX graph" in capsys.readouterr().err


@pytest.mark.skipif(has_tensorrt, reason="TensorRT is installed here")
def test_cli_reports_missing_tensorrt(tmp_path, capsys):
    graph = tmp_path / "g.onnx"
    graph.write_bytes(b"")
    code = build_engine.main(["--onnx", str(graph), "--plugin", "x.so", "--output", str(tmp_path / "m.plan")])
    assert code == 2
    assert "TensorRT's Python package is not importable" in capsys.readouterr().err


def test_missing_plugin_library_is_named(tmp_path):
    with pytest.raises(build_engine.BuildError, match="plugin library .* not found"):
        build_engine.load_plugin(tmp_path / "libspin_plugin.so", None)


def test_plugin_build_without_headers_says_so(tmp_path, monkeypatch):
    if build_engine.find_tensorrt_headers() is not None:
        pytest.skip("TensorRT headers are installed here")
    with pytest.raises(build_engine.BuildError, match="NvInfer.h"):
        build_engine.build_plugin(tmp_path / "b")


def test_rebuild_reason_tracks_graph_gpu_tensorrt_and_settings(tmp_path):
    graph, plan = tmp_path / "g.onnx", tmp_path / "model.plan"
    graph.write_bytes(b"graph v1")
    opts = build_engine.BuildOptions(graph, None, plan, "fp16", build_engine.Profile(1, 16, 64), 1024)
    gpu = build_engine.GpuInfo("NVIDIA H100 80GB HBM3", (9, 0))
    assert build_engine.rebuild_reason(opts, gpu, "10.5.0") == "no plan yet"
    plan.write_bytes(b"plan")
    build_engine.write_metadata(plan, {
        "onnx_sha256": hashlib.sha256(b"graph v1").hexdigest(), "tensorrt_version": "10.5.0",
        "gpu": gpu.name, "compute_capability": "9.0", "precision": "fp16", "workspace_mib": 1024,
        "profile": {"min": 1, "opt": 16, "max": 64},
    })  # fmt: skip
    assert build_engine.rebuild_reason(opts, gpu, "10.5.0") is None
    assert build_engine.rebuild_reason(opts, build_engine.GpuInfo("NVIDIA L4", (8, 9)), "10.5.0") == "changed: gpu, compute_capability"
    assert build_engine.rebuild_reason(opts, gpu, "10.6.0") == "changed: tensorrt_version"
    graph.write_bytes(b"graph v2")
    opts.precision, opts.profile = "fp32", build_engine.Profile(1, 8, 32)
    assert build_engine.rebuild_reason(opts, gpu, "10.5.0") == "changed: onnx_sha256, precision, profile"


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
    opts = build_engine.BuildOptions(graph, plugin_library, plan, precision, build_engine.Profile(1, 4, 8), 256)
    build_engine.build_engine(opts)
    runner = build_engine.EngineRunner(plan, plugin_library)
    for batch in (1, 3, 8):
        inputs = random_inputs(np.random.default_rng(batch), batch)
        feeds = {name: inputs[name] for name in onnx_export.BLEND_INPUTS}
        got = runner(feeds)[onnx_export.BLEND_OUTPUT]
        t = {k: torch.from_numpy(v) for k, v in feeds.items()}
        want = spin_blend(t["image"], t["weights"], t["offsets"], t["gate"], net.bn.weight.detach(), net.bn.bias.detach(), SPIN_EXPONENTS, 1e-5)
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=tol)


@tensorrt_gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_encoder_engine_builds_and_verifies(plugin_library, tmp_path, precision):
    torch.manual_seed(0)
    model = SPIN(SMALL).eval()
    graph, checkpoint, plan, cache = tmp_path / "enc.onnx", tmp_path / "w.safetensors", tmp_path / "1" / "model.plan", tmp_path / "tc.bin"
    onnx_export.export_encoder(model, graph, blend="plugin")
    weights.save(model, checkpoint)
    args = ["--onnx", str(graph), "--plugin", str(plugin_library), "--output", str(plan), "--precision", precision,
            "--min-batch", "1", "--opt-batch", "4", "--max-batch", "8", "--timing-cache", str(cache),
            "--verify", "--checkpoint", str(checkpoint)]  # fmt: skip
    assert build_engine.main(args) == 0
    meta = json.loads(build_engine.metadata_path(plan).read_text())
    assert meta["precision"] == precision and meta["profile"]["shapes"]["image"][2] == [8, 1, 32, 100]
    assert meta["tensorrt_version"] and meta["gpu"] and cache.stat().st_size > 0
    report = meta["verify"]
    assert report["max_abs_error"]["features"] <= build_engine.TOLERANCE[precision]
    if precision == "fp32":
        assert report["text_agreement"] == 1.0
    assert build_engine.main([*args, "--verify-only"]) == 0
