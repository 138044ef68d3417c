"""The synthetic word-image generator: determinism, font split, labels as PaddleOCR's SPINLabelEncode, and
each scene effect doing what it says when forced on."""

import dataclasses
import json

import cv2
import numpy as np
import pytest
from PIL import ImageFont

from spinrec.training import scene, synth
from spinrec.charset import SPIN_DICT, Charset
from spinrec.training.scene import SceneMix
from spinrec.training.synth import SynthConfig, WordImages, discover_fonts, family_is_heldout, read_words


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


# ------------------------------------------------------------------------------------ scene style


NONE = SceneMix(**{f.name: 0.0 for f in dataclasses.fields(SceneMix)})


def _only(**shares: float) -> SceneMix:
    """A mix with every effect off except ``shares``."""
    return dataclasses.replace(NONE, **shares)


def _bar(h: int = 90, w: int = 300, size: int = 30) -> np.ndarray:
    """A straight line of ink (a word's stand-in) with a margin of ``size``, as a layout gives."""
    mask = np.zeros((h, w), np.uint8)
    mask[size : h - size, size : w - size] = 255
    return mask


def _column_centroids(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    weights = mask.astype(np.float64)
    cols = np.flatnonzero(weights.sum(0) > 255 * 3)
    rows = np.arange(mask.shape[0], dtype=np.float64)[:, None]
    return cols.astype(np.float64), (weights[:, cols] * rows).sum(0) / weights[:, cols].sum(0)


def test_scene_is_the_default_style_and_plain_ignores_the_mix(train_source):
    assert SynthConfig().style == "scene"
    plain = WordImages(SynthConfig(split="train", style="plain"))
    plain_arcs = WordImages(SynthConfig(split="train", style="plain", mix=_only(arc=1.0, outline=1.0)))
    for index in (0, 3, 99):
        a, b = plain.sample(4, index), plain_arcs.sample(4, index)
        assert a[1] == b[1] and np.array_equal(a[0], b[0])
        scene_image, scene_text = train_source.sample(4, index)
        again_image, again_text = train_source.sample(4, index)
        assert scene_text == again_text and np.array_equal(scene_image, again_image)


def test_config_reads_the_mix_from_a_dict_and_rejects_bad_values():
    config = SynthConfig(mix={"arc": 1.0, "jpeg": 0.0})
    assert config.mix == dataclasses.replace(SceneMix(), arc=1.0, jpeg=0.0)
    as_json = json.loads(json.dumps(dataclasses.asdict(config)))
    assert SynthConfig(**{**as_json, "font_dirs": tuple(as_json["font_dirs"])}) == config
    with pytest.raises(ValueError, match="style"):
        SynthConfig(style="fancy")
    with pytest.raises(ValueError, match="probabilities"):
        SceneMix(arc=1.5)
    with pytest.raises(TypeError):
        SynthConfig(mix={"bogus": 0.5})


def test_every_effect_forced_on_still_gives_word_crops():
    source = WordImages(SynthConfig(split="train", mix=SceneMix(**{f.name: 1.0 for f in dataclasses.fields(SceneMix)} | {"plain": 0.0})))
    for i in range(12):
        image, text = source.sample(8, i)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, text
        assert 8 <= image.shape[0] <= 1000 and 8 <= image.shape[1] <= 2000, (image.shape, text)


@pytest.mark.parametrize("up", [True, False])
def test_arc_bends_the_line_the_right_way(up):
    bar = _bar()
    layers = np.repeat(bar[:, :, None], 4, axis=2)
    bent = scene.arc(layers, np.random.default_rng(0), up=up, span=2.0)
    x, y = _column_centroids(bent[:, :, scene.TARGET])
    linear = np.polyval(np.polyfit(x, y, 1), x)
    quadratic = np.polyfit(x, y, 2)
    assert np.abs(y - linear).max() > 15, "an arc of 2 radians must move the centroid rows far off a line"
    # Image rows grow downwards: on top of a circle the middle is highest (a parabola opening down).
    assert (quadratic[0] > 0) == up
    assert bent[:, :, scene.TARGET].astype(np.float64).sum() == pytest.approx(bar.astype(np.float64).sum(), rel=0.15)


def test_wave_moves_the_baseline_up_and_down():
    layers = np.repeat(_bar()[:, :, None], 4, axis=2)
    x, y = _column_centroids(scene.wave(layers, np.random.default_rng(1), size=30)[:, :, scene.TARGET])
    residual = y - np.polyval(np.polyfit(x, y, 1), x)
    assert residual.max() > 2 and residual.min() < -2


def _principal_angle(mask: np.ndarray) -> float:
    ys, xs = np.nonzero(mask > 128)
    cov = np.cov(np.stack([xs, ys]).astype(np.float64))
    vx, vy = np.linalg.eigh(cov)[1][:, -1]
    angle = np.degrees(np.arctan2(vy, vx))
    return (angle + 90) % 180 - 90


def test_rotation_reaches_30_degrees_only_when_forced():
    layers = np.repeat(_bar(90, 400)[:, :, None], 4, axis=2)
    forced = [_principal_angle(scene.perspective(layers, np.random.default_rng(s), _only(rotate=1.0), 30)[:, :, 0]) for s in range(30)]
    usual = [_principal_angle(scene.perspective(layers, np.random.default_rng(s), NONE, 30)[:, :, 0]) for s in range(30)]
    assert max(np.abs(forced)) > 20 and max(np.abs(forced)) <= 31
    assert max(np.abs(usual)) < 12


def test_outline_and_shadow_layers_reach_beyond_the_glyphs():
    ink = _bar()
    layers, under = scene.style_layers(ink, ink, np.random.default_rng(2), _only(outline=1.0, shadow=1.0), 30)
    assert under == "shadow"
    assert (layers[:, :, scene.OUTLINE] >= ink).all() and (layers[:, :, scene.OUTLINE] > ink).sum() > 100
    assert ((layers[:, :, scene.SHADOW] > 40) & (ink == 0)).sum() > 30
    _, under = scene.style_layers(ink, ink, np.random.default_rng(2), _only(extrude=1.0, shadow=1.0), 30)
    assert under == "extrude"


def test_outline_is_painted_in_a_third_color():
    ink = np.zeros((80, 200), np.uint8)
    ink[25:55, 30:170] = 255
    for seed in range(5):
        rng = np.random.default_rng(seed)
        layers, under = scene.style_layers(ink, ink, rng, _only(outline=1.0), 30)
        image = scene.paint(layers, under, 30, rng, NONE, lambda rng, h: np.zeros((h, h), np.uint8)).astype(np.float64)
        ring = (layers[:, :, scene.OUTLINE] == 255) & (ink == 0)
        core = cv2.erode(ink, np.ones((5, 5), np.uint8)) == 255
        outside = cv2.dilate(layers[:, :, scene.OUTLINE], np.ones((5, 5), np.uint8)) == 0
        ring_color, core_color = np.median(image[ring], 0), np.median(image[core], 0)
        bg_color = np.median(image[outside], 0)
        assert np.linalg.norm(ring_color - core_color) > 40, seed
        assert np.linalg.norm(ring_color - bg_color) > 30, seed


def test_bevel_lights_one_side_of_a_stroke_and_darkens_the_other():
    ink = _bar()
    shade = scene._bevel(ink, np.random.default_rng(3), 30)
    assert shade.max() > 0.5 and shade.min() < -0.5
    assert np.abs(shade[45, 100:200]).max() < 0.05 and np.abs(shade[2:8, 100:200]).max() < 0.05  # flat inside and out


def test_tight_crop_cuts_into_the_word_and_loose_crop_leaves_room():
    layers = np.repeat(_bar()[:, :, None], 4, axis=2)
    tight = scene.crop(layers, np.random.default_rng(4), _only(tight_crop=1.0), 30)
    assert (tight[[0, -1], :, scene.TARGET] == 255).all() and (tight[:, [0, -1], scene.TARGET] == 255).all()
    loose = [scene.crop(layers, np.random.default_rng(s), NONE, 30) for s in range(10)]
    assert any((c[0, :, scene.TARGET] == 0).all() and (c[:, 0, scene.TARGET] == 0).all() for c in loose)


def test_neighbours_share_the_baseline_and_leave_the_target_alone(train_source):
    font = ImageFont.truetype(train_source.fonts[0].path, 32)
    target, _ = synth._text_mask("word", font, np.random.default_rng(0))
    for seed in range(4):
        wide, ink = synth._with_neighbours(target, font, train_source.fonts[0].glyphs, np.random.default_rng(seed))
        assert wide.shape == ink.shape and wide.shape[0] == target.shape[0] and wide.shape[1] > target.shape[1]
        assert wide.sum() == target.sum() and (ink >= wide).all()
        extra = (ink > 40) & (wide <= 40)
        rows = np.flatnonzero(extra.any(1))
        word_rows = np.flatnonzero((target > 40).any(1))
        assert rows.size and rows.min() >= word_rows.min() - 12 and rows.max() <= word_rows.max() + 12


def test_fragments_stay_at_the_top_and_bottom_edges():
    image = np.zeros((60, 200, 3), np.float32)
    block = lambda rng, h: np.full((h, 3 * h), 255, np.uint8)  # noqa: E731
    for seed in range(10):
        scene._paste_fragments(image, np.random.default_rng(seed), 30, block, np.zeros(3, np.float32))
    changed_rows = np.flatnonzero(image.any((1, 2)))
    assert changed_rows.size and not image[25:35].any(), "more than half a fragment's height reached into the word"


def test_camera_effects_soften_the_image_when_forced():
    rng = np.random.default_rng(5)
    sharp = np.where(np.indices((64, 256)).sum(0) % 8 < 4, 255, 0).astype(np.uint8)
    sharp = cv2.cvtColor(sharp, cv2.COLOR_GRAY2BGR)
    detail = lambda im: cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()  # noqa: E731
    for effect in ("defocus", "motion", "gaussian", "low_res"):
        out = scene.camera(sharp, rng, _only(**{effect: 1.0}), 48)
        assert out.dtype == np.uint8 and out.shape[2] == 3
        if out.shape == sharp.shape:
            assert detail(out) < 0.7 * detail(sharp), effect
        else:
            assert effect == "low_res" and out.shape[0] < sharp.shape[0]
    jpeg = scene.camera(sharp, rng, _only(jpeg=1.0), 48)
    assert jpeg.shape == sharp.shape and not np.array_equal(jpeg, sharp)


def test_light_makes_a_flat_image_uneven():
    flat = np.full((40, 120, 3), 128, np.float32)
    lit = [scene.light(flat, np.random.default_rng(s)) for s in range(6)]
    assert all(im.shape == flat.shape for im in lit)
    assert max(float(im.std()) for im in lit) > 10


def test_script_families_are_kept_apart_and_split_like_the_others():
    scripts = discover_fonts(split="all", scripts=True)
    assert scripts, "the Debian script fonts (Kristi, Z003, ...) should be installed"
    assert not {f.family for f in scripts} & {f.family for f in discover_fonts(split="all")}
    train = {f.family for f in discover_fonts(split="train", scripts=True)}
    assert all(not family_is_heldout(f, 0.2) for f in train)


def test_synth_data_tools_write_the_sheet_and_the_speed_record(tmp_path):
    from perf import synth_data

    assert synth_data.main(["sheet", "--count", "3", "--columns", "2", "--out", str(tmp_path / "sheet.png")]) == 0
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert sheet is not None and sheet.shape[1] > 2 * sheet.shape[0]  # two panels of 2 columns, 2 rows each
    assert synth_data.main(["speed", "--rounds", "1", "--chunk", "2", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "speed.json").read_text())
    assert set(record["images_per_s_median"]) == {"plain", "scene"} and record["scene_over_plain"] > 0


def test_natural_backgrounds_are_photo_crops_weaker_than_the_text_contrast():
    assert len(scene.photos()) == len(list(scene.PHOTO_DIR.glob("*.jpg"))) >= 5
    assert (scene.PHOTO_DIR / "SOURCES.md").exists()
    bg, fg = np.float32([120, 120, 120]), np.float32([250, 250, 250])
    for seed in range(5):
        image = scene.background(40, 160, bg, fg, np.random.default_rng(seed), _only(natural=1.0), 30, lambda rng, h: np.zeros((h, h), np.uint8))
        assert image.shape == (40, 160, 3) and image.dtype == np.float32
        detail = image - bg
        assert detail.std() > 2, "a photo crop should add structure"
        assert np.percentile(np.abs(detail), 95) < 0.6 * (250 - 120), "the photo must stay weaker than the text's contrast"


def test_plain_share_and_script_share_pick_the_renderer_and_the_fonts(monkeypatch):
    calls = []
    monkeypatch.setattr(synth, "render", lambda text, path, rng: calls.append(("plain", path)) or np.zeros((8, 8, 3), np.uint8))
    monkeypatch.setattr(synth, "scene_image", lambda *a, **k: calls.append(("scene", None)) or np.zeros((8, 8, 3), np.uint8))
    for share, expected in ((1.0, "plain"), (0.0, "scene")):
        calls.clear()
        source = WordImages(SynthConfig(split="train", mix=dataclasses.replace(SceneMix(), plain=share)))
        for i in range(10):
            source.sample(6, i)
        assert [kind for kind, _ in calls] == [expected] * 10
    scripts = WordImages(SynthConfig(split="train", mix=_only(script_font=1.0)))
    used = []
    monkeypatch.setattr(scripts, "_scene", lambda text, font, rng: used.append(font) or np.zeros((8, 8, 3), np.uint8))
    for i in range(10):
        scripts.sample(6, i)
    assert used and all(font in scripts.scripts for font in used)


def test_perspective_makes_the_rectangle_a_general_quadrilateral():
    layers = np.repeat(_bar(90, 300)[:, :, None], 4, axis=2)
    fills = []
    for seed in range(10):
        warped = scene.perspective(layers, np.random.default_rng(seed), _only(perspective=1.0), 30)[:, :, 0]
        contour = cv2.findNonZero((warped > 128).astype(np.uint8))
        (_, (w, h), _) = cv2.minAreaRect(contour)
        fills.append(len(contour) / (w * h))
    assert min(fills) < 0.95, "some forced perspectives should no longer be a (rotated) rectangle"


def test_square_crop_around_a_short_word():
    layers = np.repeat(_bar(90, 110)[:, :, None], 4, axis=2)
    for seed in range(5):
        out = scene.crop(layers, np.random.default_rng(seed), _only(square_crop=1.0), 30)
        assert abs(out.shape[0] - out.shape[1]) <= 1 and (out[:, :, scene.TARGET] == 255).any()


def test_clutter_adds_sharp_shapes_to_a_smooth_background():
    bg, fg = np.float32([40, 40, 40]), np.float32([230, 230, 230])
    edges = lambda im: float(np.abs(cv2.Laplacian(im.mean(2), cv2.CV_32F)).mean())  # noqa: E731
    blank = lambda rng, h: np.zeros((h, h), np.uint8)  # noqa: E731
    smooth = [edges(scene.background(48, 160, bg, fg, np.random.default_rng(s), NONE, 30, blank)) for s in range(6)]
    cluttered = [edges(scene.background(48, 160, bg, fg, np.random.default_rng(s), _only(clutter=1.0), 30, blank)) for s in range(6)]
    assert max(smooth) < 0.5 and np.median(cluttered) > 2 * max(max(smooth), 0.1)
