"""The optional trdg data style (issue 13's generator comparison): the same texts as our styles, rendered by
trdg, preprocessed to the model's input, deterministic per (seed, index), offline with trdg's bundled fonts.
trdg is an experiment dependency (`pip install --no-deps trdg==1.8.0`), so these tests skip without it."""

import numpy as np
import pytest

from spinrec.charset import Charset
from spinrec.training.synth import SynthConfig, WordImages

pytest.importorskip("trdg", reason="trdg is an experiment dependency: pip install --no-deps trdg==1.8.0")
from spinrec.training.trdg_style import trdg_dir  # noqa: E402


@pytest.fixture(scope="module")
def trdg_source():
    return WordImages(SynthConfig(style="trdg"))


def test_trdg_items_have_the_training_shapes_and_the_labels_of_the_texts(trdg_source):
    charset = Charset()
    dataset = trdg_source.dataset(3)
    for i in range(12):
        image, label = dataset[i]
        _, text = trdg_source.sample(3, i)
        assert image.shape == (1, 32, 100) and image.dtype == np.float32
        assert -1.0 <= image.min() < image.max() <= 1.0  # normalised, and not a blank crop
        assert np.array_equal(label, charset.encode(text))


def test_trdg_draws_the_same_texts_as_our_plain_style(trdg_source):
    # Same text source: the first draw of a sample's generator is the text, whatever the renderer.
    plain = WordImages(SynthConfig(style="plain"))
    same = sum(trdg_source.sample(4, i)[1] == plain.sample(4, i)[1] for i in range(20))
    assert same >= 15  # a trdg refusal (too little contrast) redraws the text of that sample


def test_trdg_samples_are_a_function_of_seed_and_index(trdg_source):
    a, text_a = trdg_source.sample(5, 17)
    trdg_source.sample(5, 18)
    b, text_b = trdg_source.sample(5, 17)
    assert text_a == text_b and a.shape == b.shape and np.array_equal(a, b)
    assert a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8


def test_trdg_bundled_fonts_render_offline():
    fonts = str(trdg_dir() / "fonts" / "latin")
    source = WordImages(SynthConfig(style="trdg", split="all", font_dirs=(fonts,)))
    assert all(f.path.startswith(fonts) for f in source.fonts)
    image, text = source.sample(0, 0)
    assert image.shape[0] >= 16 and image.shape[1] >= image.shape[0] and image.std() > 5
