"""PaddleOCR's RecMetric, the dataset readers (label file, benchmark LMDB) and the evaluation command."""

import dataclasses
import functools
import json
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest
import torch

from spinrec import weights
from spinrec.evaluation.evaluate import DatasetError, ablate, calibration, confidence_threshold, main, read_dataset
from spinrec.evaluation.metrics import EPS, RecMetric, edit_distance, normalize_text, normalized_distance
from spinrec.models.spin import SPIN, SPINConfig
from spinrec.models.tps import fiducials
from spinrec.pipeline import Pipeline
from spinrec.training.synth import SynthConfig, WordImages, write_folder

def _reference_distance(a: str, b: str) -> int:
    """Levenshtein distance by its recursive definition."""

    @functools.lru_cache(maxsize=None)
    def d(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


def test_edit_distance_known_cases_and_random_strings():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "") == 3 and edit_distance("", "") == 0
    assert edit_distance("flaw", "lawn") == 2
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = "".join(rng.choice(list("abc"), rng.integers(0, 8)))
        b = "".join(rng.choice(list("abc"), rng.integers(0, 8)))
        assert edit_distance(a, b) == _reference_distance(a, b), (a, b)


def test_normalization_keeps_lowercased_ascii_alphanumerics():
    assert normalize_text("Hello, World! 42") == "helloworld42"
    assert normalize_text("Caf\u00e9's") == "cafs"
    assert normalized_distance("", "") == 0.0
    assert normalized_distance("abcd", "ab") == 0.5


def test_rec_metric_hand_computed():
    metric = RecMetric()
    metric.update(["HeLLo!", "abc", "", "a b", "12x"], ["hello", "abd", "x", "ab", "12"])
    # correct: hello, "a b" (spaces ignored); distances: 0, 1/3, 1/1, 0, 1/3
    result = metric.result()
    assert result["correct"] == 2 and result["count"] == 5
    assert result["acc"] == pytest.approx(2 / (5 + EPS), abs=1e-12)
    assert result["norm_edit_dis"] == pytest.approx(1 - (1 / 3 + 1 + 1 / 3) / (5 + EPS), abs=1e-12)
    assert metric.errors == [("abc", "abd"), ("", "x"), ("12x", "12")]


def test_rec_metric_without_filter_is_case_sensitive():
    metric = RecMetric(is_filter=False)
    metric.update(["Hello", "a-b"], ["hello", "a-b"])
    assert metric.result()["correct"] == 1


@pytest.fixture(scope="module")
def samples():
    source = WordImages(SynthConfig(split="heldout"))
    return [source.sample(424242, i) for i in range(12)]


def _build_benchmark_lmdb(path: Path, items: list[tuple[bytes, str]]) -> None:
    """The benchmark layout written directly with lmdb (independent of spinrec.training.synth.write_lmdb)."""
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"num-samples", str(len(items)).encode())
        for i, (data, label) in enumerate(items, start=1):
            txn.put(f"image-{i:09d}".encode(), data)
            txn.put(f"label-{i:09d}".encode(), label.encode())
    env.close()


def test_label_folder_and_lmdb_round_trip(samples, tmp_path):
    write_folder(tmp_path / "set", samples, lmdb_path=tmp_path / "set" / "lmdb")
    for dataset in (read_dataset(tmp_path / "set"), read_dataset(tmp_path / "set" / "labels.txt"), read_dataset(tmp_path / "set" / "lmdb")):
        assert [s.label for s in dataset] == [text for _, text in samples]
        for s, (image, _) in zip(dataset, samples):
            decoded = cv2.imdecode(np.frombuffer(s.image, np.uint8), cv2.IMREAD_COLOR)
            assert np.array_equal(decoded, image)


def test_readers_report_bad_datasets(tmp_path):
    (tmp_path / "labels.txt").write_text("no-tab-here\n")
    with pytest.raises(DatasetError, match="expected 'image path<TAB>label'"):
        read_dataset(tmp_path)
    (tmp_path / "labels.txt").write_text("missing.png\tword\n")
    with pytest.raises(DatasetError, match="cannot read image"):
        read_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such file"):
        read_dataset(tmp_path / "nothing")
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"something", b"else")
    env.close()
    with pytest.raises(DatasetError, match="num-samples"):
        read_dataset(tmp_path / "db")


