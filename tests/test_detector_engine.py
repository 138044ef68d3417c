"""The text detector's TensorRT engine (builders/build_detector_engine.py, verify_detector.py) around the encoder's
builder it reuses.

Here: the photograph profile (its order, the shapes TensorRT gets, the record), the graph checks that run before
TensorRT on the real PP-OCRv6 det small graph, what triggers a rebuild, the CLI's errors, the verification's
comparison with ONNX Runtime standing on both sides (and its failures), and the report. Where TensorRT and a CUDA GPU
exist (scripts/gpu_check.sh): the engine builds in FP32 and FP16 and matches ONNX Runtime on the synthetic page and
a photograph. Its TensorRT API use type-checks with the other builders (tests/test_engine_build.py, mypy).
"""

from __future__ import annotations

import argparse
import json
import shutil

import cv2
import numpy as np
import onnx
import pytest

from builders import build_detector_engine, build_engine, gpu_report, verify_detector
from builders.engine_record import ImageProfile, Profile, metadata_path, write_metadata
from builders.tensorrt_env import BuildError, GpuInfo
from spinrec.contract import DETECTOR_INPUT, DETECTOR_ONNX, DETECTOR_PLAN
from spinrec.page.synthetic import PAGE_WORDS, synthetic_page
from test_engine_build import has_tensorrt, tensorrt_gpu
from test_page import detector_graph  # noqa: F401 (the installed PP-OCRv6 det small graph, a fixture)

SMALL = ImageProfile((32, 32), (64, 96), (128, 160))


def test_the_photograph_profile_is_ordered_and_shapes_one_image():
    profile = ImageProfile()
    assert (profile.min, profile.opt, profile.max) == ((32, 32), (736, 1312), (2048, 2048))
    assert profile.input_shapes([-1, 3, -1, -1]) == [[1, 3, 32, 32], [1, 3, 736, 1312], [1, 3, 2048, 2048]]
    assert profile.key() == [[32, 32], [736, 1312], [2048, 2048]] == json.loads(json.dumps(profile.key()))
    assert profile.covers(1984, 32) and not profile.covers(2080, 736) and not profile.covers(736, 16)
    with pytest.raises(BuildError, match="min <= opt <= max width, got 32/1312/1024"):
        ImageProfile((32, 32), (736, 1312), (2048, 1024))
    with pytest.raises(BuildError, match="min <= opt <= max height"):
        ImageProfile((0, 32))
    assert Profile(1, 16, 64).input_shapes([-1, 1, 32, 100]) == Profile(1, 16, 64).shapes([1, 32, 100])  # the encoder's, unchanged


