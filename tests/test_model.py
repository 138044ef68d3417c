"""Module shapes, the TPS lattice, frozen norms, the decoding loop and training mode."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spinrec.charset import EOS_INDEX
from spinrec.models import SPIN, GASPINTransformer, ResNet32, SequenceEncoder, SPINAttentionHead, SPINConfig, spin_r32
from spinrec.models.tps import TPSGridGenerator, fiducials, sampling_lattice

SMALL = SPINConfig(backbone_out_channels=64, neck_hidden_size=32, neck_out_channels=(32, 64), head_hidden_size=32)


@pytest.fixture(scope="module")
def published():
    torch.manual_seed(0)
    return spin_r32().eval()


def test_published_parameter_count(published):
    # spin-model.md section 9: 50,686,693 parameters; 255 tensors in PaddleOCR's state dict.
    assert sum(p.numel() for p in published.parameters()) == 50_686_693
    assert published.config.num_classes == 70


def test_stage_shapes(published):
    x = torch.rand(2, 1, 32, 100) * 2 - 1
    with torch.no_grad():
        rect = published.transform(x)
        feat = published.backbone(rect)
        seq = published.neck(feat)
        probs = published.head(seq)
    assert rect.shape == (2, 1, 32, 100)
    assert feat.shape == (2, 512, 1, 26)
    assert seq.shape == (2, 26, 512)
    assert probs.shape == (2, 26, 70)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 26))


def test_module_shapes_standalone():
    x = torch.randn(3, 1, 32, 100)
    assert ResNet32(1, 128)(x).shape == (3, 128, 1, 26)
    assert SequenceEncoder(128, 16, (16, 24))(torch.randn(3, 128, 1, 26)).shape == (3, 26, 24)
    head = SPINAttentionHead(24, 70, 16).eval()
    assert head(torch.randn(3, 26, 24)).shape == (3, 26, 70)
    t = GASPINTransformer(1, offsets=True, default_type=6, loc_lr=0.1).eval()
    weights, offsets, gate, c_prime = t.predict(x)
    assert weights.shape == (3, 13) and offsets.shape == (3, 1, 2, 6) and gate.shape == (3,) and c_prime.shape == (3, 20, 2)
    assert t.stucture_fc2.out_features == 54


def test_tps_identity_fiducials_give_paddles_scrambled_lattice():
    gen = TPSGridGenerator(40, 20, (32, 100))
    c = torch.from_numpy(fiducials(20)).float()[None]
    grid = gen(c)[0].numpy()
    gx = (2 * np.arange(32) - 31) / 32
    gy = (2 * np.arange(100) - 99) / 100
    k = 100 * np.arange(32)[:, None] + np.arange(100)[None, :]
    np.testing.assert_allclose(grid[..., 0], gx[k % 32], atol=1e-5)
    np.testing.assert_allclose(grid[..., 1], gy[k // 32], atol=1e-5)


def test_tps_identity_with_natural_lattice_reproduces_image():
    gen = TPSGridGenerator(40, 20, (32, 100))
    # A (W, H) = (100, 32) lattice is the natural layout that the swap in PaddleOCR scrambles.
    natural = torch.from_numpy(sampling_lattice((100, 32)).reshape(32, 100, 2)).float()
    # On a linear ramp bilinear sampling is exact, so the output must be the ramp at the lattice points:
    # pixel m of n maps to m (n - 1) / n + (n - 1) / 2n with align_corners=True, a sub-pixel shift only.
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(100.0), indexing="ij")
    image = (0.01 * xx + 0.02 * yy)[None, None]
    out = F.grid_sample(image, natural[None], mode="bilinear", padding_mode="border", align_corners=True)
    expected = 0.01 * (xx * 0.99 + 0.495) + 0.02 * (yy * 31 / 32 + 31 / 64)
    torch.testing.assert_close(out[0, 0], expected, atol=1e-5, rtol=0)
    assert (out - image).abs().max() <= 0.5 * 0.01 + 0.5 * 0.02


def test_tps_warp_follows_moved_fiducials():
    gen = TPSGridGenerator(40, 20, (32, 100))
    c = torch.from_numpy(fiducials(20)).float()[None]
    shifted = gen(c + torch.tensor([0.1, -0.2]))
    torch.testing.assert_close(shifted, gen(c) + torch.tensor([0.1, -0.2]), atol=1e-5, rtol=0)


def test_transform_norms_stay_frozen_in_training():
    model = SPIN(SMALL).train()
    bn = model.transform.spt_convnet[1]
    before = bn.running_mean.clone()
    model(torch.randn(4, 1, 32, 100), targets=torch.zeros(4, 27, dtype=torch.long))
    torch.testing.assert_close(bn.running_mean, before)
    assert not model.transform.GridGenerator.fc.weight.requires_grad


def test_training_mode_gradients_flow():
    torch.manual_seed(1)
    model = SPIN(SMALL).train()
    labels = torch.zeros(2, 27, dtype=torch.long)
    labels[:, 1:4] = torch.tensor([12, 13, 14])
    labels[:, 4] = EOS_INDEX
    logits = model(torch.rand(2, 1, 32, 100) * 2 - 1, targets=labels)
    assert logits.shape == (2, 26, 70)
    loss = F.cross_entropy(logits.reshape(-1, 70), labels[:, 1:].reshape(-1), ignore_index=0)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        if p.requires_grad and not name.startswith("transform.stucture_fc2"):
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # stucture_fc2 starts at zero weights: its bias still gets a gradient.
    assert model.transform.stucture_fc2.bias.grad.abs().sum() > 0


def test_teacher_forcing_matches_greedy_when_fed_its_own_tokens():
    torch.manual_seed(2)
    model = SPIN(SMALL).eval()
    x = torch.rand(3, 1, 32, 100) * 2 - 1
    with torch.no_grad():
        feats = model.encode(x)
        probs = model.decode(feats)
        tokens = probs.argmax(-1)
        labels = torch.cat([torch.zeros(3, 1, dtype=torch.long), tokens], dim=1)
        logits = model.head(feats, targets=labels)
    torch.testing.assert_close(torch.softmax(logits, -1), probs, atol=1e-5, rtol=1e-5)


def test_stop_at_eos_runs_fewer_steps_with_same_prefix():
    torch.manual_seed(3)
    model = SPIN(SMALL).eval()
    with torch.no_grad():
        model.head.generator.bias[EOS_INDEX] += 50.0  # every sequence ends at once
        feats = model.encode(torch.rand(2, 1, 32, 100) * 2 - 1)
        full = model.decode(feats, stop_at_eos=False)
        short = model.decode(feats, stop_at_eos=True)
    assert full.shape[1] == 26 and short.shape[1] == 1
    torch.testing.assert_close(short, full[:, :1])


def test_config_roundtrip():
    assert SPINConfig.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(ValueError, match="unknown"):
        SPINConfig.from_dict({"bogus": 1})
