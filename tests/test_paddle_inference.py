"""The Paddle Inference baseline (``perf/paddle_inference.py``) computes what spinrec computes.

A small SPIN with random weights, made input-sensitive (batch-norm statistics from rendered words, decoder
weights on the features scaled up, as ``perf.untrained.make_test_checkpoint`` does at the published size), is saved
with ``spinrec.weights.save``, exported through the Paddle reference with ``paddle.jit.to_static`` +
``paddle.jit.save`` and run by the PaddleOCR-style oneDNN predictor, on inputs the model was not calibrated
on (other rendered words and uniform noise, batches of 1, 5 and 2). Probabilities ``[N, 26, 70]``:

- vs the same reference run in Paddle dygraph: within ``TOL_REFERENCE`` = 2e-5 absolute (measured <= 4e-6
  over 4 seeds): export and predictor settings change nothing but rounding;
- vs spinrec's PyTorch model: within ``TOL_PYTORCH`` = 1e-3 absolute, and the same texts. Not 1e-4: the
  dygraph reference itself is 0.8e-4 to 1.6e-3 from PyTorch on this model (4 seeds). The gap starts in the
  GA-SPIN transform (relative difference ~4e-5 on the rectified image, the fp32 TPS-grid rounding times image
  gradients that ``tests/test_paddle_fidelity.py::test_rectified_image_same_input`` measures) and grows
  through the scaled-up decoder.

Needs ``paddlepaddle``; skipped otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("paddle", reason="paddlepaddle is not installed (pip install paddlepaddle==3.3.1)")
import torch  # noqa: E402
from conftest import render_word  # noqa: E402

from perf import paddle_inference  # noqa: E402
from spinrec import weights  # noqa: E402
from spinrec.decoding import decode  # noqa: E402
from spinrec.models.spin import SPIN, SPINConfig  # noqa: E402
from spinrec.preprocess import preprocess_batch  # noqa: E402

TOL_REFERENCE = 2e-5
TOL_PYTORCH = 1e-3
# Re-chosen when the Paddle reference was re-derived from upstream source (its parameter order, hence the random
# model, changed): seed 1 then put one image at a near-tie (top-2 gap 1.1e-5) and seeds 2 and 4 read every input alike.
SEED = 3
WORDS = (("paddle", ".png"), ("inference", ".jpg"), ("x7", ".png"), ("proxy", ".jpg"), ("Batch-9", ".png"))
SMALL = SPINConfig(backbone_out_channels=32, neck_hidden_size=32, neck_out_channels=(32, 512), head_hidden_size=32)


def _input_sensitive(model: SPIN, images: list[bytes]) -> SPIN:
    """Random init reads every image alike; calibrate the batch norms on ``images`` and amplify the decoder."""
    batch, _ = preprocess_batch(images)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        features = model.encode(torch.from_numpy(batch))
        model.eval()
        head = model.head
        head.attention_cell.rnn.weight_ih[:, : features.shape[2]] /= features.std(0).mean()
        head.attention_cell.rnn.weight_hh.mul_(0.1)
        head.generator.weight.mul_(10)
        head.generator.bias.zero_()
    return model


@pytest.fixture(scope="module")
def small(tmp_path_factory, word_images):
    """(PyTorch model, the Paddle reference in dygraph with the same weights, the exported Paddle Inference recognizer)."""
    import paddle

    torch.manual_seed(SEED)
    model = _input_sensitive(SPIN(SMALL), word_images)
    path = tmp_path_factory.mktemp("paddle_inference") / "small.safetensors"
    weights.save(model, path)
    model = weights.load(path)
    reference = paddle_inference._spin_paddle().SPINPaddle(**paddle_inference.reference_kwargs(model.config))
    reference.set_state_dict({k: paddle.to_tensor(v) for k, v in weights.to_paddle(model).items()})
    reference.eval()
    return model, reference, paddle_inference.load(path, threads=1)


def _inputs() -> list[np.ndarray]:
    """Batches of 1, 5 and 2 (the predictor reshapes between calls): rendered words the model was not
    calibrated on, and uniform noise."""
    words, errors = preprocess_batch([render_word(w, fmt) for w, fmt in WORDS])
    assert not any(errors)
    noise = np.random.RandomState(5).uniform(-1, 1, (2, 1, 32, 100)).astype(np.float32)
    return [words[:1], np.concatenate([words[1:], noise[:1]]), noise]


def test_export_matches_the_paddle_reference(small):
    """to_static + jit.save + the oneDNN predictor (fusion passes, no placement pass) compute what the
    reference computes in dygraph: within TOL_REFERENCE."""
    import paddle

    _, reference, recognizer = small
    for batch in _inputs():
        got = recognizer.predictor(batch)
        with paddle.no_grad():
            ref = reference(paddle.to_tensor(batch)).numpy()
        err = float(np.abs(got - ref).max())
        print(f"batch {len(batch)}: Paddle Inference vs Paddle dygraph, max abs difference {err:.2e} (tolerance {TOL_REFERENCE:.0e})")
        assert got.shape == (len(batch), 26, 70)
        assert err <= TOL_REFERENCE


def test_probabilities_and_texts_match_pytorch(small):
    """Against spinrec's PyTorch model: probabilities within TOL_PYTORCH, the same texts."""
    model, _, recognizer = small
    readings = set()
    for batch in _inputs():
        got = recognizer.predictor(batch)
        with torch.no_grad():
            ref = model(torch.from_numpy(batch)).numpy()
        err = float(np.abs(got - ref).max())
        top2 = np.sort(ref, axis=-1)[..., -2:]
        margin = float((top2[..., 1] - top2[..., 0]).min())
        print(f"batch {len(batch)}: Paddle Inference vs PyTorch, max abs difference {err:.2e} (tolerance {TOL_PYTORCH:.0e}); smallest top-2 gap {margin:.1e}")
        assert err <= TOL_PYTORCH
        assert margin > 2 * err, "top-2 gap within twice the difference: the argmax could flip, change SEED"
        texts = [r.text for r in decode(got, stop_at_eos=False)]
        assert texts == [r.text for r in decode(ref, stop_at_eos=False)]
        readings.update(texts)
    assert len(readings) > 1, "every input reads alike: the text comparison would be vacuous"


def test_recognizer_and_agreement(small):
    """bytes -> texts through the recognizer equals PyTorch's reading of the same bytes; ``agreement`` reports
    the probability difference and the equal texts."""
    model, _, recognizer = small
    payloads = [render_word(w, fmt) for w, fmt in WORDS]
    batch = recognizer.preprocess(payloads)
    with torch.no_grad():
        ref = model(torch.from_numpy(batch)).numpy()
    assert recognizer(payloads) == [r.text for r in decode(ref, stop_at_eos=False)]
    record = paddle_inference.agreement(recognizer, model, batch)
    assert record["max_abs_diff_probs"] == pytest.approx(float(np.abs(recognizer.predictor(batch) - ref).max()), abs=1e-7)
    assert record["texts_equal"] == record["texts_total"] == len(WORDS)


def test_unsupported_config_is_refused():
    with pytest.raises(ValueError, match=r"offsets=False .*stn=False"):
        paddle_inference.reference_kwargs(SPINConfig(stn=False, offsets=False))
    assert paddle_inference.reference_kwargs(SMALL)["backbone_out"] == 32
