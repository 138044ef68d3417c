"""Real labelled crops for training (spinrec.training.real): the label rule, the sources (labels.tsv folders and
benchmark LMDBs), tall crops, augmentation, the deterministic real/synthetic mix, and a training run on it with
the real-set evaluation. Labelled folders are made here from rendered words; the shipped real data in
../shared is read only where present."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO_ROOT, render_word
from spinrec.charset import Charset
from spinrec.training.real import MixedDataset, RealConfig, RealCrops, augment, is_tall, label_stats, read_labelled, training_text
from spinrec.training.synth import SynthConfig, WordImages, write_lmdb
from spinrec.training.train import RunConfig, TrainConfig, Trainer

SHARED_TRAIN = REPO_ROOT.parent / "shared" / "real_train"


@pytest.mark.parametrize(
    "label, text",
    [
        ("Theatre", "theatre"),
        ("Genaxis Theatre", "genaxistheatre"),  # spaces go: the model has none and reads both words
        ("$4.00", "$4.00"),  # SPIN's punctuation is in the dictionary
        ("Café", None),  # a letter the model cannot emit: the whole label goes, not the letter
        ("£5", None),
        ("", None),
        (" ", None),
        ("a" * 26, None),  # over max_length
    ],
)
def test_the_label_rule(label, text):
    assert training_text(label, Charset()) == text


def _folder(root: Path, words: list[str], tall: int = 0) -> Path:
    """A labels.tsv folder of rendered words, plus ``tall`` crops turned upright (taller than wide)."""
    (root / "images").mkdir(parents=True)
    lines = []
    for i, word in enumerate(words):
        data = render_word(word)
        if i < tall:
            image = cv2.rotate(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.ROTATE_90_CLOCKWISE)
            data = cv2.imencode(".png", image)[1].tobytes()
        (root / "images" / f"{i}.png").write_bytes(data)
        lines.append(f"images/{i}.png\t{word}\n")
    (root / "labels.tsv").write_text("".join(lines))
    return root


def test_sources_labels_tsv_folder_and_lmdb_read_the_same_samples(tmp_path):
    words = ["Hello", "World 42", "Café", "spin"]
    folder = _folder(tmp_path / "folder", words)
    from_folder = read_labelled(folder)
    write_lmdb(tmp_path / "lmdb", from_folder)
    assert read_labelled(tmp_path / "lmdb") == from_folder == read_labelled(folder / "labels.tsv")
    assert [label for _, label in from_folder] == words
    stats = label_stats([folder])[str(folder)]
    assert stats["samples"] == 4 and stats["kept (rule)"] == 3 and stats["has a space"] == 1 and stats["other out-of-charset character"] == 1


def test_tall_crops_are_dropped_or_kept_as_configured(tmp_path):
    folder = _folder(tmp_path / "f", ["upright", "words", "level", "x"], tall=2)
    dropped = RealCrops(RealConfig(sources=(str(folder),), fraction=1.0))
    kept = RealCrops(RealConfig(sources=(str(folder),), fraction=1.0, tall="keep"))
    assert len(dropped) == 2 and dropped.dropped["tall"] == 2 and dropped.texts == ["level", "x"]
    assert len(kept) == 4
    assert is_tall(np.zeros((60, 20)), "ab") and not is_tall(np.zeros((60, 20)), "7") and not is_tall(np.zeros((20, 18)), "of")


def test_augmentation_keeps_a_readable_grey_crop_and_varies(tmp_path):
    gray = cv2.cvtColor(cv2.imdecode(np.frombuffer(render_word("augment"), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2GRAY)
    outs = [augment(gray, np.random.default_rng([7, i])) for i in range(40)]
    assert all(o.dtype == np.uint8 and o.ndim == 2 and min(o.shape) >= 4 for o in outs)
    assert len({o.tobytes() for o in outs}) == 40
    # Same (seed, index), same image: a resumed run sees the same batches.
    assert np.array_equal(augment(gray, np.random.default_rng([7, 3])), outs[3])
    # Physical check: the word stays legible on average (contrast kept in most draws, not washed out).
    assert np.median([float(o.std()) for o in outs]) > 0.4 * float(gray.std())


def test_the_mix_draws_real_and_synthetic_by_index_deterministically(tmp_path):
    folder = _folder(tmp_path / "f", ["alpha", "beta", "gamma"])
    real = RealCrops(RealConfig(sources=(str(folder),), fraction=0.5))
    synthetic = WordImages(SynthConfig(split="train", style="plain"))
    mixed = MixedDataset(synthetic, real, seed=3)
    charset = Charset()
    real_labels = {tuple(charset.encode(w)) for w in ("alpha", "beta", "gamma")}
    items = [mixed[i] for i in range(60)]
    from_real = sum(tuple(label) in real_labels for _, label in items)
    assert 15 <= from_real <= 45  # about half (binomial 60, 0.5: outside this one time in 10^5)
    for image, label in items:
        assert image.shape == (1, 32, 100) and image.dtype == np.float32 and -1 <= image.min() <= image.max() <= 1
    again = MixedDataset(synthetic, real, seed=3)
    assert all(np.array_equal(again[i][0], items[i][0]) for i in (0, 17, 59))


def test_real_config_refuses_nonsense():
    with pytest.raises(ValueError, match="tall"):
        RealConfig(sources=("x",), tall="rotate")
    with pytest.raises(ValueError, match="needs sources"):
        RealConfig(fraction=0.5)
    with pytest.raises(ValueError, match="probabilities"):
        RealConfig(sources=("x",), fraction=1.5)


@pytest.mark.slow
def test_a_run_on_real_crops_trains_checkpoints_and_evaluates_the_real_set(tmp_path):
    """A tiny run with half real crops: it trains, resumes, records the real set's accuracy at each
    evaluation and keeps the real section in its saved config."""
    folder = _folder(tmp_path / "real", ["serve", "triton", "model", "batch", "queue", "tensor"])
    from test_train import TINY

    config = RunConfig(
        TINY,
        TrainConfig(steps=4, batch_size=4, eval_every=2, eval_size=4, checkpoint_every=2, num_workers=0, eval_real=str(folder / "labels.tsv")),
        SynthConfig(split="train", style="plain"),
        RealConfig(sources=(str(folder),), fraction=0.5),
    )
    Trainer(config, tmp_path / "run").run(steps=2, progress=False)
    resumed = Trainer(config, tmp_path / "run")
    assert resumed.step == 2
    resumed.run(progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(0 <= r["val_real_acc"] <= 1 and r["val_real_count"] == 6 for r in rows)
    assert RunConfig.from_file(tmp_path / "run" / "config.json").real == config.real


def test_the_real_mix_configs_parse_and_differ_only_in_the_mix():
    configs = {f: RunConfig.from_file(REPO_ROOT / "configs" / f"spin_real_mix{f}.json") for f in (100, 70, 40)}
    assert {f: c.real.fraction for f, c in configs.items()} == {100: 1.0, 70: 0.7, 40: 0.4}
    first = configs[100].to_dict()
    for c in configs.values():
        d = c.to_dict()
        d["real"]["fraction"] = first["real"]["fraction"]
        assert d == first


@pytest.mark.skipif(not SHARED_TRAIN.is_dir(), reason="../shared/real_train is absent")
def test_the_shared_training_crops_follow_the_documented_counts():
    stats = label_stats([SHARED_TRAIN / "svt_train"])[str(SHARED_TRAIN / "svt_train")]
    assert stats["samples"] == stats["kept (rule)"] == 257


@pytest.mark.slow
def test_the_model_card_names_the_real_data_its_terms_and_the_mix_that_was_chosen(tmp_path):
    from test_train import TINY

    from spinrec.training.train import CardReports, export

    folder = _folder(tmp_path / "real_train" / "svt_train", ["serve", "triton", "model", "batch", "Café"])
    runs = []
    for share in (1.0, 0.5):
        config = RunConfig(
            TINY,
            TrainConfig(steps=2, batch_size=4, eval_every=2, eval_size=4, checkpoint_every=2, num_workers=0, eval_real=str(folder / "labels.tsv")),
            SynthConfig(split="train", style="plain"),
            RealConfig(sources=(str(folder),), fraction=share),
        )
        Trainer(config, tmp_path / f"mix{share}").run(progress=False)
        runs.append(tmp_path / f"mix{share}")
    export(runs[1], tmp_path / "out" / "w.safetensors", reports=CardReports(mix_runs=runs))
    card = (tmp_path / "out" / "README.md").read_text()
    assert "SPIN trained on real and synthetic words" in card and "Trained on synthetic data only" not in card
    assert "- Data: 8 images (2 steps x batch 4), 50 % of them from the `spinrec.training.synth` stream" in card
    assert "- Real crops: 4 from " in card and "dropped: 1)" in card  # Café goes by the label rule
    assert "Street View Text, train split" in card and "commercial users should check them" in card
    assert "| 50 % | `mix0.5` |" in card and "| 100 % | `mix1.0` |" in card and "compared at step 2 " in card
    assert (tmp_path / "out" / "mix_curve.png").stat().st_size > 0
