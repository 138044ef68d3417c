"""perf tools that decide configurations: perf.numerics on a labelled dataset (reduced-precision encoders
judged by texts and accuracy on trained weights) and perf.variants (repository copies with other settings)."""

import json

import pytest

from perf import numerics
from spinrec.evaluation.evaluate import read_dataset
from spinrec.evaluation.metrics import RecMetric
from spinrec.pipeline import Pipeline
from spinrec.training.synth import SynthConfig, WordImages, write_folder

from conftest import DEFAULT_WEIGHTS


@pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason=f"{DEFAULT_WEIGHTS} is not in this checkout")
def test_numerics_on_a_labelled_set_reports_texts_and_accuracy(tmp_path):
    source = WordImages(SynthConfig(split="heldout"))
    write_folder(tmp_path / "set", [source.sample(515151, i) for i in range(16)])
    out = tmp_path / "numerics.json"
    assert numerics.main(["--weights", str(DEFAULT_WEIGHTS), "--dataset", str(tmp_path / "set"), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["count"] == 16
    # fp32 ONNX Runtime features read what the PyTorch model reads, so the accuracies agree exactly.
    dataset = read_dataset(tmp_path / "set")
    metric = RecMetric()
    metric.update([r.text for r in Pipeline.open(DEFAULT_WEIGHTS).recognize([s.image for s in dataset])], [s.label for s in dataset])
    assert record["fp32_word_accuracy"] == pytest.approx(metric.result()["acc"])
    f32 = record["candidates"]["openvino_f32"]
    assert f32["texts_identical"] == f32["texts_total"] == 16 and f32["word_accuracy"] == record["fp32_word_accuracy"]
    for name, c in record["candidates"].items():
        assert c["texts_total"] == 16 and 0.0 <= c["word_accuracy"] <= 1.0, name


def test_numerics_refuses_a_dataset_without_weights(tmp_path):
    with pytest.raises(SystemExit):
        numerics.main(["--dataset", str(tmp_path)])


def test_variant_rewrites_only_the_named_settings(built_repository, tmp_path):
    from perf.variants import build_variant

    out = build_variant(built_repository, tmp_path / "v", encoder="openvino_bf16", encoder_instances=2,
                        encoder_delay_us=500, decoder_delay_us=0, preprocess_delay_us=250)
    encoder = (out / "spin_encoder" / "configs" / "cpu.pbtxt").read_text()
    assert 'key: "runtime" value: { string_value: "openvino" }' in encoder
    assert 'key: "precision" value: { string_value: "bf16" }' in encoder
    assert "count: 2 }" in encoder and "max_queue_delay_microseconds: 500" in encoder
    assert "max_queue_delay_microseconds: 0" in (out / "spin_decoder" / "configs" / "cpu.pbtxt").read_text()
    assert "max_queue_delay_microseconds: 250" in (out / "spin_preprocess" / "config.pbtxt").read_text()
    onnx = out / "spin_encoder" / "1" / "model.onnx"
    assert onnx.is_symlink() and onnx.resolve() == (built_repository / "spin_encoder" / "1" / "model.onnx").resolve()
    assert (built_repository / "spin_encoder" / "configs" / "cpu.pbtxt").read_text() != encoder


@pytest.mark.slow
def test_floor_repository_serves_the_ensemble_signature_without_the_work(built_repository, tmp_path):
    """perf.floor's pass-through copy loads in a real tritonserver with the served configs and answers
    ``spin_ocr`` with an empty text, so the floor measures the plumbing of the same ensemble."""
    import tritonclient.grpc as grpc

    from spinrec_client.ocr import image_input

    from conftest import _stop, render_word, start_triton
    from perf.floor import build_floor_repository

    floor = build_floor_repository(built_repository, tmp_path / "floor")
    for model in ("spin_preprocess", "spin_encoder", "spin_decoder", "spin_ocr"):
        assert (floor / model / "config.pbtxt").read_text() == (built_repository / model / "config.pbtxt").read_text()
    assert "pb_utils.InferenceResponse" in (floor / "spin_encoder" / "1" / "model.py").read_text()
    server = start_triton(floor, tmp_path / "floor.log")
    try:
        with server.client("grpc") as client:
            result = client.infer("spin_ocr", [image_input(grpc, [render_word("floor"), b"not even an image"])])
        assert result.as_numpy("TEXT").reshape(-1).tolist() == [b"", b""]
        assert result.as_numpy("CONFIDENCE").shape == (2, 1)
    finally:
        _stop(server.process)


@pytest.mark.gpu
def test_gpu_stage_timings_are_written(tmp_path):
    pytest.importorskip("cupy", reason="needs CuPy (pip install -e .[gpu])")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (run scripts/gpu_check.sh there)")
    from perf import gpu_stages

    assert gpu_stages.main(["--batches", "1,4", "--repeats", "2", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "gpu_stages.json").read_text())
    assert [r["batch"] for r in record["rows"]] == [1, 4]
    assert all(r["decoder_cupy_ms"] > 0 and r["encoder_torch_fp32_ms"] > 0 for r in record["rows"])
