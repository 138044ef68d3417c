"""End to end through a real tritonserver (HTTP and gRPC): the ``spin_ocr`` ensemble against the
in-process PyTorch reference, batching, per-image errors and flags, whole-request failures, custom
metrics, metadata and configs."""

from __future__ import annotations

import re
import socket
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from spinrec_client.ocr import image_input
from spinrec.serving.launch import free_port

PROTOCOLS = ("http", "grpc")
# ONNX Runtime (server) vs PyTorch (reference) encoders, and different batch compositions, move
# probabilities by ~1e-6; texts must be identical.
CONF_TOL = 1e-4
BAD_REASONS = {
    "corrupt": "corrupt or truncated PNG",
    "empty": "empty image",
    "not_an_image": "not a recognised image",
    "oversized": "image too large",
}


def _api(protocol):
    if protocol == "http":
        import tritonclient.http as api
    else:
        import tritonclient.grpc as api
    return api


def infer(server, protocol: str, images: list[bytes], char_probs: bool = False, outcomes: bool = False, request_id: str = ""):
    """One request carrying ``images``: ``(texts, confidences, char_probs or None)``, plus the per-image
    ``(errors, flags)`` (None where empty) with ``outcomes``; raises the server's error."""
    api = _api(protocol)
    request = image_input(api, images)
    names = ["TEXT", "CONFIDENCE"] + (["CHAR_PROBS"] if char_probs else []) + (["ERROR", "FLAG"] if outcomes else [])
    with server.client(protocol) as client:
        result = client.infer("spin_ocr", [request], outputs=[api.InferRequestedOutput(n) for n in names], request_id=request_id)
    texts = [t.decode("utf-8") for t in result.as_numpy("TEXT").reshape(-1)]
    probs = result.as_numpy("CHAR_PROBS") if char_probs else None
    answer = (texts, result.as_numpy("CONFIDENCE").reshape(-1), probs)
    if outcomes:
        errors, flags = ([v.decode("utf-8") or None for v in result.as_numpy(n).reshape(-1)] for n in ("ERROR", "FLAG"))
        answer += (errors, flags)
    return answer


def concurrently(fn, args_list, workers: int = 8):
    """``fn(*args)`` for each args, from ``workers`` threads; results (or the exception raised) in order."""

    def call(args):
        try:
            return fn(*args)
        except InferenceServerException as e:
            return e

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(call, args_list))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ensemble_matches_pytorch_reference(triton_server, protocol, word_images, expected):
    texts, confidences, char_probs = infer(triton_server, protocol, word_images, char_probs=True)
    assert texts == [r.text for r in expected]
    np.testing.assert_allclose(confidences, [r.confidence for r in expected], rtol=0, atol=CONF_TOL)
    assert char_probs.shape == (len(word_images), max(1, max(len(t) for t in texts)))
    for row, r in zip(char_probs, expected):
        np.testing.assert_allclose(row[: len(r.text)], r.char_probs, rtol=0, atol=CONF_TOL)
        assert not row[len(r.text) :].any(), "padding after the text must be zero"


