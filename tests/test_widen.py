"""Widening a trained backbone (Net2WiderNet): the wider model computes what the narrow one did."""

import dataclasses

import numpy as np
import pytest
import torch

from spinrec.models.spin import SPIN, SPINConfig
from spinrec.widen import widen_state, widening_factor

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
