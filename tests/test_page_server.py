"""spin_page on the real tritonserver (the shipped default weights, fp32 encoder): a synthetic page reads as in
process, the served detector equals ONNX Runtime, a blank photograph is an empty answer, a huge or corrupt one is
refused with its reason, and ``spinrec-client --page`` prints, draws and exits as documented."""

from __future__ import annotations

import json
import time
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from conftest import png_header_only
from spinrec.contract import DETECTOR, DETECTOR_INPUT, DETECTOR_ONNX, DETECTOR_OUTPUT
from spinrec.page.detect import DetectorOptions, prepare
from test_page import PAGE_WORDS, synthetic_page

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def page_png() -> bytes:
    return cv2.imencode(".png", synthetic_page()[0])[1].tobytes()


@pytest.fixture(scope="module")
def client(default_server):
    from spinrec_client.page import PageClient

    with PageClient(default_server.grpc_url, "grpc") as c:
        yield c


def test_a_synthetic_page_reads_through_the_server_as_in_process(default_server, client, page_png):
    """The served answer is the in-process pipeline's on the same repository: the same words in the same order,
    corners within 1 pixel (OpenVINO's thread count may move a probability by a few ulps), texts identical."""
    from spinrec.page.read import PageReader, pipeline_recognizer
    from spinrec.pipeline import Pipeline
    from spinrec.runtime import open_encoder

    repository = default_server.repository
    local = PageReader(
        open_encoder("openvino", repository / DETECTOR_ONNX, 2, "fp32"),
        pipeline_recognizer(Pipeline.from_repository(repository, "openvino", threads=2, precision="fp32")),
    )(page_png)
    served = client.read(page_png)
    assert [w.text for w in served.words] == [w.text for w in local.words] == ["hello", "world", "triton", "server", "page"]
    np.testing.assert_allclose([w.quad for w in served.words], [w.quad for w in local.words], atol=1.0)
    np.testing.assert_allclose([w.confidence for w in served.words], [w.confidence for w in local.words], atol=1e-4)
    assert served.flag == "" and all(w.flag == "" for w in served.words)


def test_the_served_detector_equals_onnx_runtime(default_server):
    from spinrec.runtime import open_encoder

    pixels = prepare(synthetic_page()[0], DetectorOptions())
    request = grpcclient.InferInput(DETECTOR_INPUT, list(pixels.shape), "FP32")
    request.set_data_from_numpy(pixels)
    with grpcclient.InferenceServerClient(default_server.grpc_url) as c:
        served = c.infer(DETECTOR, [request]).as_numpy(DETECTOR_OUTPUT)
    reference = open_encoder("onnxruntime", default_server.repository / DETECTOR_ONNX, 2, "fp32")(pixels)
    assert served.shape == reference.shape == (1, 1, *pixels.shape[2:])
    assert np.abs(served - reference).max() < 2e-3


def test_a_blank_photograph_is_an_empty_answer(client):
    blank = cv2.imencode(".jpg", np.full((600, 800, 3), 180, np.uint8))[1].tobytes()
    page = client.read(blank)
    assert page.words == [] and page.flag == ""


@pytest.mark.parametrize(
    "data, reason",
    [
        (png_header_only(5000, 5000), "too_many_pixels"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "unrecognised"),
        (cv2.imencode(".jpg", np.full((400, 400, 3), 90, np.uint8))[1].tobytes()[:-300], "corrupt"),
        (b"", "empty"),
    ],
    ids=["huge", "not_an_image", "truncated_jpeg", "empty"],
)
def test_a_photograph_that_cannot_be_read_is_refused_with_the_reason(client, page_png, data, reason):
    from spinrec_client.page import PageError

    with pytest.raises(PageError, match=rf"image refused \({reason}\)"):
        client.read(data)
    assert len(client.read(page_png).words) == len(PAGE_WORDS)  # the server goes on


