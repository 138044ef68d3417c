"""The SPIN blend op against a straightforward re-derivation, and its exponents."""

import math

import numpy as np
import pytest
import torch

from spinrec.models.blend import power_exponents, spin_blend


def test_exponents_are_papers_list():
    assert power_exponents(6) == [0.03, 33.33, 0.08, 12.5, 0.16, 6.25, 0.27, 3.7, 0.43, 2.33, 0.66, 1.52, 1.0]


@pytest.mark.parametrize("k", [1, 3, 5, 6])
def test_exponents_rederived(k):
    q = 0.5 / (k + 1)
    expected = []
    for i in range(1, k + 1):
        lower = round(math.log(1 - q * i) / math.log(q * i), 2)
        expected += [lower, round(1 / lower, 2)]
    assert power_exponents(k) == expected + [1.0]
    assert len(power_exponents(k)) == 2 * k + 1


def _bilinear_half_pixel(src: np.ndarray, h: int, w: int) -> np.ndarray:
    """Upsample [h0, w0] -> [h, w] with half-pixel centres and edge clamping, pixel by pixel (float64)."""
    h0, w0 = src.shape
    out = np.empty((h, w))
    for i in range(h):
        y = max((i + 0.5) * h0 / h - 0.5, 0.0)
        y0 = min(int(y), h0 - 1)
        y1, wy = min(y0 + 1, h0 - 1), y - y0
        for j in range(w):
            x = max((j + 0.5) * w0 / w - 0.5, 0.0)
            x0 = min(int(x), w0 - 1)
            x1, wx = min(x0 + 1, w0 - 1), x - x0
            top = src[y0, x0] * (1 - wx) + src[y0, x1] * wx
            bottom = src[y1, x0] * (1 - wx) + src[y1, x1] * wx
            out[i, j] = top * (1 - wy) + bottom * wy
    return out


def _reference(image, weights, offsets, gate, gamma, beta_bias, exps, eps=1e-5):
    """SPIN eq. 2-5 written out in float64 NumPy, one sample and channel at a time."""
    b, c, h, w = image.shape
    out = np.empty(image.shape)
    for n in range(b):
        for ch in range(c):
            x = (image[n, ch].astype(np.float64) + 1) / 2
            off = _bilinear_half_pixel(offsets[n, ch].astype(np.float64), h, w)
            x = np.clip((1 - gate[n]) * x + gate[n] * off, 0, 1)
            s = sum(weights[n, k] * x ** exps[k] for k in range(len(exps)))
            s = (s - s.mean()) / np.sqrt(s.var() + eps) * gamma[ch] + beta_bias[ch]
            out[n, ch] = 2 / (1 + np.exp(-s)) - 1
    return out


@pytest.mark.parametrize("batch,channels", [(1, 1), (3, 1), (2, 3)])
def test_blend_matches_rederivation(batch, channels):
    rng = np.random.default_rng(batch * 10 + channels)
    exps = power_exponents(6)
    image = rng.uniform(-1, 1, (batch, channels, 32, 100)).astype(np.float32)
    image[:, :, 0, :5] = -1.0  # exact black and white pixels: pow at 0 and 1
    image[:, :, 1, :5] = 1.0
    weights = rng.normal(0, 1, (batch, 13)).astype(np.float32)
    offsets = rng.uniform(0, 1, (batch, channels, 2, 6)).astype(np.float32)
    gate = rng.uniform(0, 1, batch).astype(np.float32)
    gamma = rng.uniform(0.5, 2, channels).astype(np.float32)
    bias = rng.normal(0, 0.5, channels).astype(np.float32)
    got = spin_blend(*(torch.from_numpy(a) for a in (image, weights, offsets, gate, gamma, bias)), exps).numpy()
    ref = _reference(image, weights, offsets, gate, gamma, bias, exps)
    assert got.dtype == np.float32 and got.shape == image.shape
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=0)


def test_blend_without_offsets_and_constant_image():
    exps = power_exponents(6)
    image = torch.full((2, 1, 32, 100), -1.0)  # I = 0: every power is exactly 0, so S is exactly constant
    w = torch.randn(2, 13, generator=torch.Generator().manual_seed(0))
    out = spin_blend(image, w, None, None, torch.ones(1), torch.full((1,), 0.3), exps)
    # A constant plane has zero variance: the norm gives its bias, 0.3, everywhere.
    torch.testing.assert_close(out, torch.full_like(out, 2 * torch.sigmoid(torch.tensor(0.3)).item() - 1))


def test_blend_out_of_range_input_stays_finite():
    image = torch.tensor([-1.5, 1.5]).repeat(1, 1, 32, 50)
    out = spin_blend(image, torch.randn(1, 13), torch.rand(1, 1, 2, 6), torch.zeros(1), torch.ones(1), torch.zeros(1), power_exponents(6))
    assert torch.isfinite(out).all()


def test_blend_rejects_wrong_curve_count():
    with pytest.raises(ValueError, match="13"):
        spin_blend(torch.zeros(1, 1, 32, 100), torch.zeros(1, 12), None, None, torch.ones(1), torch.zeros(1), power_exponents(6))


def test_gradient_is_finite_at_black_pixels_and_value_unchanged():
    exps = power_exponents(6)
    image = torch.full((2, 1, 32, 100), -1.0)
    image[:, :, :, 50:] = torch.rand(2, 1, 32, 50) * 2 - 1
    offsets = torch.zeros(2, 1, 2, 6, requires_grad=True)  # AIN output of exactly 0: I = 0 on the black half
    weights = torch.randn(2, 13, generator=torch.Generator().manual_seed(1), requires_grad=True)
    gate = torch.full((2,), 0.3, requires_grad=True)
    args = (torch.ones(1), torch.zeros(1), exps)
    out = spin_blend(image, weights, offsets, gate, *args)
    out.sum().backward()
    for t in (offsets, weights, gate):
        assert torch.isfinite(t.grad).all()
    with torch.no_grad():
        torch.testing.assert_close(out, spin_blend(image, weights, offsets, gate, *args), rtol=0, atol=0)
