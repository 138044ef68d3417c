"""Module shapes, the TPS lattice, frozen norms, the decoding loop and training mode."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spinrec.charset import EOS_INDEX
from spinrec.models import SPIN, GASPINTransformer, ResNet32, SequenceEncoder, SPINAttentionHead, SPINConfig, spin_r32
import spinrec.models.tps as tps_module
from spinrec.models.tps import TPSGridGenerator, fiducials

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


def test_tps_identity_fiducials_give_the_natural_lattice():
    """Canonical fiducials C' = C: the TPS reproduces affine maps, so the grid is the lattice itself,
    pixel (i, j) at ((2j - 99) / 100, (2i - 31) / 32) as PaddleOCR's ``build_P_paddle`` builds it."""
    gen = TPSGridGenerator(40, 20, (32, 100))
    grid = gen(torch.from_numpy(fiducials(20)).float()[None])[0].numpy()
    gx = (2 * np.arange(100) - 99) / 100
    gy = (2 * np.arange(32) - 31) / 32
    np.testing.assert_allclose(grid[..., 0], np.broadcast_to(gx[None, :], (32, 100)), atol=1e-5)
    np.testing.assert_allclose(grid[..., 1], np.broadcast_to(gy[:, None], (32, 100)), atol=1e-5)


def _smooth_pattern(h: int, w: int, period_x: float, period_y: float) -> tuple[torch.Tensor, float]:
    """``sin(2 pi x / Px) cos(2 pi y / Py)`` on the pixel grid, and the bound on what an identity TPS warp may
    change in it.

    With C' = C the grid is the lattice (previous test) and ``align_corners=True`` puts output pixel j at input
    coordinate ``j + (W - 1 - 2j) / (2W)``: a shift of at most ``(W - 1) / (2W)`` (< 1/2 px) per axis. So
    ``|out - in| <= sx max|f_x| + sy max|f_y| + (max|f_xx| + max|f_yy|) / 8``: the shift times the slope, plus
    bilinear interpolation's error at unit spacing; 1e-4 on top covers the float32 grid.
    """
    kx, ky = 2 * np.pi / period_x, 2 * np.pi / period_y
    yy, xx = torch.meshgrid(torch.arange(float(h)), torch.arange(float(w)), indexing="ij")
    image = torch.sin(kx * xx) * torch.cos(ky * yy)
    bound = (w - 1) / (2 * w) * kx + (h - 1) / (2 * h) * ky + (kx**2 + ky**2) / 8 + 1e-4
    return image[None, None], float(bound)


def _identity_warp_error() -> tuple[float, float]:
    transform = GASPINTransformer(1, stn=True, offsets=False).eval()
    image, bound = _smooth_pattern(32, 100, period_x=100.0, period_y=64.0)
    with torch.no_grad():
        out = transform.rectify(image, torch.from_numpy(fiducials(20)).float()[None])
    return float((out - image).abs().max()), bound


def test_identity_tps_leaves_a_smooth_pattern_in_place():
    """Physical check, no reference: canonical fiducials rectify an image to itself within the resampling
    error derived in :func:`_smooth_pattern` (0.080 here, against a pattern of amplitude 1)."""
    error, bound = _identity_warp_error()
    assert bound < 0.081
    assert error <= bound, f"identity TPS moved the pattern by {error:.4f} > {bound:.4f}"


def test_identity_tps_check_catches_the_transposed_lattice(monkeypatch):
    """The check above fails on the (W, H)-swapped lattice that an earlier version built."""
    natural = tps_module.sampling_lattice
    monkeypatch.setattr(tps_module, "sampling_lattice", lambda size: natural((size[1], size[0])))
    error, bound = _identity_warp_error()
    assert error > 5 * bound


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


def test_tail_sigmoid_is_torch_sigmoid_forward_and_backward():
    """TailSigmoid only changes how the sigmoid is exported: PyTorch's values are bit-identical and its
    gradient is the sigmoid's, down to logits where the exported form overflows."""
    from spinrec.models.gaspin import TailSigmoid

    z = torch.tensor([-200.0, -90.0, -30.0, -18.0, -3.0, 0.0, 2.5, 40.0])
    assert torch.equal(TailSigmoid.apply(z), torch.sigmoid(z))
    zd = torch.linspace(-40, 40, 17, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(TailSigmoid.apply, (zd,))


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
