"""Every ``config.pbtxt`` (and each ``configs/*.pbtxt`` alternative) agrees with :mod:`spinrec.contract`, and
so does the TensorRT plugin's C++ identity. The configs are parsed with Triton's own ``ModelConfig`` proto."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from spinrec import contract

REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
CONFIGS = sorted(REPOSITORY.glob("*/config.pbtxt")) + sorted(REPOSITORY.glob("*/configs/*.pbtxt"))


def parse(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def tensors(entries) -> list[contract.Tensor]:
    return [contract.Tensor(t.name, mc.DataType.Name(t.data_type), tuple(t.dims)) for t in entries]


def test_the_repository_holds_exactly_the_contract_models():
    assert sorted(p.parent.name for p in REPOSITORY.glob("*/config.pbtxt")) == sorted(contract.MODELS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPOSITORY)))
def test_config_matches_the_contract(path):
    folder = path.parent if path.name == "config.pbtxt" else path.parent.parent
    config = parse(path)
    assert config.name == folder.name
    model = contract.MODELS[config.name]
    assert tensors(config.input) == list(model.inputs)
    assert tensors(config.output) == list(model.outputs)
    # A batched model's dims are per row (dimension 0 is the batch); the page models take one photograph a request.
    assert (config.max_batch_size > 0) == model.batched
    for warmup in config.model_warmup:
        by_name = {t.name: t for t in model.inputs}
        for name, data in warmup.inputs.items():
            want = by_name[name]
            assert mc.DataType.Name(data.data_type) == want.dtype and len(data.dims) == len(want.dims)
            # A variable dimension (-1) is warmed up at one concrete size.
            assert all(d == w or (w == -1 and d > 0) for d, w in zip(data.dims, want.dims)), (tuple(data.dims), want.dims)
    if path.parent.name == "configs":
        assert path.stem == contract.CPU_CONFIG


def test_ensemble_steps_follow_the_contract():
    ensemble = parse(REPOSITORY / contract.ENSEMBLE / "config.pbtxt")
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == [contract.PREPROCESS, contract.ENCODER, contract.DECODER]
    produced = {t.name for t in contract.MODELS[contract.ENSEMBLE].inputs}
    for step in steps:
        model = contract.MODELS[step.model_name]
        assert set(step.input_map) == {t.name for t in model.inputs}
        assert set(step.input_map.values()) <= produced, f"{step.model_name} reads a tensor no earlier step wrote"
        assert set(step.output_map) <= {t.name for t in model.outputs}
        produced |= set(step.output_map.values())
    assert {t.name for t in contract.MODELS[contract.ENSEMBLE].outputs} <= produced
    assert ensemble.max_batch_size == contract.ENSEMBLE_MAX_BATCH
    # Triton rejects an ensemble whose max_batch_size exceeds a composing model's, in any configuration.
    for step in steps:
        for path in [REPOSITORY / step.model_name / "config.pbtxt", *sorted((REPOSITORY / step.model_name).glob("configs/*.pbtxt"))]:
            assert ensemble.max_batch_size <= parse(path).max_batch_size, path


def test_the_plugin_identity_is_the_contract():
    header = (contract.KERNEL_DIR / "spinBlendPlugin.h").read_text()
    constants = dict(re.findall(r'constexpr char const\* (k\w+)\{"([^"]*)"\}', header))
    assert constants["kPLUGIN_NAME"] == contract.PLUGIN_OP
    assert constants["kPLUGIN_VERSION"] == contract.PLUGIN_VERSION
    fields = {v for k, v in constants.items() if k.startswith("kFIELD_")}
    assert fields == set(contract.PLUGIN_FIELDS)
