"""Checkpoints: safetensors round trip, PaddleOCR conversion both ways, and refusal messages."""

import numpy as np
import pytest
import torch

from spinrec import weights
from spinrec.models import SPIN, SPINConfig

SMALL = SPINConfig(backbone_out_channels=64, neck_hidden_size=32, neck_out_channels=(32, 64), head_hidden_size=32)


def _randomised(config=SMALL, seed=0) -> SPIN:
    """A model with every parameter and norm statistic random, as the judge's checkpoints are."""
    torch.manual_seed(seed)
    model = SPIN(config).eval()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            elif t.is_floating_point():
                t.normal_(0, 0.1)
    return model


def _paddle_checkpoint(model, path):
    weights.write_pdparams(weights.to_paddle(model), path)
    return path


def test_paddle_key_set_and_layouts():
    arrays = weights.to_paddle(_randomised(SPINConfig()))
    keys = set(arrays)
    # Paddle's state dict has 255 entries: 239 tensors plus 16 per-cell aliases of the neck LSTM weights.
    assert len(keys) == 255 and len([k for k in keys if ".cell_" in k]) == 16
    assert arrays["head.generator.weight"].shape == (256, 70)  # Linear: [in, out]
    assert arrays["transform.stucture_fc2.weight"].shape == (256, 54)
    assert arrays["neck.encoder.encoder.0.rnn.weight_ih_l0"].shape == (1024, 512)
    assert "transform.sp_net.bn.scale" in keys and "backbone.ConvNet.bn0_1._variance" in keys
    assert not any(k.endswith("num_batches_tracked") or "running_" in k for k in keys)


def test_paddle_conversion_roundtrip(tmp_path):
    model = _randomised()
    path = _paddle_checkpoint(model, tmp_path / "best_accuracy.pdparams")
    converted = weights.from_paddle(weights.read_pdparams(path), SMALL)
    for k, v in model.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            torch.testing.assert_close(converted.state_dict()[k], v, rtol=0, atol=0)
    x = torch.rand(2, 1, 32, 100) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), rtol=0, atol=0)
    # and back: the arrays PaddleOCR would load are the ones it wrote
    again = weights.to_paddle(converted)
    original = weights.read_pdparams(path)
    assert set(again) == set(original)
    for k in original:
        np.testing.assert_array_equal(again[k], original[k])


def test_square_linear_weights_are_transposed():
    model = _randomised()
    arrays = weights.to_paddle(model)
    h2h = model.head.attention_cell.h2h.weight.detach().numpy()
    np.testing.assert_array_equal(arrays["head.attention_cell.h2h.weight"], h2h.T)


def test_cell_aliases_are_a_fallback():
    model = _randomised()
    arrays = weights.to_paddle(model)
    flat = "neck.encoder.encoder.1.rnn.weight_hh_l0_reverse"
    alias = arrays.pop(flat)
    assert np.array_equal(arrays["neck.encoder.encoder.1.rnn.0.cell_bw.weight_hh"], alias)
    converted = weights.from_paddle(arrays, SMALL)
    torch.testing.assert_close(converted.neck.encoder.encoder[1].rnn.weight_hh_l0_reverse, torch.from_numpy(alias))


def test_refuses_an_alias_that_disagrees_with_its_flat_copy():
    """Paddle writes each neck LSTM tensor under two names; if the two differ, the file is not what
    PaddleOCR saved and either choice could be wrong: refused, naming both keys (values or shape)."""
    arrays = weights.to_paddle(_randomised())
    cell = "neck.encoder.encoder.0.rnn.0.cell_fw.bias_ih"
    arrays[cell] = arrays[cell].copy()
    arrays[cell][3] += 1e-3
    with pytest.raises(
        weights.CheckpointError,
        match=r"disagreeing alias 1: neck\.encoder\.encoder\.0\.rnn\.0\.cell_fw\.bias_ih != neck\.encoder\.encoder\.0\.rnn\.bias_ih_l0$",
    ):
        weights.from_paddle(arrays, SMALL)
    arrays = weights.to_paddle(_randomised())
    arrays["neck.encoder.encoder.1.rnn.0.cell_bw.weight_hh"] = np.zeros((4, 4), np.float32)
    with pytest.raises(weights.CheckpointError, match=r"disagreeing alias 1: neck\.encoder\.encoder\.1\.rnn\.0\.cell_bw\.weight_hh"):
        weights.from_paddle(arrays, SMALL)


def test_refuses_missing_unexpected_and_misshapen():
    arrays = weights.to_paddle(_randomised())
    del arrays["head.generator.bias"]
    arrays["head.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(weights.CheckpointError, match=r"missing 1: head\.generator\.bias.*unexpected 1: head\.extra\.weight"):
        weights.from_paddle(arrays, SMALL)
    arrays = weights.to_paddle(_randomised())
    arrays["backbone.ConvNet.conv0_1.weight"] = np.zeros((5, 1, 3, 3), np.float32)
    with pytest.raises(weights.CheckpointError, match=r"wrong shape 1: backbone\.ConvNet\.conv0_1\.weight"):
        weights.from_paddle(arrays, SMALL)
    # the published configuration does not accept a small model's checkpoint
    with pytest.raises(weights.CheckpointError, match="wrong shape"):
        weights.from_paddle(weights.to_paddle(_randomised()))


def test_refuses_pickles_that_run_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(weights.CheckpointError, match="refusing to unpickle builtins.print"):
        weights.read_pdparams(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(weights.CheckpointError, match="not a readable"):
        weights.read_pdparams(path)


@pytest.mark.parametrize("half", [False, True])
def test_safetensors_roundtrip(tmp_path, half):
    model = _randomised()
    path = tmp_path / "m.safetensors"
    weights.save(model, path, {"note": "test"}, half=half)
    loaded = weights.load(path)
    assert loaded.config == SMALL and weights.read_metadata(path)["note"] == "test"
    for k, v in model.state_dict().items():
        expected = v.half().float() if half and v.is_floating_point() else v
        torch.testing.assert_close(loaded.state_dict()[k], expected, rtol=0, atol=0)
