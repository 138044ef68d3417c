"""Whole-photograph reading (spinrec.page): the DB post-processing against rapidocr's (the field's implementation of
PaddleOCR's DBPostProcess) and against geometry, the detector's runtimes against each other, and a synthetic page
with words at known quadrilaterals read in process. The served model is tested in tests/test_page_server.py."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from conftest import DEFAULT_WEIGHTS
from spinrec.page.detect import DetectorOptions, boxes, crop, input_size, prepare, reading_order
from spinrec.page.synthetic import PAGE_WORDS, synthetic_page  # noqa: F401 (test_page_server imports them from here)

#: How far a detected corner may lie from the word's tight box: DB grows every box by area x 1.6 / perimeter
#: (``unclip_ratio``), about a third of the text height for these words, plus a pixel of rounding.
CORNER_TOLERANCE_PX = 16


def polygon_iou(a, b) -> float:
    from spinrec.evaluation.pages import _iou, _polygon

    return _iou(_polygon(a), _polygon(b))


def rapidocr_boxes(prob: np.ndarray, height: int, width: int, options: DetectorOptions):
    """rapidocr's DBPostProcess (its own code) on ``prob``, with ``options``."""
    utils = pytest.importorskip("rapidocr.ch_ppocr_det.utils", reason="rapidocr (the dev extra) is the reference")
    post = utils.DBPostProcess(
        thresh=options.thresh, box_thresh=options.box_thresh, max_candidates=options.max_candidates,
        unclip_ratio=options.unclip_ratio, score_mode="fast", use_dilation=options.use_dilation,
    )  # fmt: skip
    quads, scores = post(prob, (height, width))
    return np.asarray(quads, np.float32).reshape(-1, 4, 2), np.asarray(scores, np.float32)


@pytest.fixture(scope="module")
def detector_graph(tmp_path_factory):
    from spinrec.page.detector import DetectorError, find_detector, install

    try:
        source = find_detector()
    except DetectorError as e:
        pytest.skip(str(e))
    target = tmp_path_factory.mktemp("detector") / "model.onnx"
    install(source, target)
    return target


@pytest.fixture(scope="module")
def detector(detector_graph):
    from spinrec.runtime import open_encoder

    return open_encoder("openvino", detector_graph, 2, "fp32")


@pytest.fixture(scope="module")
def page():
    return synthetic_page()


def random_maps(n: int = 12):
    """Probability maps with text-like blobs: rotated rectangles of high probability on low noise, some touching."""
    rng = np.random.default_rng(7)
    for _ in range(n):
        prob = rng.uniform(0, 0.25, (320, 480)).astype(np.float32)
        for _ in range(rng.integers(3, 12)):
            centre = rng.uniform([20, 20], [460, 300])
            size = rng.uniform([8, 4], [140, 40])
            corners = cv2.boxPoints((tuple(centre), tuple(size), float(rng.uniform(-30, 30)))).astype(np.int32)
            cv2.fillPoly(prob, [corners], float(rng.uniform(0.35, 1.0)))
        yield cv2.GaussianBlur(prob, (3, 3), 0)


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_db_post_processing_matches_rapidocrs(scale):
    """Same map, same options: the same quadrilaterals (within 1 pixel: float32 against float64 rounding) and scores."""
    options = DetectorOptions()
    compared = 0
    for prob in random_maps():
        height, width = round(prob.shape[0] * scale), round(prob.shape[1] * scale)
        ours, our_scores = boxes(prob[None, None], height, width, options)
        theirs, their_scores = rapidocr_boxes(prob[None, None], height, width, options)
        assert len(ours) == len(theirs)
        order_ours = np.lexsort((ours[:, 0, 0], ours[:, 0, 1]))
        order_theirs = np.lexsort((theirs[:, 0, 0], theirs[:, 0, 1]))
        np.testing.assert_allclose(ours[order_ours], theirs[order_theirs], atol=1.0)
        np.testing.assert_allclose(our_scores[order_ours], their_scores[order_theirs], atol=1e-5)
        compared += len(ours)
    assert compared > 25


def test_a_rectangle_grows_by_the_db_offset():
    """Physics of the unclip: an axis-aligned w x h region comes back (w + 2d) x (h + 2d), d = w h r / (2 (w + h))."""
    prob = np.zeros((200, 400), np.float32)
    prob[90:110, 100:220] = 0.9  # 120 x 20 pixels
    options = DetectorOptions()
    quads, scores = boxes(prob, 200, 400, options)
    # The score averages over the box's border pixels too, which the 2x2 dilation added: 0.9 x 120 x 20 / (121 x 21).
    assert len(quads) == 1 and scores[0] == pytest.approx(0.9 * 120 * 20 / (121 * 21), abs=0.005)
    d = 120 * 20 * options.unclip_ratio / (2 * (120 + 20))
    (x0, y0), (x1, y1) = quads[0].min(axis=0), quads[0].max(axis=0)
    assert x1 - x0 == pytest.approx(120 + 2 * d, abs=2) and y1 - y0 == pytest.approx(20 + 2 * d, abs=2)
    assert (x0 + x1) / 2 == pytest.approx(159.5, abs=1) and (y0 + y1) / 2 == pytest.approx(99.5, abs=1)