def test_the_client_reads_and_draws_a_photograph(default_server, page_png, tmp_path):
    photo = tmp_path / "page.png"
    photo.write_bytes(page_png)
    drawn = tmp_path / "drawn.png"
    cmd = [sys.executable, "-m", "spinrec_client", "--page", str(photo), "--json", "-i", "grpc", "-u", default_server.grpc_url, "--draw", str(drawn)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    answer = json.loads(line)
    assert answer["path"] == str(photo) and len(answer["words"]) == len(PAGE_WORDS)
    assert {"quad", "text", "confidence", "score"} <= set(answer["words"][0])
    picture = cv2.imread(str(drawn))
    original = cv2.imdecode(np.frombuffer(page_png, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape == original.shape and (np.abs(picture.astype(int) - original).sum(axis=2) > 60).mean() > 0.005  # boxes and labels drawn

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photograph")
    done = subprocess.run(cmd[:4] + [str(bad)] + cmd[6:10], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "ERROR: image refused (unrecognised)" in done.stderr


def test_recognize_page_in_process_agrees_with_the_client(default_server, page_png, tmp_path):
    """``spinrec recognize --page`` (PyTorch, the detector on ONNX Runtime) prints the client's lines: the same words,
    corners within 2 pixels, the same refusal message and exit status for a photograph that cannot be read."""
    photo, bad = tmp_path / "page.png", tmp_path / "bad.jpg"
    photo.write_bytes(page_png)
    bad.write_bytes(b"not a photograph")
    runs = {
        "client": [sys.executable, "-m", "spinrec_client", "--page", "-i", "grpc", "-u", default_server.grpc_url],
        "in_process": [sys.executable, "-m", "spinrec", "recognize", "--page"],
    }
    lines, errors = {}, {}
    for name, cmd in runs.items():
        done = subprocess.run(cmd + [str(photo), str(bad)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 1, done.stderr
        lines[name] = [line.split("\t") for line in done.stdout.splitlines()]
        errors[name] = [line for line in done.stderr.splitlines() if "\tERROR: " in line]
    assert [row[1] for row in lines["client"]] == [row[1] for row in lines["in_process"]] == ["hello", "world", "triton", "server", "page"]
    for a, b in zip(lines["client"], lines["in_process"]):
        ours, theirs = ([[float(v) for v in corner.split(",")] for corner in row[3].split()] for row in (a, b))
        assert np.abs(np.array(ours) - np.array(theirs)).max() <= 2
    assert errors["client"] == errors["in_process"] == [f"{bad}\tERROR: image refused (unrecognised): not a recognised image, or its header is truncated (16 bytes starting b'not a ph')"]


def test_hostile_photographs_are_refused_and_memory_comes_back(default_server, client, page_png):
    """Refused photographs (bombs, noise, truncated, over the pixel limit) and the largest legal ones at eight sizes,
    four at a time, twice: every bad one refused with its reason, and the server's memory (tritonserver + every stub,
    RSS) within 48 MiB + 5 % of where the first round left it (the detector's growth over ever new sizes is bounded by its
    kernel cache, tests/test_page.py)."""
    from concurrent.futures import ThreadPoolExecutor

    from perf.machine import server_memory
    from spinrec.preprocess import MAX_PIXELS
    from spinrec_client.page import PageClient, PageError

    rng = np.random.default_rng(1)

    def large(i: int) -> bytes:  # a smooth legal photograph near the pixel limit (a small file), with the page's words
        h, w = 3000 + 37 * i, 4000 - 53 * i
        assert h * w <= MAX_PIXELS
        gradient = np.linspace(60, 220, w, dtype=np.float32)[None, :, None].repeat(h, 0).repeat(3, 2).astype(np.uint8)
        gradient[500:1220, 500:1780] = synthetic_page()[0]
        return cv2.imencode(".jpg", gradient, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()

    def hostile(i: int) -> bytes:
        return [
            png_header_only(60_000, 60_000),
            rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
            page_png[: len(page_png) // 2],
            cv2.imencode(".png", np.zeros((4097, 4097), np.uint8))[1].tobytes(),
        ][i % 4]

    def read(data: bytes):
        with PageClient(default_server.grpc_url, "grpc") as c:
            try:
                return c.read(data)
            except PageError as e:
                return e

    def round_() -> list:
        batch = [large(i) if i % 3 == 0 else hostile(i) for i in range(24)]  # the same sizes every round
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(read, batch))

    port = int(default_server.http_url.rsplit(":", 1)[1])
    round_()
    baseline = server_memory(port)["total_rss_mib"]
    outcomes = round_()
    time.sleep(2)
    after = server_memory(port)["total_rss_mib"]
    read_ok = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [str(o) for o in outcomes if isinstance(o, Exception)]
    assert len(read_ok) == 8 and all([w.text for w in o.words] == [w for w, *_ in PAGE_WORDS] for o in read_ok)
    assert len(refused) == 16 and all(r.startswith("image refused (") for r in refused)
    margin = 48 + 0.05 * baseline
    print(f"\nserver RSS: {baseline:.0f} MiB after the first round, {after:.0f} MiB after the second (margin {margin:.0f} MiB)")
    assert after <= baseline + margin, f"RSS grew from {baseline:.0f} to {after:.0f} MiB"
    assert len(client.read(page_png).words) == len(PAGE_WORDS)
