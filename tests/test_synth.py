"""The synthetic word-image generator: determinism, font split, labels as PaddleOCR's SPINLabelEncode."""

import numpy as np
import pytest

from spinrec.charset import SPIN_DICT, Charset
from spinrec.synth import SynthConfig, WordImages, discover_fonts, family_is_heldout, read_words


@pytest.fixture(scope="module")
def train_source():
    return WordImages(SynthConfig(split="train"))


def test_same_seed_and_index_give_the_same_sample(train_source):
    other = WordImages(SynthConfig(split="train"))
    for index in (0, 7, 123456):
        image_a, text_a = train_source.sample(5, index)
        image_b, text_b = other.sample(5, index)
        assert text_a == text_b
        assert image_a.shape == image_b.shape and np.array_equal(image_a, image_b)


def test_different_seeds_give_different_streams(train_source):
    texts_a = [train_source.sample(1, i)[1] for i in range(20)]
    texts_b = [train_source.sample(2, i)[1] for i in range(20)]
    assert texts_a != texts_b
    assert len(set(texts_a)) > 15


def test_images_are_bgr_word_crops_with_visible_text(train_source):
    for i in range(30):
        image, text = train_source.sample(3, i)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        h, w = image.shape[:2]
        assert 8 <= h <= 400 and 8 <= w <= 2000, (h, w, text)
        assert image.std() > 3, f"sample {i} ({text!r}) is flat"


def _paddle_label(text: str, max_length: int = 25) -> list[int] | None:
    """SPINLabelEncode re-derived: lowercase, keep dictionary symbols, [sos, ids, eos, 0-padding]."""
    if not text or len(text) > max_length:
        return None
    ids = [2 + SPIN_DICT.index(c) for c in text.lower() if c in SPIN_DICT]
    if not ids:
        return None
    return [0] + ids + [1] + [0] * (max_length - len(ids))


def test_training_labels_are_spin_label_encode_of_the_rendered_text(train_source):
    dataset = train_source.dataset(seed=11)
    seen_upper = seen_symbol = False
    for i in range(60):
        image, label = dataset[i]
        _, text = train_source.sample(11, i)
        assert image.shape == (1, 32, 100) and image.dtype == np.float32
        assert -1.0 <= image.min() and image.max() <= 1.0
        assert label.tolist() == _paddle_label(text)
        seen_upper |= text != text.lower()
        seen_symbol |= any(not c.isalnum() for c in text)
    assert seen_upper and seen_symbol, "case mixing and punctuation should appear in 60 samples"


def test_charset_filtering_drops_symbols_outside_the_dictionary():
    charset = Charset()
    assert charset.encode("Caf\u00e9 Bar").tolist() == _paddle_label("Caf\u00e9 Bar")
    assert charset.filter_text("Caf\u00e9 Bar") == "cafbar"
    assert charset.encode("\u00e9\u00e8") is None


def test_font_split_is_disjoint_by_family():
    train = discover_fonts(split="train")
    heldout = discover_fonts(split="heldout")
    every = discover_fonts(split="all")
    train_families = {f.family for f in train}
    heldout_families = {f.family for f in heldout}
    assert not train_families & heldout_families
    assert {f.path for f in train} | {f.path for f in heldout} == {f.path for f in every}
    assert len(heldout_families) >= 5 and len(train_families) > 2 * len(heldout_families)
    assert all(family_is_heldout(f, 0.2) for f in heldout_families)


def test_heldout_source_only_renders_heldout_fonts():
    source = WordImages(SynthConfig(split="heldout"))
    assert {f.family for f in source.fonts} == {f.family for f in discover_fonts(split="heldout")}


def test_word_list_is_ascii_without_possessives():
    words = read_words()
    assert len(words) > 50000
    assert all(w.isascii() and not w.endswith("'s") and len(w) <= 16 for w in words)


def test_clean_samples_are_dictionary_words_black_on_white_in_three_cases(train_source):
    words = set(train_source.words)
    for i in range(6):
        image, text = train_source.clean_sample(9, i)
        again, text_again = train_source.clean_sample(9, i)
        assert text == text_again and np.array_equal(image, again)
        assert text == (text.lower(), text.capitalize(), text.upper())[i % 3]
        assert any(text.lower() == w.lower() for w in words) and 3 <= len(text) <= 12
        assert image.dtype == np.uint8 and image.shape[0] >= 40
        assert image[0].min() == 255 and image.min() < 64  # white margin, dark ink