def test_below_the_thresholds_nothing_is_found():
    prob = np.zeros((200, 400), np.float32)
    prob[90:110, 100:220] = 0.29  # under thresh
    prob[20:40, 100:220] = 0.45  # over thresh, box score under box_thresh
    prob[150:152, 10:12] = 0.9  # under min_size
    assert len(boxes(prob, 200, 400, DetectorOptions())[0]) == 0


def test_input_size_follows_paddles_resize_and_the_cap():
    options = DetectorOptions()
    assert input_size(720, 1280, options) == (736, 1312)  # short side up to 736, multiples of 32 (Python's round, as Paddle)
    assert input_size(3000, 4000, options) == (1504, 1984)  # no upscaling needed; capped at 2000 (62.5 x 32 rounds to 62 x 32)
    assert input_size(100, 2000, options) == (96, 1984)  # a banner: the cap wins over the 736 floor
    assert input_size(5, 5, options) == (736, 736)
    assert input_size(10, 10, replace(options, limit_type="max", limit_side_len=960)) == (32, 32)


def test_reading_order_is_lines_top_to_bottom_then_left_to_right():
    def quad(x, y):
        return np.array([[x, y], [x + 50, y], [x + 50, y + 20], [x, y + 20]], np.float32)

    quads = np.stack([quad(300, 104), quad(10, 100), quad(150, 200), quad(160, 98), quad(5, 205)])
    assert reading_order(quads).tolist() == [1, 3, 0, 4, 2]


def test_crop_is_upright_and_tall_crops_turn():
    image = np.zeros((100, 200, 3), np.uint8)
    image[40:60, 50:150] = 255
    flat = crop(image, np.array([[50, 40], [150, 40], [150, 60], [50, 60]], np.float32))
    assert flat.shape[:2] == (20, 100) and flat.mean() > 250
    tall = np.array([[90, 10], [110, 10], [110, 90], [90, 90]], np.float32)
    assert crop(image, tall).shape[:2] == (20, 80)
    assert crop(image, tall, tall="keep").shape[:2] == (80, 20)


def test_the_detector_reads_the_same_on_openvino_and_onnx_runtime(detector_graph, page):
    """The served CPU runtime (OpenVINO, fp32) against ONNX Runtime: probability maps within 2e-3 and the same boxes."""
    from spinrec.runtime import open_encoder

    pixels = prepare(page[0], DetectorOptions())
    ov = open_encoder("openvino", detector_graph, 2, "fp32")(pixels)
    ort = open_encoder("onnxruntime", detector_graph, 2, "fp32")(pixels)
    assert ov.shape == ort.shape == (1, 1, *pixels.shape[2:])
    assert np.abs(ov - ort).max() < 2e-3
    a, b = (boxes(p, *page[0].shape[:2], DetectorOptions())[0] for p in (ov, ort))
    assert len(a) == len(b) == len(PAGE_WORDS)
    np.testing.assert_allclose(a, b, atol=1)


def test_the_installed_detector_is_checked(tmp_path, detector_graph):
    import onnx

    from spinrec.contract import DETECTOR_INPUT, DETECTOR_OUTPUT
    from spinrec.page.detector import DetectorError, install

    graph = onnx.load(str(detector_graph)).graph
    assert [i.name for i in graph.input] == [DETECTOR_INPUT] and [o.name for o in graph.output] == [DETECTOR_OUTPUT]
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(DetectorError, match="not an ONNX graph"):
        install(tmp_path / "junk.onnx", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="the shipped default weights are not in this checkout")
