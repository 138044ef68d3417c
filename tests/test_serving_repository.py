"""The model repository's configs, the builder's record and rebuild logic, and the launcher's pieces
(no server here; tests/test_serving_server.py runs one)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from spinrec.export import repository as build_repository
from conftest import REPO_ROOT
from spinrec.serving import launch

SOURCE = REPO_ROOT / "model_repository"
MODELS = ("spin_preprocess", "spin_encoder", "spin_decoder", "spin_ocr")


def read_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def io(config, kind: str) -> dict[str, tuple[int, list[int]]]:
    return {t.name: (t.data_type, list(t.dims)) for t in getattr(config, kind)}


def served_configs(config_name: str | None) -> dict[str, model_config_pb2.ModelConfig]:
    """What tritonserver loads with ``--model-config-name=config_name``: configs/NAME.pbtxt where it exists."""
    out = {}
    for model in MODELS:
        alternative = SOURCE / model / "configs" / f"{config_name}.pbtxt"
        out[model] = read_config(alternative if config_name and alternative.is_file() else SOURCE / model / "config.pbtxt")
    return out


@pytest.mark.parametrize("config_name", ["cpu", None])
def test_ensemble_steps_fit_the_composing_models(config_name):
    if config_name is None and not (SOURCE / "spin_encoder" / "config.pbtxt").is_file():
        pytest.skip("spin_encoder/config.pbtxt (TensorRT) is not written yet")
    configs = served_configs(config_name)
    ensemble = configs["spin_ocr"]
    assert ensemble.platform == "ensemble"
    # tensor name in the ensemble -> (dtype, dims), filled as the steps produce them
    tensors = io(ensemble, "input")
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        assert model.name == step.model_name
        assert 0 < ensemble.max_batch_size <= model.max_batch_size
        model_inputs, model_outputs = io(model, "input"), io(model, "output")
        assert set(step.input_map) == set(model_inputs)
        for key, name in step.input_map.items():
            assert tensors[name] == model_inputs[key], f"{step.model_name}.{key}"
        for key, name in step.output_map.items():
            tensors[name] = model_outputs[key]
    for name, spec in io(ensemble, "output").items():
        assert tensors[name] == spec, name


def test_cpu_and_tensorrt_encoder_configs_have_identical_io():
    tensorrt_path = SOURCE / "spin_encoder" / "config.pbtxt"
    if not tensorrt_path.is_file():
        pytest.skip("spin_encoder/config.pbtxt (TensorRT) is not written yet")
    cpu, tensorrt = read_config(SOURCE / "spin_encoder" / "configs" / "cpu.pbtxt"), read_config(tensorrt_path)
    assert tensorrt.platform == "tensorrt_plan" and cpu.backend == "python"
    assert io(cpu, "input") == io(tensorrt, "input") and io(cpu, "output") == io(tensorrt, "output")
    assert cpu.max_batch_size == tensorrt.max_batch_size


def test_tensorrt_paired_decoder_is_the_cpu_decoder_with_more_instances():
    """Measured on an H200 host (perf/results/gpu_stages): NumPy on CPU cores beats the CuPy decoder up to
    batch ~32, so the TensorRT configuration decodes on the CPU too; only the instance count differs."""
    gpu_host, cpu_host = read_config(SOURCE / "spin_decoder" / "config.pbtxt"), read_config(SOURCE / "spin_decoder" / "configs" / "cpu.pbtxt")
    params = {k: v.string_value for k, v in gpu_host.parameters.items()}
    cpu_params = {k: v.string_value for k, v in cpu_host.parameters.items()}
    assert params.get("device", "cpu") == cpu_params.get("device", "cpu") == "cpu"
    assert {k: v for k, v in params.items() if k != "device"} == {k: v for k, v in cpu_params.items() if k != "device"}
    assert [g.kind for g in gpu_host.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert gpu_host.instance_group[0].count > cpu_host.instance_group[0].count
    assert io(gpu_host, "input") == io(cpu_host, "input") and io(gpu_host, "output") == io(cpu_host, "output")
    assert gpu_host.max_batch_size == cpu_host.max_batch_size


def test_python_models_are_cpu_batched_and_thin():
    for model, config in served_configs("cpu").items():
        if model == "spin_ocr":
            continue
        assert config.backend == "python" and config.HasField("dynamic_batching")
        assert all(g.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU for g in config.instance_group)
        script = SOURCE / model / "1" / (config.default_model_filename or "model.py")
        assert "from spinrec.serving.triton import" in script.read_text()


def test_built_artifacts_are_git_ignored():
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    artifacts = [f"model_repository/{a}" for a in build_repository.ARTIFACTS] + ["model_repository/spin_encoder/1/model.plan"]
    done = subprocess.run(["git", "check-ignore", "--no-index", *artifacts], cwd=REPO_ROOT, capture_output=True, text=True)
    assert sorted(done.stdout.split()) == sorted(artifacts)
    sources = ["model_repository/spin_decoder/1/model.py", "model_repository/spin_ocr/config.pbtxt"]
    done = subprocess.run(["git", "check-ignore", "--no-index", *sources], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.stdout == ""


def test_build_record_describes_the_build(built_repository, checkpoint):
    record = json.loads((built_repository / build_repository.RECORD).read_text())
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert record["identity"] == f"sha256={digest}" and record["untrained"] is False
    assert record["checkpoint"]["sha256"] == digest and record["checkpoint"]["source"] == str(checkpoint)
    assert record["onnx"]["opset"] == 17
    # The test checkpoint has random weights: marked as reading nothing usable (a `spinrec init` one alike).
    assert record["reads"]["images"] == 512 and record["reads"]["word_accuracy"] < 0.05 and record["reads"]["usable"] is False
    assert 0 <= record["onnx"]["max_relative_error_vs_torch"] <= record["onnx"]["tolerance"]
    assert record["onnx"]["tolerance"] >= 1e-4 and record["onnx"]["tokens_compared_on"] >= 6
    for artifact, size in record["artifacts"].items():
        assert (built_repository / artifact).stat().st_size == size
    # The sources were copied next to the artifacts.
    for model in MODELS:
        assert (built_repository / model / "config.pbtxt").read_text() == (SOURCE / model / "config.pbtxt").read_text()


def test_needs_build_tracks_artifacts_and_weights(built_repository, checkpoint, tmp_path):
    # built --no-int8: current for an fp32 server, not for the int8 one the launcher starts by default
    assert build_repository.needs_build(built_repository, checkpoint, int8=False) is None
    assert build_repository.needs_build(built_repository, checkpoint) == "no INT8 encoders"
    other = tmp_path / "other.safetensors"
    other.write_bytes(checkpoint.read_bytes() + b" ")  # different bytes, so a different identity
    assert "built from [sha256=" in build_repository.needs_build(built_repository, other)
    assert "missing" in build_repository.needs_build(tmp_path)
    with pytest.raises(build_repository.BuildError, match="checkpoint not found"):
        build_repository.needs_build(built_repository, tmp_path / "absent.safetensors")


def test_builder_if_needed_skips_a_current_repository(built_repository, checkpoint):
    """Current = same checkpoint and, unless --no-int8 (as the tests' repository was built), INT8 encoders present."""
    cmd = [sys.executable, "-m", "builders.build_repository", "--output", str(built_repository), "--weights", str(checkpoint),
           "--if-needed", "--no-int8"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "is up to date" in done.stdout


def test_builder_refuses_a_broken_checkpoint(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"definitely not safetensors")
    cmd = [sys.executable, "-m", "builders.build_repository", "--output", str(tmp_path / "repo"), "--weights", str(bad)]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "build_repository: error:" in done.stderr and str(bad) in done.stderr
    assert not (tmp_path / "repo" / build_repository.RECORD).exists()


def test_backend_directory_layout(tmp_path):
    binary, wheel = launch.find_server()
    assert binary.is_file() and os.access(binary, os.X_OK)
    if wheel is None:
        pytest.skip("tritonserver comes from PATH: its own backends are used")
    backends = launch.layout_backends(wheel, tmp_path)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    python = backends / "python"
    assert sorted(p.name for p in python.iterdir()) == ["libtriton_python.so", "triton_python_backend_stub", "triton_python_backend_utils.py"]
    assert (python / "triton_python_backend_stub").resolve().parent.name == version
    assert all(p.resolve().is_file() for p in python.iterdir())


def test_server_environment_and_command():
    env = launch.stub_environment({"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "3"})
    paths = env["PATH"].split(os.pathsep)
    # the stub finds this environment's packages through the python3 first on PATH
    assert paths[0] == str(Path(sys.executable).parent) and (Path(paths[0]) / "python3").exists()
    assert paths[1:] == ["/usr/bin", "/bin"]
    assert env["OMP_NUM_THREADS"] == "3" and env["OPENBLAS_NUM_THREADS"] == "1"

    args, extra = launch.parse_args(["--http-port", "1234", "--log-level", "verbose", "--exit-timeout-secs=5", "--", "--strict-readiness=false"])
    assert extra == ["--exit-timeout-secs=5", "--strict-readiness=false"]
    config = launch.choose_config("auto", True, args.model_repository, args.plugin)
    cmd = launch.server_command(args, Path("/bin/tritonserver"), Path("/tmp/b"), config, extra)
    assert cmd[0] == "/bin/tritonserver"
    for flag in ("--http-port=1234", "--log-verbose=1", "--backend-directory=/tmp/b", "--model-config-name=cpu", "--http-address=127.0.0.1"):
        assert flag in cmd
    assert not any(c.startswith("--backend-config=tensorrt") for c in cmd)
    assert cmd[-2:] == extra
    assert launch.choose_config("default", True, args.model_repository, args.plugin) is None


def test_tensorrt_configuration_loads_the_plugin(tmp_path):
    plugin = tmp_path / "libspin_plugin.so"
    args, _ = launch.parse_args(["--plugin", str(plugin), "--config", "default"])
    cmd = launch.server_command(args, Path("/usr/bin/tritonserver"), None, launch.choose_config("default", False, args.model_repository, plugin), [])
    assert f"--backend-config=tensorrt,plugins={plugin}" in cmd and not any(c.startswith("--model-config-name") for c in cmd)
    # auto never picks TensorRT without the plugin, even where a GPU, a server and an engine exist
    assert launch.choose_config("auto", False, args.model_repository, plugin) == "cpu"


def test_the_launcher_warns_at_start_about_weights_that_read_nothing(built_repository, capsys):
    launch.warn_if_unusable(built_repository)
    err = capsys.readouterr().err
    assert "WARNING: the checkpoint" in err and "it is untrained or degenerate" in err


def test_launcher_builds_a_missing_repository(tmp_path, checkpoint):
    """The launcher runs the real builder on an absent repository, passing the builder's options on
    (``scripts/serve.sh --weights W --max-error 2e-4`` reaches the export check)."""
    target = tmp_path / "repo"  # absent: the launcher must run the real builder before serving
    args, extra = launch.parse_args(["--max-error", "2e-4", "--noise-factor", "5", "--log-verbose=1"])
    assert launch.builder_options(args) == ["--max-error", "0.0002", "--noise-factor", "5.0"] and extra == ["--log-verbose=1"]
    launch.ensure_built(target, checkpoint, rebuild=False, options=launch.builder_options(args))
    assert build_repository.needs_build(target, checkpoint) is None
    record = json.loads((target / build_repository.RECORD).read_text())
    assert record["identity"].startswith("sha256=")
    assert record["onnx"]["tolerance"] == max(2e-4, 5 * record["onnx"]["torch_float32_noise"])
    with pytest.raises(launch.LaunchError, match="checkpoint not found"):
        launch.ensure_built(target, tmp_path / "absent.safetensors", rebuild=False)


def test_export_check_rule():
    """The export is judged by tokens and by a feature tolerance of max(floor, factor x float32 noise)."""
    from spinrec.export.onnx_export import EncoderCheck

    # a float32-sensitive checkpoint (PaddleOCR's TPS grid): 2.5e-4 is within 3x its own noise of 1e-4
    assert EncoderCheck(error=2.5e-4, noise=1e-4, compared=12).ok
    # a well-conditioned one earns only the floor
    tight = EncoderCheck(error=2.5e-4, noise=1e-6, compared=12)
    assert tight.tolerance == 1e-4 and not tight.ok
    assert tight.reason == "relative feature error 0.00025 > tolerance 0.0001 (= max(0.0001, 3 x float32 noise 1e-06))"
    # identical features are not enough when tokens differ, nor is a tolerance enough without them
    wrong = EncoderCheck(error=0.0, noise=1e-4, compared=12, differing=["image 3: [2, 1] != [2, 5]"])
    assert not wrong.ok and wrong.reason == "decoded tokens differ on 1 of 12 check images: image 3: [2, 1] != [2, 5]"
    assert EncoderCheck(error=2e-4, noise=0.0, compared=12, floor=2e-4, noise_factor=0.0).ok


def test_export_check_accepts_a_faithful_export_and_refuses_another_model(tmp_path):
    """check_encoder on a real export: the graph of the model passes (tokens compared on all 12 check
    images); the same graph judged against a slightly different model (the neck's last Linear weight
    0.5 % off, as a wrong export would be) is refused on its feature error."""
    import torch

    from spinrec.models import SPIN, SPINConfig
    from spinrec.export.onnx_export import check_encoder, export_encoder

    torch.manual_seed(3)
    model = SPIN(SPINConfig(backbone_out_channels=64, neck_hidden_size=32, neck_out_channels=(32, 64), head_hidden_size=32)).eval()
    path = tmp_path / "encoder.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_encoder(model, path)
    good = check_encoder(model, path)
    assert good.ok, good.reason
    assert good.error <= good.tolerance and 6 <= good.compared <= 12 and good.noise > 0
    with torch.no_grad():
        model.neck.encoder.encoder[-1].linear.weight.mul_(1.005)
    bad = check_encoder(model, path)
    assert not bad.ok and bad.reason.startswith("relative feature error"), bad.reason


def test_export_keeps_the_sigmoid_tail_of_a_dark_offset_under_a_closed_gate(tmp_path):
    """Black pixels blend in offset x gate alone; at offset logits of -25 and a gate logit of -12 that is
    about 1e-16, which the 0.03 power curve lifts to 0.33. ONNX Runtime's own Sigmoid returns 0 there
    (absolute error ~6e-8, nothing below -18; rectified pixels then move by 0.04), so the export must
    carry the tail (TailSigmoid): the exported transform matches PyTorch within 1e-5 on text images."""
    import onnxruntime
    import torch

    from spinrec.export import onnx_export
    from spinrec.models import SPIN, SPINConfig

    torch.manual_seed(5)
    model = SPIN(SPINConfig(backbone_out_channels=64, neck_hidden_size=32, neck_out_channels=(32, 64), head_hidden_size=32)).eval()
    with torch.no_grad():
        bias = model.transform.stucture_fc2.bias
        bias[0] = 2.0  # the curve of exponent 0.03, the one that magnifies the tail
        bias[model.transform.spt_length] = -12.0  # gate logit
        model.transform.offset_fc2.bias.fill_(-25.0)
    x = onnx_export.check_images(model)[: len(onnx_export.CHECK_WORDS)]
    assert (x == -1).any(), "the check words have black pixels"
    path = tmp_path / "transform.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_export._export(model.transform, (torch.from_numpy(x[:2]),), path, ["image"], "rectified", onnx_export.OPSET, "decomposed")
    with torch.no_grad():
        want = model.transform(torch.from_numpy(x)).numpy()
    got = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert np.abs(got - want).max() < 1e-5
