"""The perf harness's request data and report parsing (perf/), and one short real perf_analyzer run.

The input-data check matters because perf_analyzer sends a ``b64`` payload as the tensor's raw bytes:
for BYTES that must be Triton's serialized form, which tritonclient's own functions define.
"""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from perf import analyzer, data
from spinrec import contract

PAYLOADS = [b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3, b"\xff\xd8\xff\xe0JFIF\x00" + b"\x00" * 70000, b"", b"x"]


def tritonclient_wire(values: list[bytes]) -> bytes:
    """What tritonclient puts on the wire for a BYTES tensor (a 0-d object array holding the buffer)."""
    return serialize_byte_tensor(np.array(values, dtype=np.object_)).item()


def test_element_prefix_is_tritonclients_serialization():
    for p in PAYLOADS:
        assert data.serialize_element(p) == tritonclient_wire([p])
        assert data.serialize_element(p)[:4] == struct.pack("<I", len(p))
    assert data.serialize_elements(PAYLOADS) == tritonclient_wire(PAYLOADS)


def test_prefix_round_trips_through_tritonclients_deserializer():
    got = deserialize_bytes_tensor(data.serialize_elements(PAYLOADS))
    assert [bytes(g) for g in got] == PAYLOADS
    assert data.deserialize_elements(tritonclient_wire(PAYLOADS)) == PAYLOADS


def test_truncated_buffer_is_refused():
    wire = data.serialize_element(PAYLOADS[0])
    with pytest.raises(ValueError, match="claims"):
        data.deserialize_elements(wire[:-1])
    with pytest.raises(ValueError, match="truncated length prefix"):
        data.deserialize_elements(wire + b"\x01\x00")


def test_input_data_document(tmp_path):
    doc = data.input_data(PAYLOADS)
    path = data.write_input_data(tmp_path / "in.json", doc)
    loaded = json.loads(path.read_text())
    assert len(loaded["data"]) == len(PAYLOADS)
    for entry, p in zip(loaded["data"], PAYLOADS):
        tensor = entry[contract.IMAGE]
        assert tensor["shape"] == [1]  # per request, without the batch dimension
        raw = base64.b64decode(tensor["content"]["b64"])
        assert raw == tritonclient_wire([p])
        assert [bytes(x) for x in deserialize_bytes_tensor(raw)] == [p]
    assert data.payloads_from_input_data(loaded) == PAYLOADS
    with pytest.raises(ValueError):
        data.input_data([])


def test_tensor_input_data_is_raw_little_endian():
    a = np.arange(2 * 3, dtype=np.float32).reshape(1, 2, 3)
    entry = data.tensor_input_data([a], "image")["data"][0]["image"]
    assert entry["shape"] == [1, 2, 3]
    assert np.array_equal(np.frombuffer(base64.b64decode(entry["content"]["b64"]), "<f4").reshape(1, 2, 3), a)


def test_rendered_samples_are_png_and_jpeg_the_preprocessor_reads():
    from spinrec.preprocess import preprocess_batch
    from spinrec.training.synth import SynthError

    try:
        samples = data.render_samples(6, seed=3, progress=False)
    except SynthError as e:
        pytest.skip(f"no fonts to render with: {e}")
    assert [s.fmt for s in samples] == ["png", "jpeg"] * 3
    assert all(s.data.startswith(b"\x89PNG") for s in samples[::2])
    assert all(s.data.startswith(b"\xff\xd8") for s in samples[1::2])
    assert len({(s.height, s.width) for s in samples}) > 1  # varied sizes
    batch, errors = preprocess_batch([s.data for s in samples])
    assert errors == [None] * 6 and batch.shape == (6, 1, 32, 100)
    assert data.render_samples(2, seed=3, progress=False)[1].data == samples[1].data  # deterministic


# A console report of perf_analyzer 2.51 for the spin_ocr ensemble (trimmed to one level).
REPORT = """Request concurrency: 2
  Client: 
    Request count: 122
    Throughput: 2.76368 infer/sec
  Server: 
    Inference count: 122

  Composing models: 
  spin_decoder, version: 1
      Inference count: 122
      Execution count: 61
      Successful request count: 122
      Avg request latency: 72370 usec (overhead 6 usec + queue 2697 usec + compute input 40 usec + compute infer 68869 usec + compute output 756 usec)

  spin_encoder, version: 1
      Inference count: 122
      Execution count: 122
      Successful request count: 122
      Avg request latency: 645045 usec (overhead 4 usec + queue 282704 usec + compute input 27 usec + compute infer 362010 usec + compute output 298 usec)

Inferences/Second vs. Client Average Batch Latency
"""
CSV = """Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,Avg latency,request/response,response wait
2,2.76368,10,291506,2,110,432580,1138,5,714431,848130,896120,983590,725354,15,725299
"""


