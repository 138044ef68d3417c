"""INT8 encoders (spinrec.export.quantize), the served encoder's precision setting and its fallback, and the
accuracy gate. The quantized graphs are checked against the float32 graph they came from (the reference):
what stays float32, what is int8, and how far the features move."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import DEFAULT_WEIGHTS, WORDS, _stop, start_triton
from spinrec.contract import INT8_FILES, ONNX
from spinrec.runtime import effective_precision, open_encoder



@pytest.mark.parametrize(
    "precision, runtime, capabilities, runs",
    [
        ("bf16", "openvino", ["FP32", "BF16", "INT8"], "bf16"),
        ("bf16", "openvino", ["FP32", "INT8"], "fp32"),  # no AVX512_BF16 / AMX: fp32, not a failure
        ("int8", "openvino", ["FP32", "INT8"], "int8"),
        ("int8", "openvino", ["FP32"], "fp32"),
        ("int8", "onnxruntime", [], "int8"),  # MLAS has int8 kernels on every x86-64
        ("fp32", "openvino", [], "fp32"),
    ],
)
def test_effective_precision(precision, runtime, capabilities, runs):
    assert effective_precision(precision, runtime, capabilities) == runs


def test_int8_without_artifact_falls_back_to_fp32_with_a_warning(built_repository, tmp_path):
    (tmp_path / "model.onnx").symlink_to(built_repository / ONNX)
    for runtime in ("openvino", "onnxruntime"):
        with pytest.warns(UserWarning, match="--no-int8"):
            encoder = open_encoder(runtime, tmp_path / "model.onnx", 1, "int8")
        assert (encoder.requested, encoder.precision) == ("int8", "fp32")


@pytest.fixture(scope="module")
def int8_repository(tmp_path_factory):
    """A repository built as the builder builds by default (INT8 encoders included) from the shipped default,
    which passes the builder's INT8 gate."""
    from builders.build_repository import main

    if not DEFAULT_WEIGHTS.exists():
        pytest.skip(f"{DEFAULT_WEIGHTS} is not in this checkout")
    out = tmp_path_factory.mktemp("int8_repository")
    assert main(["--output", str(out), "--weights", str(DEFAULT_WEIGHTS)]) == 0
    return out


@pytest.fixture(scope="module")
def gated_repository(tmp_path_factory, checkpoint):
    """The default build of the random-weight test checkpoint (published architecture, GA-SPIN complete):
    INT8 scrambles what it reads, as it did a converted PaddleOCR checkpoint (0 of 8 texts through Triton)."""
    from builders.build_repository import main

    out = tmp_path_factory.mktemp("gated_repository")
    assert main(["--output", str(out), "--weights", str(checkpoint)]) == 0
    return out


@pytest.fixture(scope="module")
def images(word_images):
    from spinrec.preprocess import preprocess_batch

    batch, errors = preprocess_batch(word_images)
    assert not any(errors)
    return batch


@pytest.mark.slow
def test_build_records_int8(int8_repository):
    record = json.loads((int8_repository / "build.json").read_text())
    assert record["int8"] == {runtime: str(ONNX.with_name(name)) for runtime, name in INT8_FILES.items()}
    for name in INT8_FILES.values():
        assert (int8_repository / ONNX.with_name(name)).is_file()
    gate = record["int8_gate"]
    assert gate["passes"] and gate["images"] == 512 and gate["identical"] >= gate["min_identical"]
    assert gate["fp32_word_accuracy"] - gate["int8_word_accuracy"] <= gate["max_drop_points"] / 100
    assert record["precision"]["served"] == "int8"
    assert record["reads"]["usable"] and record["reads"]["word_accuracy"] > 0.5  # the shipped default reads


@pytest.mark.slow
def test_a_checkpoint_that_fails_the_int8_gate_is_served_fp32_with_the_reason(gated_repository, checkpoint, tmp_path):
    """The builder's gate refuses INT8 for the random-weight checkpoint: no INT8 graph is left beside the float
    one, build.json says why, and the server's log repeats it while the encoder serves fp32."""
    record = json.loads((gated_repository / "build.json").read_text())
    gate = record["int8_gate"]
    assert not gate["passes"] and gate["identical"] < gate["min_identical"], gate
    assert record["int8"] == {} and record["precision"]["served"] == "fp32"
    assert record["precision"]["reason"].startswith("failed the INT8 gate: int8 read ") and gate["reason"] in record["precision"]["reason"]
    assert not any((gated_repository / ONNX.with_name(name)).exists() for name in INT8_FILES.values())
    from spinrec.export.repository import needs_build

    assert needs_build(gated_repository, checkpoint) is None  # a failed gate is an answer: no rebuild at every start
    server = start_triton(gated_repository, tmp_path / "server.log")
    _stop(server.process)
    log = server.log.read_text()
    assert "spin_encoder: encoder on openvino, precision fp32 (int8 configured" in log
    assert f"the build served fp32: {record['precision']['reason']}" in log


@pytest.mark.slow
def test_openvino_int8_keeps_transform_and_lstms_float(int8_repository):
    import openvino as ov

    model = ov.Core().read_model(str(int8_repository / ONNX.with_name(INT8_FILES["openvino"])))
    quantized = []
    for op in model.get_ops():
        if op.get_type_name() == "FakeQuantize":
            quantized += [t.get_node() for t in op.output(0).get_target_inputs()]
    assert quantized, "nothing was quantized"
    names = {n.get_friendly_name() for n in quantized}
    types = {n.get_type_name() for n in quantized}
    # Only backbone operations take quantized inputs: no LSTM, no instance norm, nothing of the transform or neck.
    assert all(name.startswith("/backbone/") for name in names), sorted(n for n in names if not n.startswith("/backbone/"))
    assert "Convolution" in types and not types & {"LSTMSequence", "MVN", "GridSample", "Power"}, types