def _encoder_counts(server):
    with server.client() as client:
        stats = client.get_inference_statistics("spin_encoder")["model_stats"][0]
    return stats["inference_count"], stats["execution_count"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_single_batched_and_concurrent_requests_agree(triton_server, protocol, word_images, expected):
    batched = infer(triton_server, protocol, word_images)
    single = [infer(triton_server, protocol, [image]) for image in word_images[:4]]
    before = _encoder_counts(triton_server)
    concurrent = concurrently(lambda image: infer(triton_server, protocol, [image]), [(i,) for i in word_images])
    inferences, executions = (a - b for a, b in zip(_encoder_counts(triton_server), before))

    want = [r.text for r in expected]
    assert batched[0] == want
    assert [s[0][0] for s in single] == want[:4]
    assert [c[0][0] for c in concurrent] == want
    np.testing.assert_allclose([s[1][0] for s in single], batched[1][:4], rtol=0, atol=CONF_TOL)
    np.testing.assert_allclose([c[1][0] for c in concurrent], batched[1], rtol=0, atol=CONF_TOL)
    assert inferences == len(word_images)
    assert executions < inferences, "concurrent one-image requests were never merged by the dynamic batcher"


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", sorted(BAD_REASONS))
def test_bad_image_request_gets_its_error_among_good_ones(triton_server, protocol, kind, bad_images, word_images, expected):
    # The bad request travels among good ones, so the server batches it with them.
    requests = [[image] for image in word_images[:6]]
    requests.insert(3, [bad_images[kind]])
    outcomes = concurrently(lambda images: infer(triton_server, protocol, images, outcomes=True), [(r,) for r in requests])

    texts, confidences, _, errors, flags = outcomes.pop(3)
    assert BAD_REASONS[kind] in errors[0] and flags == [None]
    assert texts == [""] and confidences.tolist() == [0.0], "a refused image must not read as text"
    assert [o[0][0] for o in outcomes] == [r.text for r in expected[:6]]
    assert all(o[3] == [None] for o in outcomes)
    assert triton_server.ready()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mixed_batch_returns_every_outcome_in_one_response(triton_server, protocol, bad_images, word_images, expected):
    kinds = sorted(BAD_REASONS)
    images = list(word_images[:4])
    for j, kind in enumerate(kinds):
        images.insert(2 * j + 1, bad_images[kind])
    bad_rows = {2 * j + 1: kind for j, kind in enumerate(kinds)}
    texts, confidences, char_probs, errors, flags = infer(triton_server, protocol, images, char_probs=True, outcomes=True)

    good = [i for i in range(len(images)) if i not in bad_rows]
    assert [texts[i] for i in good] == [r.text for r in expected[:4]]
    np.testing.assert_allclose([confidences[i] for i in good], [r.confidence for r in expected[:4]], rtol=0, atol=CONF_TOL)
    assert all(errors[i] is None and flags[i] is None for i in good)
    for i, kind in bad_rows.items():
        assert BAD_REASONS[kind] in errors[i], (kind, errors[i])
        assert texts[i] == "" and confidences[i] == 0 and not char_probs[i].any()


@pytest.mark.parametrize("output", ["ERROR", "FLAG", "TEXT"])
def test_any_one_output_can_be_asked_for_alone(triton_server, output, bad_images, word_images, expected):
    api = _api("http")
    request = _request(api, np.array([[word_images[0]], [bad_images["empty"]]], dtype=object), "BYTES")
    with triton_server.client() as client:
        values = client.infer("spin_ocr", [request], outputs=[api.InferRequestedOutput(output)]).as_numpy(output).reshape(-1)
    want = {"ERROR": [b"", b"empty image: 0 bytes"], "FLAG": [b"", b""], "TEXT": [expected[0].text.encode(), b""]}
    assert values.tolist() == want[output]


def _request(api, data: np.ndarray, dtype: str, name: str = "IMAGE"):
    request = api.InferInput(name, list(data.shape), dtype)
    request.set_data_from_numpy(data)
    return request


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_request_malformed_as_a_whole_gets_tritons_error(triton_server, protocol, word_images):
    api = _api(protocol)
    too_many = np.array([[word_images[0]]] * 65, dtype=object)
    malformed = {
        "batch above max_batch_size": ([_request(api, too_many, "BYTES")], "batch-size must be <= 64"),
        "wrong datatype": ([_request(api, np.zeros((1, 1), np.float32), "FP32")], "data-type|datatype"),
        "wrong input name": ([_request(api, too_many[:1], "BYTES", "PIXELS")], "unexpected inference input .PIXELS."),
        "wrong shape": ([_request(api, np.array([[word_images[0]] * 2], dtype=object), "BYTES")], "shape"),
    }
    with triton_server.client(protocol) as client:
        for what, (inputs, message) in malformed.items():
            with pytest.raises(InferenceServerException, match=message):
                client.infer("spin_ocr", inputs)
    assert triton_server.ready()


def _degenerate_images() -> dict[str, bytes]:
    rng = np.random.default_rng(0)

    def png(array):
        return cv2.imencode(".png", array)[1].tobytes()

    return {
        "tiny": png(np.zeros((1, 1), np.uint8)),
        "aspect_ratio": png(rng.integers(0, 256, (20, 2000), dtype=np.uint8)),
        "blank": png(np.full((40, 120), 200, np.uint8)),
    }


def scrape(server) -> dict[tuple[str, frozenset], float]:
    """Triton's metrics endpoint (Prometheus text format): ``{(name, {(label, value)}): value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=30) as response:
        text = response.read().decode()
    samples = {}
    for m in re.finditer(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", text, re.M):
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m[2] or ""))
        samples[(m[1], labels)] = float(m[3])
    return samples


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_degenerate_images_are_flagged_and_counted(triton_server, protocol, word_images, bad_images):
    from spinrec.contract import FLAGGED_METRIC, REJECTED_METRIC

    degenerate = _degenerate_images()
    before = scrape(triton_server)
    images = [word_images[0], *degenerate.values(), bad_images["empty"], bad_images["oversized"], bad_images["empty"]]
    texts, _, _, errors, flags = infer(triton_server, protocol, images, outcomes=True, request_id=f"degenerate-{protocol}")
    after = scrape(triton_server)

    assert flags[0] is None and errors[0] is None
    for i, kind in enumerate(degenerate, start=1):
        assert flags[i].startswith(f"{kind}: ") and errors[i] is None
    assert errors[4:] == [errors[4], errors[5], errors[4]] and all(errors[4:])

    def delta(metric, **labels):
        key = (metric, frozenset({"model": "spin_preprocess", **labels}.items()))
        return after[key] - before[key]  # every reason and flag is exported from the start, at 0

    assert {k: delta(FLAGGED_METRIC, flag=k) for k in degenerate} == {k: 1 for k in degenerate}
    assert delta(REJECTED_METRIC, reason="empty") == 2 and delta(REJECTED_METRIC, reason="too_many_pixels") == 1
    assert delta(REJECTED_METRIC, reason="corrupt") == 0
    # Each rejection is logged once, with the request id (the stub's log reaches the file asynchronously).
    deadline = time.monotonic() + 10
    while len(logged := re.findall(rf"request degenerate-{protocol} IMAGE\[(\d)\] rejected \((\w+)\)", triton_server.log_tail(400))) < 3:
        assert time.monotonic() < deadline, triton_server.log_tail(20)
        time.sleep(0.2)
    assert logged == [("4", "empty"), ("5", "too_many_pixels"), ("6", "empty")]


def _metadata(server, protocol, model):
    with server.client(protocol) as client:
        if protocol == "http":
            return client.get_model_metadata(model), client.get_model_config(model)
        return client.get_model_metadata(model, as_json=True), client.get_model_config(model, as_json=True)["config"]


def _io(tensors):
    return {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in tensors}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metadata_and_configs_match_clients(triton_server, protocol):
    meta, config = _metadata(triton_server, protocol, "spin_ocr")
    assert _io(meta["inputs"]) == {"IMAGE": ("BYTES", [-1, 1])}
    assert _io(meta["outputs"]) == {
        "TEXT": ("BYTES", [-1, 1]),
        "CONFIDENCE": ("FP32", [-1, 1]),
        "CHAR_PROBS": ("FP32", [-1, -1]),
        "ERROR": ("BYTES", [-1, 1]),
        "FLAG": ("BYTES", [-1, 1]),
    }
    assert config["platform"] == "ensemble" and int(config["max_batch_size"]) == 64
    steps = [s["model_name"] for s in config["ensemble_scheduling"]["step"]]
    assert steps == ["spin_preprocess", "spin_encoder", "spin_decoder"]

    meta, config = _metadata(triton_server, protocol, "spin_encoder")
    assert _io(meta["inputs"]) == {"image": ("FP32", [-1, 1, 32, 100])}
    assert _io(meta["outputs"]) == {"features": ("FP32", [-1, 26, 512])}
    # On CPU the launcher selects configs/cpu.pbtxt: ONNX Runtime inside a Python model.
    assert config["backend"] == "python" and config["default_model_filename"] == "encoder_ort.py"

    for model in ("spin_preprocess", "spin_encoder", "spin_decoder"):
        _, config = _metadata(triton_server, protocol, model)
        assert int(config["max_batch_size"]) == 64
        assert "dynamic_batching" in config
        assert all(g["kind"] == "KIND_CPU" for g in config["instance_group"])


def test_the_log_says_which_encoder_runtime_and_precision_serve(triton_server):
    """The shipped config asks for int8; the tests' repository is built --no-int8, so fp32 serves, and says why."""
    assert "spin_encoder: encoder on openvino, precision fp32 (int8 configured, see the warning)" in triton_server.log.read_text()


def test_free_ports_picked_one_after_another_are_distinct_and_bindable():
    """The launcher's ports for HTTP, gRPC and metrics come from three calls; a repeat made tritonserver refuse
    to start ("cannot listen to GRPC requests and metrics requests at the same address and port")."""
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    held = []
    try:
        for port in ports[-3:]:
            held.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            held[-1].bind(("127.0.0.1", port))
    finally:
        for s in held:
            s.close()