def test_a_synthetic_page_is_found_and_read_in_process(detector, page):
    """Every word of the synthetic page: found once, its quadrilateral around the word's own (IoU >= 0.6, every corner
    within CORNER_TOLERANCE_PX), read right, in reading order."""
    from spinrec.page.read import PageReader, pipeline_recognizer
    from spinrec.pipeline import Pipeline

    image, quads = page
    result = PageReader(detector, pipeline_recognizer(Pipeline.open(DEFAULT_WEIGHTS)))(cv2.imencode(".png", image)[1].tobytes())
    assert len(result.words) == len(PAGE_WORDS) and result.note == ""
    for word in result.words:
        match = max(range(len(quads)), key=lambda i: polygon_iou(quads[i], word.quad))
        assert polygon_iou(quads[match], word.quad) >= 0.6
        assert np.abs(word.quad - quads[match]).max() <= CORNER_TOLERANCE_PX
        assert word.text == PAGE_WORDS[match][0] and word.confidence > 0.9 and word.flag == ""
    assert [w.text for w in result.words] == ["hello", "world", "triton", "server", "page"]
    assert set(result.seconds) == {"decode", "detect", "crop", "recognize"}


def test_a_blank_photograph_has_no_words(detector):
    from spinrec.page.read import PageReader

    def no_recognizer(crops):
        raise AssertionError("nothing to read")

    blank = np.full((480, 640, 3), 200, np.uint8)
    assert PageReader(detector, no_recognizer)(cv2.imencode(".jpg", blank)[1].tobytes()).words == []


def test_past_the_word_limit_the_surest_words_are_read(detector, page):
    from spinrec.page.read import PageReader

    read = PageReader(detector, lambda crops: [("x", 1.0, "")] * len(crops), max_words=2)(page[0])
    assert len(read.words) == 2 and read.note.startswith("words_limited: 5 words found")


def test_the_perf_split_charges_each_model_its_own_time():
    """perf.pages: per-page milliseconds from a level's server statistics (means per request x requests / pages)."""
    from perf.pages import REST, split_per_page

    stats = {
        "spin_page": {"compute_infer_ms": 200.0, "requests_ok": 10},
        "spin_detector": {"compute_infer_ms": 150.0, "requests_ok": 10},
        "spin_preprocess": {"compute_infer_ms": 2.0, "requests_ok": 10},
        "spin_encoder": {"compute_infer_ms": 12.0, "requests_ok": 10},
        "spin_decoder": {"compute_infer_ms": 6.0, "requests_ok": 10},
        "spin_ocr": {"compute_infer_ms": 0.0, "requests_ok": 10},
    }
    assert split_per_page(stats, 10) == {"detection network": 150.0, "recognition": 20.0, REST: 30.0}


@pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="the shipped default weights are not in this checkout")
def test_vertical_words_are_read_whichever_way_they_turn(detector):
    """Words turned 90 degrees either way: tall=both (served) reads all of them; PaddleOCR's counterclockwise turn
    (tall=rotate) only those turned clockwise."""
    from spinrec.page.read import PageReader, pipeline_recognizer
    from spinrec.pipeline import Pipeline

    recognizer = pipeline_recognizer(Pipeline.open(DEFAULT_WEIGHTS))
    words = ("market", "hotel", "station", "garden")
    read = {}
    for tall in ("both", "rotate"):
        for angle in (90, -90):
            page, _ = synthetic_page(tuple((w, (200 + 280 * i, 360), angle, 1.6) for i, w in enumerate(words)))
            read[tall, angle] = sorted(w.text for w in PageReader(detector, recognizer, tall=tall)(page).words)
    assert read["both", 90] == read["both", -90] == read["rotate", -90] == sorted(words)
    assert not set(read["rotate", 90]) & set(words)


def test_the_served_detector_does_not_grow_with_new_photograph_sizes(detector_graph):
    """Every photograph size is a new input shape; OpenVINO caches kernels per shape (5,000 by default, megabytes each).
    As served (spin_detector's runtime_cache), 80 more new shapes after the first 20 add under 48 MiB; the plugin's
    default cache, for comparison, adds over 150 MiB (measured 338 MiB for 100 shapes)."""
    import re
    from pathlib import Path

    from spinrec.runtime import open_encoder

    config = (Path(__file__).resolve().parents[1] / "model_repository" / "spin_detector" / "configs" / "cpu.pbtxt").read_text()
    served = int(re.search(r'key: "runtime_cache" value: \{ string_value: "(\d+)" \}', config)[1])

    def rss_mib() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20

    rng = np.random.default_rng(0)
    shapes = sorted({(int(h), int(w)) for h, w in rng.integers(1, 21, (400, 2)) * 32}, key=lambda s: -s[0] * s[1])[:100]
    growth = {}
    for cache in (served, None):
        model = open_encoder("openvino", detector_graph, 2, "fp32", **({"runtime_cache": cache} if cache else {}))
        for i, (h, w) in enumerate(shapes):
            model(rng.random((1, 3, h, w), dtype=np.float32))
            if i == 19:
                start = rss_mib()
        growth[cache] = rss_mib() - start
        del model
    assert growth[served] < 48, growth
    assert growth[None] > 150, growth  # the check can see what it guards against