def test_shape_arguments():
    assert build_detector_engine.shape("736x1312") == (736, 1312) == build_detector_engine.shape("736X1312")
    for bad in ("736", "736x", "ax1312", "736x-5"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected HEIGHTxWIDTH"):
            build_detector_engine.shape(bad)
    args = build_detector_engine.parse_args(["--models", "m", "--max-shape", "1024x1408"])
    assert (args.min_shape, args.opt_shape, args.max_shape, args.precision) == ((32, 32), (736, 1312), (1024, 1408), "fp16")


def _variant(graph, tmp_path, name, dims=None, extra_input=False):
    model = onnx.load(str(graph))
    value = model.graph.input[0]
    for i, d in (dims or {}).items():
        value.type.tensor_type.shape.dim[i].dim_value = d
    if extra_input:
        model.graph.input.append(onnx.helper.make_tensor_value_info("mask", onnx.TensorProto.FLOAT, [1, 1, None, None]))
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def test_graph_checks_before_tensorrt(detector_graph, tmp_path):  # noqa: F811
    """The installed graph is one input [N, 3, H, W] with H and W dynamic: the photograph profile takes it, the
    encoder's batch profile (fixed dimensions after the batch) does not; graphs the profile cannot serve are refused."""
    assert build_engine.graph_inputs(detector_graph) == {DETECTOR_INPUT: [None, 3, None, None]}
    build_engine.check_graph(detector_graph, ImageProfile())
    with pytest.raises(BuildError, match="must have fixed dimensions after the batch"):
        build_engine.check_dynamic_batch(detector_graph)
    build_engine.check_graph(_variant(detector_graph, tmp_path, "batch1", {0: 1}), ImageProfile())  # a static batch of one serves
    refusals = {
        "fixed height or width": _variant(detector_graph, tmp_path, "static_h", {2: 736}),
        "static batch of 4; the engine runs one photograph": _variant(detector_graph, tmp_path, "batch4", {0: 4}),
        "expected one input": _variant(detector_graph, tmp_path, "two", extra_input=True),
    }
    for message, path in refusals.items():
        with pytest.raises(BuildError, match=message):
            build_engine.check_graph(path, ImageProfile())


def test_rebuild_reason_tracks_the_detector_options(tmp_path):
    models = tmp_path / "models"
    (models / DETECTOR_ONNX).parent.mkdir(parents=True)
    (models / DETECTOR_ONNX).write_bytes(b"graph v1")
    opts = build_detector_engine.detector_build(models, "fp16", ImageProfile(), timing_cache=tmp_path / "tc.bin")
    assert (opts.onnx, opts.output, opts.plugin) == (models / DETECTOR_ONNX, models / DETECTOR_PLAN, None)
    gpu = GpuInfo("NVIDIA H100 80GB HBM3", (9, 0))
    assert build_engine.rebuild_reason(opts, gpu, "10.5.0") == "no plan yet"
    opts.output.write_bytes(b"plan")
    write_metadata(opts.output, {"build": build_engine.build_key(opts, gpu, "10.5.0")})  # through JSON, as built
    assert build_engine.rebuild_reason(opts, gpu, "10.5.0") is None
    opts.timing_cache = None  # where the cache lives does not change the plan
    assert build_engine.rebuild_reason(opts, gpu, "10.5.0") is None
    assert build_engine.rebuild_reason(opts, GpuInfo("NVIDIA L4", (8, 9)), "10.5.0") == "changed: gpu, compute_capability"
    assert build_engine.rebuild_reason(opts, gpu, "11.1.0") == "changed: tensorrt_version"
    opts.profile = ImageProfile(max=(1984, 1984))
    assert build_engine.rebuild_reason(opts, gpu, "10.5.0") == "changed: profile"
    (models / DETECTOR_ONNX).write_bytes(b"graph v2")
    opts.precision, opts.workspace_mib = "fp32", 512
    assert build_engine.rebuild_reason(opts, gpu, "10.5.0") == "changed: onnx_sha256, precision, profile, workspace_mib"


def test_cli_names_what_is_missing(tmp_path, capsys):
    assert build_detector_engine.main(["--models", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"no detector graph at {tmp_path / DETECTOR_ONNX}" in err and "python -m builders.build_repository" in err
    assert build_detector_engine.main(["--models", str(tmp_path), "--opt-shape", "4096x4096"]) == 2
    assert "min <= opt <= max height" in capsys.readouterr().err


@pytest.mark.skipif(has_tensorrt, reason="TensorRT is installed here")
def test_cli_reaches_tensorrt_with_the_installed_graph(detector_graph, tmp_path, capsys):  # noqa: F811
    """The real graph passes every check before TensorRT; here the build then stops, saying what is missing."""
    (tmp_path / DETECTOR_ONNX).parent.mkdir(parents=True)
    shutil.copy(detector_graph, tmp_path / DETECTOR_ONNX)
    assert build_detector_engine.main(["--models", str(tmp_path)]) == 2
    assert "TensorRT's Python package is not importable" in capsys.readouterr().err


def _memo(run):
    """``run`` computed once per distinct input (the reference stands on both sides of most comparisons below)."""
    cache: dict = {}

    def memo(x):
        key = (x.shape, x.tobytes())
        if key not in cache:
            cache[key] = run(x)
        return cache[key]

    return memo


def test_verification_with_onnx_runtime_on_both_sides(detector_graph, tmp_path):  # noqa: F811
    """The comparison the GPU check relies on, with ONNX Runtime standing in for the engine: equal maps pass (every
    word of the synthetic page found on both sides, and on a photograph read from a folder); a map off by more than
    the tolerance fails; a map that loses a word fails even within the tolerance, and the report names the photograph."""
    from spinrec.runtime import open_encoder

    reference = _memo(open_encoder("onnxruntime", detector_graph, 2))
    photos_dir = tmp_path / "photos"
    photos_dir.mkdir()
    page = synthetic_page()[0]
    (photos_dir / "corner.jpg").write_bytes(cv2.imencode(".jpg", page[:360, :640])[1].tobytes())
    photos = verify_detector.photographs([photos_dir])
    assert list(photos) == [verify_detector.SYNTHETIC, "photos/corner.jpg"] and photos["photos/corner.jpg"].shape == (360, 640, 3)
    randoms = verify_detector.random_inputs(SMALL)
    assert {k: v.shape for k, v in randoms.items()} == {f"random_{h}x{w}": (1, 3, h, w) for h, w in (SMALL.min, SMALL.opt, SMALL.max)}

    report = verify_detector.compare(reference, reference, photos, randoms, 1e-2)
    assert report["passed"] and report["max_abs_error"] == 0.0 and report["photographs_same_words"] == "2/2"
    assert report["inputs"][verify_detector.SYNTHETIC] == {"size": [736, 1312], "max_abs_error": 0.0, "words": [len(PAGE_WORDS)] * 2}

    def shifted(x):
        return reference(x) + np.float32(0.02)

    report = verify_detector.compare(shifted, reference, photos, {}, 1e-2)
    assert not report["passed"] and report["max_abs_error"] == pytest.approx(0.02, abs=1e-6)

    def loses_hello(x):
        out = reference(x).copy()
        out[..., 100:200, 150:360] = np.minimum(out[..., 100:200, 150:360], 0.29)  # "hello" under the binarization threshold
        return out

    report = verify_detector.compare(loses_hello, reference, {verify_detector.SYNTHETIC: page}, {}, 1.0)
    assert not report["passed"] and report["photographs_same_words"] == "0/1"
    assert report["inputs"][verify_detector.SYNTHETIC]["words"] == [len(PAGE_WORDS) - 1, len(PAGE_WORDS)]

    plan = tmp_path / "model.plan"
    write_metadata(plan, {"build": {"precision": "fp16"}, "plan_bytes": 5 << 20, "verify": report})
    served = tmp_path / "served.json"
    served.write_text(json.dumps(verify_detector.compare(reference, reference, {verify_detector.SYNTHETIC: page}, {}, 1e-2)))
    out = tmp_path / "report.md"
    code = gpu_report.main(["--detector", f"fp16={plan}", "--detector", f"fp16 served={served}", "--out", str(out)])
    text = out.read_text()
    assert code == 1  # the plan's verification failed
    assert "| fp16 | 5.0 | 1 | " in text and "| 1.0 | 0/1 | **NO** |" in text
    assert "| fp16 served | - | 1 | 0.00e+00 | 0.01 | 1/1 | yes |" in text
    assert f"- fp16, {verify_detector.SYNTHETIC}: engine {len(PAGE_WORDS) - 1} words, ONNX Runtime {len(PAGE_WORDS)}" in text


def test_photographs_that_cannot_be_read_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match="no images in"):
        verify_detector.photographs([tmp_path / "empty"])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(BuildError, match="x.png: not a recognised image"):
        verify_detector.photographs([tmp_path / "bad"])


# --- TensorRT + GPU ------------------------------------------------------------------------------------------


@tensorrt_gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_detector_engine_builds_and_verifies(detector_graph, tmp_path, precision):  # noqa: F811
    """PP-OCRv6 det small as the GPU image builds it (a smaller max shape, to build faster): the plan and its record,
    then the engine against ONNX Runtime on the synthetic page, a photograph and the profile's corners."""
    models = tmp_path / "models"
    (models / DETECTOR_ONNX).parent.mkdir(parents=True)
    shutil.copy(detector_graph, models / DETECTOR_ONNX)
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "corner.png"), synthetic_page()[0][:300, :560])  # "hello" alone; 736x1376 at the detector
    cache = tmp_path / "tc.bin"
    args = ["--models", str(models), "--precision", precision, "--max-shape", "1024x1408", "--timing-cache", str(cache),
            "--verify", "--images", str(photos)]  # fmt: skip
    assert build_detector_engine.main(args) == 0
    plan = models / DETECTOR_PLAN
    meta = json.loads(metadata_path(plan).read_text())
    assert meta["build"]["precision"] == precision and meta["build"]["plugin_sha256"] is None
    assert meta["profile_shapes"][DETECTOR_INPUT] == [[1, 3, 32, 32], [1, 3, 736, 1312], [1, 3, 1024, 1408]]
    assert meta["build"]["tensorrt_version"] and meta["build"]["gpu"] and cache.stat().st_size > 0
    report = meta["verify"]
    assert report["passed"] and report["max_abs_error"] <= verify_detector.TOLERANCE[precision], report
    assert report["photographs_same_words"] == "2/2" and report["inputs"][verify_detector.SYNTHETIC]["words"] == [len(PAGE_WORDS)] * 2
    built = plan.stat().st_mtime_ns
    assert build_detector_engine.main([*args, "--if-needed"]) == 0  # current: verified again, not rebuilt
    assert plan.stat().st_mtime_ns == built
    assert verify_detector.main(["--plan", str(plan), "--images", str(photos)]) == 0