def test_command_reads_a_benchmark_lmdb(samples, tmp_path):
    items = [(cv2.imencode(".png", image)[1].tobytes(), text) for image, text in samples]
    items.append((b"not an image", "broken"))
    _build_benchmark_lmdb(tmp_path / "bench", items)
    torch.manual_seed(0)
    model = SPIN(SPINConfig(backbone_out_channels=32, neck_hidden_size=32, neck_out_channels=(32, 512), head_hidden_size=32))
    weights.save(model.eval(), tmp_path / "w.safetensors")
    assert main([str(tmp_path / "bench"), "--weights", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "report"), "--batch-size", "5"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    result = report["datasets"][str(tmp_path / "bench")]
    assert result["samples"] == len(items) and result["failed_images"] == 1
    # The command's numbers equal a direct pass of the same images through the recognizer.
    readings = Pipeline.open(tmp_path / "w.safetensors").recognize([data for data, _ in items[:-1]])
    metric = RecMetric()
    metric.update([r.text for r in readings] + [""], [label for _, label in items])
    assert result["correct"] == metric.result()["correct"]
    assert result["norm_edit_dis"] == pytest.approx(metric.result()["norm_edit_dis"], abs=1e-9)
    table = (tmp_path / "report.md").read_text()
    assert "| word accuracy |" in table and f"| {len(items)} |" in table


def test_command_rejects_missing_backend_choice(tmp_path):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])


def test_calibration_bins_and_threshold_by_hand():
    readings = [{"confidence": c, "correct": ok} for c, ok in
                [(0.2, False), (0.6, False), (0.6, True), (0.92, True), (0.97, False), (0.995, True), (1.0, True)]]  # fmt: skip
    rows = {(r["low"], r["high"]): (r["count"], r["correct"]) for r in calibration(readings)}
    assert rows == {(0.0, 0.5): (1, 0), (0.5, 0.7): (2, 1), (0.7, 0.9): (0, 0), (0.9, 0.95): (1, 1),
                    (0.95, 0.99): (1, 0), (0.99, 1.0): (2, 2)}  # fmt: skip
    # From the top: 1.0 ok, 0.995 ok (2/2), 0.97 wrong (2/3), 0.92 ok (3/4 = 0.75), 0.6 + 0.6 (4/6) ...
    assert confidence_threshold(readings, 0.95) == {"threshold": 0.995, "precision": 0.95, "coverage": 2 / 7, "accuracy": 1.0}
    assert confidence_threshold(readings, 0.75)["threshold"] == 0.92
    assert confidence_threshold([{"confidence": 0.9, "correct": False}], 0.5)["threshold"] is None


def test_ablation_switches_branches_off_in_the_served_function(tmp_path):
    """``-stn`` reads what the model reads with canonical fiducials; ``-offsets`` what it reads with the gate shut;
    a model without a branch refuses to have it switched off."""
    torch.manual_seed(0)
    config = SPINConfig(backbone_out_channels=32, neck_hidden_size=32, neck_out_channels=(32, 512), head_hidden_size=32)
    model = SPIN(config).eval()
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (2, 1, 32, 100))).float()
    with torch.no_grad():
        model.transform.stucture_fc2.weight.normal_(0, 0.05)  # fiducials and gate that depend on the image
        weights_, offsets, gate, c_prime = model.transform.predict(x)
        expected = model.transform.rectify(model.transform.sp_net(x, weights_, offsets, torch.zeros_like(gate)), c_prime)
        ablate(model, ["offsets"])
        torch.testing.assert_close(model.transform(x), expected)
        ablate(model, ["stn"])
        assert torch.equal(model.transform.predict(x)[3], torch.from_numpy(fiducials(20)).float().expand(2, 20, 2))
    with pytest.raises(ValueError, match="no stn"):
        ablate(SPIN(dataclasses.replace(config, stn=False)), ["stn"])


def test_command_writes_a_gallery_of_misses_and_ablation_rows(samples, tmp_path):
    write_folder(tmp_path / "set", samples[:6])
    torch.manual_seed(0)
    model = SPIN(SPINConfig(backbone_out_channels=32, neck_hidden_size=32, neck_out_channels=(32, 512), head_hidden_size=32))
    weights.save(model.eval(), tmp_path / "w.safetensors")
    out = tmp_path / "report"
    assert main([str(tmp_path / "set"), "--weights", str(tmp_path / "w.safetensors"), "--out", str(out), "--gallery", "--ablation"]) == 0
    assert cv2.imread(str(tmp_path / "report_misses.png")) is not None  # an untrained model misses them all
    datasets = json.loads(out.with_suffix(".json").read_text())["datasets"]
    name = str(tmp_path / "set")
    assert set(datasets) == {name, name + " -stn", name + " -offsets", name + " -stn -offsets"}
    assert len(datasets[name]["readings"]) == 6 and "Accuracy by confidence" in out.with_suffix(".md").read_text()
