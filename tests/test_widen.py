"""Growing a trained model: a wider backbone (Net2WiderNet) and the TPS/offset branches turned on; the grown
model computes what the small one did."""

import dataclasses

import numpy as np
import pytest
import torch

from conftest import DEFAULT_WEIGHTS
from spinrec.models.spin import SPIN, SPINConfig
from spinrec.models.tps import fiducials
from spinrec.training.widen import grow_state, widen_state, widening_factor

SMALL = SPINConfig(backbone_out_channels=32, neck_hidden_size=32, neck_out_channels=(32, 512), head_hidden_size=32, stn=False)


def _trained_looking(config: SPINConfig, seed: int) -> SPIN:
    """A model whose batch-norm statistics and affine parameters are not the identity, as after training."""
    torch.manual_seed(seed)
    model = SPIN(config)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model


@pytest.mark.parametrize("factor", [2, 3])
def test_widened_model_computes_the_same_features_and_text_probabilities(factor):
    small = _trained_looking(SMALL, seed=factor)
    large_config = dataclasses.replace(SMALL, backbone_out_channels=SMALL.backbone_out_channels * factor)
    large = SPIN(large_config)
    large.load_state_dict(widen_state(small.state_dict(), SMALL, large_config, seed=7))
    images = torch.from_numpy(np.random.default_rng(factor).uniform(-1, 1, (5, 1, 32, 100))).float()
    with torch.no_grad():
        for mode in ("eval", "train"):  # running statistics, then the batch's own
            small.train(mode == "train")
            large.train(mode == "train")
            a, b = small.encode(images), large.encode(images)
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(a.abs().max())), (mode, float((a - b).abs().max()))
        small.eval()
        large.eval()
        assert torch.allclose(small(images), large(images), atol=1e-5)


def test_replicas_start_equal_in_output_but_differ_in_weights():
    """Random splits give replicas different outgoing weights; with equal splits they would get equal
    gradients and stay copies of one another."""
    small = _trained_looking(SMALL, seed=0)
    large_config = dataclasses.replace(SMALL, backbone_out_channels=64)
    state = widen_state(small.state_dict(), SMALL, large_config)
    w = state["backbone.ConvNet.layer3.0.conv2.weight"]  # [64, 64, 3, 3]: inputs split over 2 replicas
    c = w.shape[1] // 2
    assert not torch.allclose(w[:, :c], w[:, c:])
    assert torch.allclose(w[:, :c] + w[:, c:], small.state_dict()["backbone.ConvNet.layer3.0.conv2.weight"].repeat(2, 1, 1, 1), atol=1e-6)


def test_only_an_integer_multiple_of_the_backbone_width_can_be_grown():
    assert widening_factor(SMALL, dataclasses.replace(SMALL, backbone_out_channels=96)) == 3
    with pytest.raises(ValueError, match="not a multiple"):
        widening_factor(SMALL, dataclasses.replace(SMALL, backbone_out_channels=48))
    with pytest.raises(ValueError, match="head_hidden_size"):
        widening_factor(SMALL, dataclasses.replace(SMALL, backbone_out_channels=64, head_hidden_size=64))


def test_turned_on_branches_start_at_the_identity_warp_and_a_nearly_closed_gate():
    small = _trained_looking(SMALL, seed=1)
    large_config = dataclasses.replace(SMALL, stn=True, offsets=True)
    large = SPIN(large_config).eval()
    large.load_state_dict(grow_state(small.state_dict(), SMALL, large_config, large.state_dict()))
    small.eval()
    images = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (4, 1, 32, 100))).float()
    with torch.no_grad():
        w_small, *_ = small.transform.predict(images)
        w, offsets, gate, c_prime = large.transform.predict(images)
    torch.testing.assert_close(w, w_small)
    torch.testing.assert_close(gate, torch.full((4,), float(torch.sigmoid(torch.tensor(-5.0)))))
    torch.testing.assert_close(c_prime, torch.from_numpy(fiducials(20)).float().expand(4, 20, 2))
    assert offsets.shape == (4, 1, 2, 6)


def _without_branches(model: SPIN) -> SPIN:
    """``model`` with GA-SPIN's TPS and offset branches cut off (the curve-weight rows of ``stucture_fc2`` kept)."""
    config = dataclasses.replace(model.config, stn=False, offsets=False)
    small = SPIN(config).eval()
    state = {k: v for k, v in model.state_dict().items() if k in small.state_dict()}
    for key in ("transform.stucture_fc2.weight", "transform.stucture_fc2.bias"):
        state[key] = state[key][: small.transform.spt_length]
    small.load_state_dict(state)
    return small


@pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason=f"{DEFAULT_WEIGHTS} is not in this checkout")
def test_trained_model_grown_with_both_branches_reads_the_same_words():
    """A trained model without the branches (the shipped default's, cut down if it has them) grown with both
    reads rendered words as before: the identity warp moves pixels by under half a pixel and the gate blends
    in 0.7 % of the offset map."""
    from spinrec import weights
    from spinrec.pipeline import Pipeline
    from spinrec.training.synth import WordImages

    small = _without_branches(weights.load(DEFAULT_WEIGHTS))
    config = dataclasses.replace(small.config, stn=True, offsets=True)
    large = SPIN(config).eval()
    large.load_state_dict(grow_state(small.state_dict(), small.config, config, large.state_dict()))
    images = [WordImages().clean_sample(5, i)[0] for i in range(24)]
    before = [r.text for r in Pipeline.open(small).recognize(images)]
    after = [r.text for r in Pipeline.open(large).recognize(images)]
    assert sum(a == b for a, b in zip(before, after)) >= 22, list(zip(before, after))