def test_parse_composing_models_breakdown():
    got = analyzer.parse_composing(REPORT)
    assert set(got) == {2.0}
    dec, enc = got[2.0]["spin_decoder"], got[2.0]["spin_encoder"]
    assert dec["mean_batch_size"] == 2.0 and dec["compute_infer_ms"] == pytest.approx(68.869)
    assert enc["queue_ms"] == pytest.approx(282.704) and enc["latency_ms"] == pytest.approx(645.045)


def test_parse_csv_row():
    (row,) = analyzer.parse_csv(CSV)
    assert float(row["Inferences/Second"]) == pytest.approx(2.76368)
    assert float(row["p99 latency"]) == 983590


def test_stats_delta_counts_failures_and_batch_size():
    before = {"m": {"inference_count": 10, "execution_count": 5, "success": 10, "fail": 0, "queue_ns": 0, "compute_input_ns": 0, "compute_infer_ns": 0, "compute_output_ns": 0}}
    after = {"m": {"inference_count": 30, "execution_count": 10, "success": 28, "fail": 2, "queue_ns": 18_000_000, "compute_input_ns": 0, "compute_infer_ns": 36_000_000, "compute_output_ns": 0}}
    d = analyzer.stats_delta(before, after)["m"]
    assert d["requests_failed"] == 2 and d["requests_ok"] == 18
    assert d["mean_batch_size"] == 4.0 and d["queue_ms"] == pytest.approx(1.0) and d["compute_infer_ms"] == pytest.approx(2.0)


# ------------------------------------------------------------------------------- real perf_analyzer


@pytest.fixture(scope="module")
def perf_analyzer_binary():
    try:
        binary = analyzer.find_perf_analyzer()
        analyzer.check_runs(binary)
    except analyzer.AnalyzerError as e:
        pytest.skip(str(e))
    return binary


@pytest.mark.slow
def test_short_perf_analyzer_run_against_the_server(perf_analyzer_binary, triton_server, word_images, tmp_path):
    """A few requests of our input data through the real ensemble: all succeed (so the server decoded
    every image, i.e. the prefix is right), and the report yields latencies and the per-model breakdown."""
    path = data.write_input_data(tmp_path / "in.json", data.input_data(word_images[:4]))
    level = analyzer.run_level(
        perf_analyzer_binary, "spin_ocr", "grpc", triton_server.grpc_url, triton_server.http_url, path,
        "concurrency", 1, tmp_path, request_count=4, max_trials=3, stability=999, timeout_s=180,
        memory_port=int(triton_server.http_url.rsplit(":", 1)[1]),
    )
    assert level.error is None, (tmp_path / "spin_ocr_grpc_concurrency_1.log").read_text()[-2000:]
    assert level.ok and level.requests_failed == 0
    assert level.throughput > 0 and 0 < level.p50_ms <= level.p99_ms
    assert set(level.composing) == {"spin_preprocess", "spin_encoder", "spin_decoder"}
    assert level.server_stats["spin_ocr"]["requests_ok"] >= 4
    assert level.memory and level.memory["total_rss_mib"] > 0
    assert any(p["name"].startswith("stub:spin_encoder") for p in level.memory["processes"])


@pytest.mark.slow
def test_unprefixed_bytes_are_counted_as_failures(perf_analyzer_binary, triton_server, word_images, tmp_path):
    """The harness must notice broken input data: raw image bytes without the length prefix."""
    doc = {"data": [{"IMAGE": {"content": {"b64": base64.b64encode(word_images[0]).decode()}, "shape": [1]}}]}
    path = data.write_input_data(tmp_path / "bad.json", doc)
    level = analyzer.run_level(
        perf_analyzer_binary, "spin_ocr", "grpc", triton_server.grpc_url, triton_server.http_url, path,
        "concurrency", 1, tmp_path, request_count=4, max_trials=3, stability=999, timeout_s=120,
    )
    assert not level.ok
    assert level.error is not None or level.requests_failed > 0


def test_mac_count_of_the_published_model_matches_the_reference():
    """The FLOP-count limit rests on this count: hooks on a real forward pass of the published
    configuration must land on spin-model.md's figures (5.21 G MACs per image)."""
    from perf.flops import model_macs
    from spinrec.models import spin_r32

    counts = model_macs(spin_r32().eval())
    rel = counts["relative_difference_to_reference"]
    for part in ("transform", "backbone", "neck"):
        assert abs(rel[part]) < 0.005, (part, rel[part], counts["parts_mac"])
    # The decoder projects the features (i2h) once instead of at each of the 26 steps: fewer MACs.
    assert -0.1 < rel["head"] < 0
