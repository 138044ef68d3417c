"""The serving stages in process (no server): the built ONNX encoder + NumPy decoder against the
PyTorch reference, in both decoding modes, the CuPy decoder of the GPU config against the NumPy one
(GPU only), and the output packing the decoder model sends."""

from __future__ import annotations

import numpy as np
import pytest

from spinrec.contract import CHARSET, CHECKPOINT, ONNX
from spinrec.charset import Charset
from spinrec.decoding import Reading
from spinrec.preprocess import preprocess_batch
from spinrec.decoder import HeadDecoder
from spinrec.pipeline import Pipeline
from spinrec.runtime import SERVED, open_encoder
from spinrec.serving.stages import pack_readings

CONF_TOL = 1e-4


@pytest.fixture(scope="module", params=SERVED)
def encoder(request, built_repository):
    return open_encoder(request.param, built_repository / ONNX, threads=1)


@pytest.mark.parametrize("stop_at_eos", [True, False])
def test_stages_match_pytorch_reference(built_repository, encoder, reference, word_images, stop_at_eos):
    batch, errors = preprocess_batch(word_images)
    assert errors == [None] * len(word_images)
    charset = Charset.from_file(str(built_repository / CHARSET))
    decoder = HeadDecoder(built_repository / CHECKPOINT, charset, stop_at_eos)
    got = decoder(encoder(batch))
    want = Pipeline.open(reference.encoder.model, stop_at_eos=stop_at_eos).recognize(word_images)
    assert [r.text for r in got] == [r.text for r in want]
    np.testing.assert_allclose([r.confidence for r in got], [r.confidence for r in want], rtol=0, atol=CONF_TOL)


def test_encoder_is_batch_invariant(encoder, word_images):
    batch, _ = preprocess_batch(word_images)
    whole = encoder(batch)
    one_by_one = np.concatenate([encoder(batch[i : i + 1]) for i in range(len(batch))])
    np.testing.assert_allclose(one_by_one, whole, rtol=0, atol=1e-5)


def test_decoder_refuses_checkpoint_without_head(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "no_head.safetensors"
    save_file({"backbone.conv.weight": np.zeros((1, 1), np.float32)}, str(path))
    with pytest.raises(ValueError, match="head weights missing"):
        HeadDecoder(path)


def _gpu_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, or CUDA driver errors on a machine without a GPU
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_available(), reason="needs CuPy and a CUDA GPU (pip install -e .[gpu]; scripts/gpu_check.sh)")
def test_gpu_decoder_matches_numpy_on_dlpack_features(built_repository, word_images):
    """The CuPy decoder the GPU config runs, fed by DLPack as Triton hands GPU tensors over. (Features
    from ONNX Runtime: the encoder runtime does not matter here, and GPU images need not carry OpenVINO.)"""
    import cupy
    import torch

    batch, _ = preprocess_batch(word_images)
    features = open_encoder("onnxruntime", built_repository / ONNX, 1)(batch)
    on_gpu = torch.from_numpy(features).cuda()  # a device tensor from another framework, like TensorRT's output
    gpu = HeadDecoder(built_repository / CHECKPOINT, device="gpu")
    got = gpu(cupy.from_dlpack(on_gpu))
    want = HeadDecoder(built_repository / CHECKPOINT)(features)
    assert [r.text for r in got] == [r.text for r in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.char_probs, w.char_probs, rtol=0, atol=1e-5)


def test_decoder_device_is_checked(built_repository):
    with pytest.raises(ValueError, match="device must be cpu or gpu"):
        HeadDecoder(built_repository / CHECKPOINT, device="tpu")
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install cupy-cuda12x"):
            HeadDecoder(built_repository / CHECKPOINT, device="gpu")


def test_decoder_refuses_charset_of_other_size(built_repository):
    with pytest.raises(ValueError, match="charset has 5 classes"):
        HeadDecoder(built_repository / CHECKPOINT, Charset(("a", "b", "c")))


def test_pack_readings_pads_char_probs_with_zeros():
    readings = [
        Reading("ab", 0.5, np.array([0.4, 0.6], np.float32)),
        Reading("", 0.0, np.zeros(0, np.float32)),
        Reading("xyz", 0.2, np.array([0.1, 0.2, 0.3], np.float32)),
    ]
    text, confidence, probs = pack_readings(readings)
    assert text.shape == (3, 1) and [t[0].decode() for t in text] == ["ab", "", "xyz"]
    np.testing.assert_array_equal(confidence, np.float32([[0.5], [0.0], [0.2]]))
    np.testing.assert_array_equal(probs, np.float32([[0.4, 0.6, 0], [0, 0, 0], [0.1, 0.2, 0.3]]))
    _, _, empty = pack_readings([Reading("", 0.0, np.zeros(0, np.float32))])
    assert empty.shape == (1, 1) and not empty.any()


def test_bf16_encoder_is_an_explicit_openvino_option(built_repository, word_images):
    batch, _ = preprocess_batch(word_images)
    fp32 = open_encoder("openvino", built_repository / ONNX, 1)(batch)
    bf16 = open_encoder("openvino", built_repository / ONNX, 1, "bf16")(batch)
    assert bf16.shape == fp32.shape and bf16.dtype == np.float32
    # bf16 keeps 8 significant bits: features move by about a percent, not more (perf/README.md).
    assert np.linalg.norm(bf16 - fp32) <= 0.2 * np.linalg.norm(fp32)
    with pytest.raises(ValueError, match="needs runtime openvino"):
        open_encoder("onnxruntime", built_repository / ONNX, 1, "bf16")
    with pytest.raises(ValueError, match="encoder precision 'fp16'"):
        open_encoder("openvino", built_repository / ONNX, 1, "fp16")


@pytest.mark.parametrize("runtime", SERVED)
def test_pipeline_on_a_served_runtime_reads_as_the_pytorch_pipeline(built_repository, reference, word_images, bad_images, runtime):
    """One Pipeline class, two runtimes: the repository's graph + NumPy decoder read what PyTorch reads, and a
    bad image in the middle comes back as its own error without disturbing the others."""
    images = word_images[:3] + [next(iter(bad_images.values()))] + word_images[3:]
    got = Pipeline.from_repository(built_repository, runtime, threads=1, batch_size=4).recognize(images)
    want = reference.recognize(images)
    assert [type(r).__name__ for r in got] == [type(r).__name__ for r in want]
    assert isinstance(got[3], Exception) and str(got[3]) == str(want[3])
    assert [r.text for r in got if not isinstance(r, Exception)] == [r.text for r in want if not isinstance(r, Exception)]


def test_open_encoder_refuses_what_it_cannot_run(built_repository, tmp_path):
    with pytest.raises(ValueError, match="encoder runtime 'tpu': expected one of torch, onnxruntime, openvino, tensorrt"):
        open_encoder("tpu", built_repository / ONNX)
    with pytest.raises(ValueError, match="runs fp32, bf16"):
        open_encoder("torch", built_repository / CHECKPOINT, precision="int8")
    with pytest.raises(ValueError, match="eager bf16 encoder only"):
        open_encoder("torch", built_repository / CHECKPOINT, autocast_transform=False)
    with pytest.raises(ValueError, match="pass artifact="):
        Pipeline.open(built_repository / CHECKPOINT, "onnxruntime")
    with pytest.raises(FileNotFoundError, match="model repository not built"):
        Pipeline.from_repository(tmp_path, "openvino")
