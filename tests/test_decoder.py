"""The NumPy attention decoder against the PyTorch head, on fresh random weights and features."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from spinrec import weights
from spinrec.charset import EOS_INDEX
from spinrec.decoder import AttentionDecoder
from spinrec.models import SPINAttentionHead, SPINConfig, SPIN


def _head(seed, channels=64, hidden=32):
    torch.manual_seed(seed)
    head = SPINAttentionHead(channels, 70, hidden).eval()
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.3)
    return head


@pytest.mark.parametrize("seed,batch", [(0, 1), (1, 5), (2, 17)])
@pytest.mark.parametrize("stop_at_eos", [False, True])
def test_matches_torch_head(seed, batch, stop_at_eos):
    head = _head(seed)
    feats = torch.randn(batch, 26, 64)
    with torch.no_grad():
        ref = head(feats, stop_at_eos=stop_at_eos).numpy()
    got = AttentionDecoder({k: v.numpy() for k, v in head.state_dict().items()})(feats.numpy(), stop_at_eos)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-4)
    np.testing.assert_array_equal(got.argmax(-1), ref.argmax(-1))


@pytest.mark.parametrize("channels, hidden", [(512, 256), (512, 96)])  # the published head and the default model's
def test_matches_torch_head_at_served_sizes(channels, hidden):
    """The fused decoder (one product for both hidden-state terms, one tanh for all four LSTM gates) against
    the PyTorch head at the sizes that are served, over all 26 steps: float32 noise only, same argmax."""
    head = _head(7, channels, hidden)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.05)
        feats = torch.randn(16, 26, channels)
        ref = head(feats, stop_at_eos=False).numpy()
    got = AttentionDecoder({k: v.numpy() for k, v in head.state_dict().items()})(feats.numpy(), False)
    np.testing.assert_allclose(got, ref, atol=2e-6, rtol=1e-4)
    np.testing.assert_array_equal(got.argmax(-1), ref.argmax(-1))


def test_early_exit():
    head = _head(3)
    with torch.no_grad():
        head.generator.bias[EOS_INDEX] = 100.0
    dec = AttentionDecoder({k: v.numpy() for k, v in head.state_dict().items()})
    assert dec(np.random.default_rng(0).normal(size=(4, 26, 64)).astype(np.float32), stop_at_eos=True).shape[1] == 1


def test_from_checkpoint_without_torch(tmp_path):
    torch.manual_seed(4)
    model = SPIN(SPINConfig(backbone_out_channels=64, neck_hidden_size=32, neck_out_channels=(32, 64), head_hidden_size=32))
    path = tmp_path / "m.safetensors"
    weights.save(model, path, half=True)
    feats = np.random.default_rng(1).normal(size=(3, 26, 64)).astype(np.float32)
    code = (
        "import sys, numpy as np; from spinrec.decoder import AttentionDecoder; "
        f"d = AttentionDecoder.from_checkpoint({str(path)!r}); "
        f"np.save({str(tmp_path / 'p.npy')!r}, d(np.load({str(tmp_path / 'f.npy')!r}), False)); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    np.save(tmp_path / "f.npy", feats)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    loaded = weights.load(path)
    with torch.no_grad():
        ref = loaded.head(torch.from_numpy(feats)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), ref, atol=1e-5, rtol=1e-4)


def test_missing_weights_are_named():
    with pytest.raises(KeyError, match="generator.bias"):
        AttentionDecoder({k: v.numpy() for k, v in _head(5).state_dict().items() if k != "generator.bias"})
