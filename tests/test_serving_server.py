"""End to end through a real tritonserver (HTTP and gRPC): the ``spin_ocr`` ensemble against the
in-process PyTorch reference, batching, per-request failures, metadata and configs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException


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


def infer(server, protocol: str, images: list[bytes], char_probs: bool = False):
    """One request carrying ``images``: ``(texts, confidences, char_probs or None)``; raises the server's error."""
    api = _api(protocol)
    data = np.empty((len(images), 1), dtype=object)
    data[:, 0] = images
    request = api.InferInput("IMAGE", list(data.shape), "BYTES")
    request.set_data_from_numpy(data)
    names = ["TEXT", "CONFIDENCE"] + (["CHAR_PROBS"] if char_probs else [])
    with server.client(protocol) as client:
        result = client.infer("spin_ocr", [request], outputs=[api.InferRequestedOutput(n) for n in names])
    texts = [t.decode("utf-8") for t in result.as_numpy("TEXT").reshape(-1)]
    probs = result.as_numpy("CHAR_PROBS") if char_probs else None
    return texts, result.as_numpy("CONFIDENCE").reshape(-1), probs


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
def test_bad_image_fails_only_its_request(triton_server, protocol, kind, bad_images, word_images, expected):
    # The bad request travels among good ones, so the server batches it with them.
    requests = [[image] for image in word_images[:6]]
    requests.insert(3, [bad_images[kind]])
    outcomes = concurrently(lambda images: infer(triton_server, protocol, images), [(r,) for r in requests])

    error = outcomes.pop(3)
    assert isinstance(error, InferenceServerException), f"{kind} image was accepted"
    assert BAD_REASONS[kind] in error.message() and "IMAGE[0]" in error.message()
    assert [o[0][0] for o in outcomes] == [r.text for r in expected[:6]]
    assert triton_server.ready()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_image_inside_a_batched_request_is_named(triton_server, protocol, bad_images, word_images, expected):
    with pytest.raises(InferenceServerException) as err:
        infer(triton_server, protocol, [word_images[0], bad_images["not_an_image"], word_images[1]])
    assert "IMAGE[1]" in err.value.message() and BAD_REASONS["not_an_image"] in err.value.message()
    assert "IMAGE[0]" not in err.value.message() and "IMAGE[2]" not in err.value.message()
    texts, _, _ = infer(triton_server, protocol, word_images[:2])
    assert texts == [r.text for r in expected[:2]]
    assert triton_server.ready()


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