@pytest.mark.slow
def test_onnxruntime_qdq_keeps_transform_and_lstms_float(int8_repository):
    import onnx

    graph = onnx.load(str(int8_repository / ONNX.with_name(INT8_FILES["onnxruntime"]))).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    # Shape reads only the dims of the backbone's (dequantized) output: no arithmetic on it.
    consumers = [n for n in graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear", "Shape") and set(n.input) & dequantized]
    assert consumers, "nothing was quantized"
    assert all(n.name.startswith("/backbone/") for n in consumers), [n.name for n in consumers if not n.name.startswith("/backbone/")]
    assert not any(n.op_type == "LSTM" for n in consumers)


@pytest.mark.slow
@pytest.mark.parametrize("runtime, bound", [("openvino", 0.05), ("onnxruntime", 1.0)])
def test_int8_features_close_to_fp32(int8_repository, images, runtime, bound):
    """Physical check against the float graph: int8 moves the shipped default's features by a bounded amount
    (measured on these words: NNCF 0.011 relative L2; ONNX Runtime's min-max QDQ, which is not served, 0.76),
    while the float runtimes agree to 1e-5."""
    onnx_path = int8_repository / ONNX
    fp32 = open_encoder(runtime, onnx_path, 2, "fp32")(images)
    encoder = open_encoder(runtime, onnx_path, 2, "int8")
    assert encoder.precision == "int8" and encoder.requested == "int8"
    int8 = encoder(images)
    assert int8.shape == fp32.shape and int8.dtype == np.float32 and np.isfinite(int8).all()
    error = np.linalg.norm(int8 - fp32) / np.linalg.norm(fp32)
    assert 1e-3 < error < bound, error  # quantized (not the float graph again), and bounded


def test_gate_table(checkpoint, tmp_path, word_images):
    """The gate on a tiny labelled set: fp32 against itself is identical and passes; the table lists every
    candidate run, with the precision it ran at."""
    from spinrec.export.quantize import gate, markdown

    for i, data in enumerate(word_images):
        (tmp_path / f"{i}.png").write_bytes(data)
    labels = tmp_path / "labels.tsv"
    labels.write_text("".join(f"{i}.png\t{w}\n" for i, w in enumerate(WORDS)))
    record = gate(checkpoint, [labels], tmp_path / "work", names=["fp32", "bf16"])
    assert list(record["candidates"]) == ["fp32", "bf16"]
    fp32 = record["candidates"]["fp32"]
    assert fp32["passes"] and fp32["datasets"][str(labels)]["identical_to_fp32"] == 1.0
    assert fp32["datasets"][str(labels)]["delta_points"] == 0.0
    bf16 = record["candidates"]["bf16"]["datasets"][str(labels)]
    assert 0.0 <= bf16["identical_to_fp32"] <= 1.0 and bf16["samples"] == len(WORDS)
    table = markdown(record)
    assert "| fp32 | openvino fp32 |" in table and "| bf16 | openvino " in table


@pytest.mark.slow
def test_precisions_interleaved_run_and_int8_variant(int8_repository, tmp_path):
    """perf.precisions on a repository with the INT8 encoders: ratios against fp32 from one run, the report and the plot;
    perf.variants --encoder-precision int8 gives a repository whose encoder loads the linked INT8 graph."""
    from perf import precisions
    from perf.data import render_samples
    from perf.variants import build_variant

    payloads = [s.data for s in render_samples(32, progress=False)]
    record = precisions.measure(int8_repository, payloads, ("fp32", "int8"), threads=2, rounds=1)
    fp32, int8 = record["precisions"]["fp32"], record["precisions"]["int8"]
    assert fp32["encoder_b32"]["over_fp32"] == 1.0 and fp32["texts_identical_to_fp32"] == fp32["texts"] == 32
    assert int8["ran_as"] == "int8" and int8["encoder_b32"]["items_per_s"] > 0 and 0 <= int8["texts_identical_to_fp32"] <= 32
    assert record["flop_limit_images_per_s"] > 0
    gate = {"candidates": {p: {"passes": True, "datasets": {"/data/heldout/labels.txt": {"word_accuracy": 0.9}}} for p in ("fp32", "int8")}}
    precisions.add_accuracy(record, gate)
    precisions.write(record, tmp_path / "out", "test")
    assert "| int8 | int8 |" in (tmp_path / "out" / "precisions.md").read_text()
    assert (tmp_path / "out" / "throughput_accuracy.png").stat().st_size > 0

    variant = build_variant(int8_repository, tmp_path / "v", encoder_precision="int8")
    assert 'key: "precision" value: { string_value: "int8" }' in (variant / "spin_encoder" / "configs" / "cpu.pbtxt").read_text()
    assert open_encoder("openvino", variant / ONNX, 1, "int8")(np.zeros((1, 1, 32, 100), np.float32)).shape[0] == 1


def test_the_default_build_serves_int8_through_triton(int8_repository, word_images, tmp_path):
    """The shipped CPU config serves int8: tritonserver on a default build says so, and spin_ocr reads what
    the same INT8 graph reads in process on the same batch."""
    from spinrec_client import OcrClient
    from spinrec.pipeline import Pipeline

    server = start_triton(int8_repository, tmp_path / "server.log")
    try:
        log = server.log.read_text()
        assert "spin_encoder: encoder on openvino, precision int8" in log and "configured, see the warning" not in log
        served = OcrClient(server.grpc_url, "grpc", batch_size=len(word_images)).recognize(list(zip(WORDS, word_images)))
    finally:
        _stop(server.process)
    assert [r.text for r in served] == Pipeline.from_repository(int8_repository, "openvino", threads=2, precision="int8").texts(word_images)
