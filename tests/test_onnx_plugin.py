"""ONNX export with the ``SpinBlend`` custom node: both graphs pass onnx.checker, the node carries the plugin's
fields, and on CPU the plugin graph (node run by the kernel's host reference through onnxruntime-extensions)
matches the decomposed graph and PyTorch within 1e-5 absolute, for the blend alone and for the encoder."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from spinrec import contract
from spinrec.export import onnx_export
from spinrec.models import SPIN, SPINConfig
from spinrec.models.gaspin import SPTransformerNetwork
from spinrec.runtime import ort_spin_blend
from spinrec.runtime.ort_spin_blend import EXPONENTS_TEXT, default_library, session, with_exponent_text
from test_plugin_kernel import random_inputs

pytest.importorskip("onnxruntime_extensions", reason="onnxruntime-extensions runs the SpinBlend node on CPU")

TOL = 1e-5
SMALL = SPINConfig(backbone_out_channels=64, neck_hidden_size=32, neck_out_channels=(32, 64), head_hidden_size=32)


@pytest.fixture(scope="module")
def library() -> Path:
    try:
        return default_library()
    except RuntimeError as e:
        pytest.skip(f"kernel library unavailable: {e}")


@pytest.fixture(scope="module")
def sp_net() -> SPTransformerNetwork:
    net = SPTransformerNetwork(1, 6).eval()
    with torch.no_grad():
        net.bn.weight.fill_(1.4)
        net.bn.bias.fill_(-0.3)
    return net


@pytest.fixture(scope="module")
def blend_graphs(sp_net, tmp_path_factory):
    out = tmp_path_factory.mktemp("blend")
    plugin = onnx_export.export_blend(sp_net, out / "plugin.onnx", blend="plugin")
    decomposed = onnx_export.export_blend(sp_net, out / "decomposed.onnx", blend="decomposed")
    return out / "plugin.onnx", plugin, out / "decomposed.onnx", decomposed


@pytest.fixture(scope="module")
def small_model() -> SPIN:
    torch.manual_seed(0)
    model = SPIN(SMALL).eval()
    # Non-trivial curve weights, gate and instance-norm affine, so the blend really matters.
    with torch.no_grad():
        fc2 = model.transform.stucture_fc2
        fc2.weight.normal_(0, 0.02)
        fc2.bias[:14].normal_(0, 1)
        model.transform.sp_net.bn.weight.fill_(1.3)
        model.transform.sp_net.bn.bias.fill_(0.2)
    return model


@pytest.fixture(scope="module")
def encoder_graphs(small_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("encoder")
    onnx_export.export_encoder(small_model, out / "plugin.onnx", blend="plugin")
    onnx_export.export_encoder(small_model, out / "decomposed.onnx")
    return out / "plugin.onnx", out / "decomposed.onnx"


def blend_feeds(rng, batch):
    """The graph inputs among :func:`random_inputs` (the norm's affine is the exported model's)."""
    inputs = random_inputs(rng, batch)
    return {name: inputs[name] for name in onnx_export.BLEND_INPUTS}


def plugin_field_names() -> set[str]:
    header = (contract.KERNEL_DIR / "spinBlendPlugin.h").read_text()
    return set(re.findall(r'kFIELD_\w+\{"(\w+)"\}', header))


def test_plugin_node_matches_the_plugin(blend_graphs, sp_net):
    _, plugin, _, decomposed = blend_graphs
    (node,) = plugin.graph.node
    assert (node.op_type, node.domain) == (contract.PLUGIN_OP, contract.PLUGIN_DOMAIN)
    assert list(node.input[:4]) == list(onnx_export.BLEND_INPUTS) and len(node.input) == 6
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert set(attrs) == plugin_field_names() == set(contract.PLUGIN_FIELDS)
    np.testing.assert_array_equal(np.float32(attrs["exponents"]), np.float32(sp_net.power_list))
    assert np.float32(attrs["eps"]) == np.float32(1e-5)
    assert {(o.domain or "ai.onnx", o.version) for o in plugin.opset_import} >= {(contract.PLUGIN_DOMAIN, 1), ("ai.onnx", 17)}
    assert not ort_spin_blend.has_plugin_nodes(decomposed)
    assert "InstanceNormalization" in {n.op_type for n in decomposed.graph.node}


def test_exponent_text_is_exact_and_file_is_untouched(blend_graphs):
    path, plugin, _, _ = blend_graphs
    patched = with_exponent_text(plugin)
    (node,) = patched.graph.node
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    text = attrs[EXPONENTS_TEXT].decode()
    np.testing.assert_array_equal(np.float32([float(t) for t in text.split(",")]), np.float32(attrs["exponents"]))
    assert EXPONENTS_TEXT not in {a.name for a in onnx.load(str(path)).graph.node[0].attribute}


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_blend_plugin_graph_matches_decomposed_and_pytorch(blend_graphs, sp_net, library, batch):
    plugin_path, _, decomposed_path, _ = blend_graphs
    feeds = blend_feeds(np.random.default_rng(batch), batch)
    (got,) = session(plugin_path, library).run(None, feeds)
    (dec,) = session(decomposed_path).run(None, feeds)
    with torch.no_grad():
        ref = sp_net(*(torch.from_numpy(feeds[k]) for k in onnx_export.BLEND_INPUTS)).numpy()
    assert got.shape == ref.shape == (batch, 1, 32, 100)
    np.testing.assert_allclose(got, dec, rtol=0, atol=TOL)
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOL)


def test_encoder_plugin_graph_matches_decomposed_and_pytorch(encoder_graphs, small_model, library):
    plugin_path, decomposed_path = encoder_graphs
    assert ort_spin_blend.has_plugin_nodes(onnx.load(str(plugin_path)))
    plugin_sess, decomposed_sess = session(plugin_path, library), session(decomposed_path)
    rng = np.random.default_rng(42)
    for batch in (1, 4):
        x = rng.uniform(-1, 1, size=(batch, 1, 32, 100)).astype(np.float32)
        (got,) = plugin_sess.run([onnx_export.OUTPUT_NAME], {onnx_export.INPUT_NAME: x})
        (dec,) = decomposed_sess.run([onnx_export.OUTPUT_NAME], {onnx_export.INPUT_NAME: x})
        with torch.no_grad():
            ref = small_model.encode(torch.from_numpy(x)).numpy()
        assert got.shape == (batch, SMALL.sequence_length, SMALL.feature_channels)
        np.testing.assert_allclose(got, dec, rtol=0, atol=TOL)
        np.testing.assert_allclose(got, ref, rtol=0, atol=TOL)
    assert onnx_export.verify_encoder(small_model, plugin_path, batch_sizes=(2,)) < 1e-5


def test_export_leaves_the_model_unchanged(encoder_graphs, small_model):
    assert isinstance(small_model.transform.sp_net, SPTransformerNetwork)


def test_plugin_export_needs_the_offset_network(tmp_path):
    model = SPIN(SPINConfig(offsets=False, backbone_out_channels=64, neck_hidden_size=32, neck_out_channels=(32, 64)))
    with pytest.raises(ValueError, match="offset network"):
        onnx_export.export_encoder(model, tmp_path / "x.onnx", blend="plugin")
    with pytest.raises(ValueError, match="blend must be"):
        onnx_export.export_encoder(model, tmp_path / "x.onnx", blend="fused")  # type: ignore[arg-type]


def test_plugin_node_in_a_foreign_domain_is_refused(blend_graphs):
    _, plugin, _, _ = blend_graphs
    moved = onnx.ModelProto()
    moved.CopyFrom(plugin)
    moved.graph.node[0].domain = "com.example"
    with pytest.raises(ValueError, match="expected 'ai.onnx.contrib'"):
        with_exponent_text(moved)
