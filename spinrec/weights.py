"""Checkpoints: safetensors load/save, and conversion from / to PaddleOCR's ``.pdparams``.

A PaddleOCR training checkpoint is a pickle of ``{structured name: numpy array}`` (plus paddle.save's
``StructuredToParameterName@@`` name table). Its structured names equal this package's module paths,
with these differences (all applied by :func:`from_paddle` and undone by :func:`to_paddle`):

1. Linear weights are stored ``[in, out]``: transposed (9 of them; two are square, so a missed
   transpose would not raise a shape error).
2. BatchNorm ``_mean`` / ``_variance`` are ``running_mean`` / ``running_var``; PaddleOCR has no
   ``num_batches_tracked`` (set to 0 here).
3. The SPN instance norm's ``scale`` is ``weight``.
4. LSTM weights need no change (same [4H, in] layout, gate order i, f, g, o in both). Paddle saves every
   neck LSTM weight twice, flat (``rnn.weight_ih_l0``) and per cell (``rnn.0.cell_fw.weight_ih``); the
   flat copy is read, the cell copy is the fallback. When both are present they must be equal (Paddle
   writes one tensor under both names): a cell copy that disagrees with its flat copy is refused by name,
   since which of the two PaddleOCR would load is then undefined.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as _st_load_file
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file as _st_save_file
from torch import nn

from spinrec.models.spin import SPIN, SPINConfig

PADDLE_NAME_TABLE = "StructuredToParameterName@@"
_CELL_ALIAS = re.compile(r"^(.*\.rnn)\.0\.cell_(fw|bw)\.(weight_ih|weight_hh|bias_ih|bias_hh)$")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message names the offending tensors."""


# --------------------------------------------------------------------------------------------- safetensors


def save(model: SPIN, path: str | Path, extra_metadata: Mapping[str, str] | None = None, half: bool = False) -> None:
    """Write the model's weights and its :class:`SPINConfig` (metadata ``spin_config``) as safetensors.

    ``half`` stores floating tensors as float16 (they are widened again on load).
    """
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        tensors[k] = v.half() if half and v.is_floating_point() else v
    metadata = {"spin_config": json.dumps(model.config.to_dict()), **(extra_metadata or {})}
    _st_save_file(tensors, str(path), metadata=metadata)


def save_untrained(path: str | Path, seed: int) -> None:
    """A deterministic randomly initialised SPIN (for plumbing only: it reads nothing)."""
    torch.manual_seed(seed)
    save(SPIN(SPINConfig()).eval(), path, {"source": f"random initialisation, seed {seed}: reads nothing"})


def _not_a_checkpoint(path: str | Path, error: Exception) -> CheckpointError:
    return CheckpointError(f"{path} is not a safetensors checkpoint ({error}); convert PaddleOCR's with `spinrec convert-paddle`")


def read_metadata(path: str | Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="np") as f:
            return dict(f.metadata() or {})
    except SafetensorError as e:
        raise _not_a_checkpoint(path, e) from None


def config_of(metadata: Mapping[str, str]) -> SPINConfig | None:
    """The :class:`SPINConfig` a checkpoint written by :func:`save` records, None when it records none."""
    return SPINConfig.from_dict(json.loads(metadata["spin_config"])) if "spin_config" in metadata else None


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors checkpoint's tensors as CPU tensors, float16 ones widened to float32."""
    try:
        arrays = _st_load_file(str(path))
    except SafetensorError as e:
        raise _not_a_checkpoint(path, e) from None
    return {k: torch.from_numpy(v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in arrays.items()}


def load(path: str | Path, config: SPINConfig | None = None) -> SPIN:
    """Build a model from a safetensors checkpoint written by :func:`save` (eval mode, float32)."""
    if config is None:
        config = config_of(read_metadata(path)) or SPINConfig()
    model = SPIN(config)
    load_state(model, read_state(path))
    return model.eval()


def _refuse(what: str, missing: list[str], unexpected: list[str], wrong: list[str], disagreeing: list[str] = ()) -> None:
    problems = [
        f"{label} {len(names)}: {sep.join(names)}"
        for label, names, sep in (
            ("missing", missing, ", "), ("unexpected", unexpected, ", "), ("wrong shape", wrong, "; "),
            ("disagreeing alias", disagreeing, "; "),
        )
        if names
    ]
    if problems:
        raise CheckpointError(f"{what} does not fit the model: " + " | ".join(problems))


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """``load_state_dict`` that reports every missing, unexpected and wrongly shaped tensor by name."""
    expected = model.state_dict()
    wrong = sorted(
        f"{k}: {tuple(state[k].shape)} != expected {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    _refuse(what, sorted(set(expected) - set(state)), sorted(set(state) - set(expected)), wrong)
    model.load_state_dict(state, strict=True)


# ------------------------------------------------------------------------------------------- PaddleOCR


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only: a .pdparams file cannot run code on load."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("builtins", "tuple"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise CheckpointError(f"refusing to unpickle {module}.{name}: not a plain array checkpoint")
        return super().find_class(module, name)


def read_pdparams(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``.pdparams`` file without Paddle: ``{structured name: numpy array}``."""
    with open(path, "rb") as f:
        try:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable .pdparams pickle ({e})") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of arrays, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if k == PADDLE_NAME_TABLE:
            continue
        if isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], np.ndarray):
            v = v[1]  # paddle.save's (parameter name, array) form for bare tensors
        if not isinstance(v, np.ndarray):
            raise CheckpointError(f"{path}: entry {k!r} is {type(v).__name__}, not an array")
        out[k] = v
    return out


def write_pdparams(arrays: Mapping[str, np.ndarray], path: str | Path) -> None:
    """Write arrays as paddle.save writes a state dict (with its parameter-name table)."""
    obj = dict(arrays)
    obj[PADDLE_NAME_TABLE] = {k: f"param_{i}" for i, k in enumerate(arrays)}
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def _linear_weights(model: nn.Module) -> set[str]:
    return {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def _paddle_name(key: str) -> str:
    key = re.sub(r"running_mean$", "_mean", key)
    key = re.sub(r"running_var$", "_variance", key)
    return re.sub(r"sp_net\.bn\.weight$", "sp_net.bn.scale", key)


def _cell_alias(key: str) -> str | None:
    """``neck...rnn.weight_ih_l0[_reverse]`` -> Paddle's per-cell alias of the same tensor."""
    m = re.match(r"^(.*\.rnn)\.(weight_ih|weight_hh|bias_ih|bias_hh)_l0(_reverse)?$", key)
    if not m or not key.startswith("neck."):
        return None
    return f"{m.group(1)}.0.cell_{'bw' if m.group(3) else 'fw'}.{m.group(2)}"


def from_paddle(arrays: Mapping[str, np.ndarray], config: SPINConfig | None = None) -> SPIN:
    """Build a model from PaddleOCR ``.pdparams`` arrays; refuses missing, unexpected or misshapen ones."""
    model = SPIN(config or SPINConfig())
    transposed = _linear_weights(model)
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing = []
    disagreeing = []
    for key, ref in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros_like(ref)
            continue
        name = _paddle_name(key)
        alias = _cell_alias(key)
        if name not in arrays and alias in arrays:
            name = alias
        elif name in arrays and alias in arrays:
            flat, cell = np.asarray(arrays[name]), np.asarray(arrays[alias])
            if flat.shape != cell.shape or not np.array_equal(flat, cell):
                disagreeing.append(f"{alias} != {name}")
        if name not in arrays:
            missing.append(name)
            continue
        used.add(name)
        value = np.asarray(arrays[name], dtype=np.float32)
        if key in transposed:
            if value.ndim != 2:
                raise CheckpointError(f"{name}: Linear weight must be 2-D, got shape {value.shape}")
            value = value.T
        state[key] = torch.from_numpy(np.ascontiguousarray(value))
    aliases = {k for k in arrays if _CELL_ALIAS.match(k)}
    _refuse("PaddleOCR checkpoint", missing, sorted(set(arrays) - used - aliases), [], disagreeing)
    load_state(model, state, "PaddleOCR checkpoint (Linear weights transposed from [in, out])")
    return model.eval()


def to_paddle(model: SPIN, with_cell_aliases: bool = True) -> dict[str, np.ndarray]:
    """The model's weights under PaddleOCR's names and layouts (the inverse of :func:`from_paddle`)."""
    transposed = _linear_weights(model)
    out: dict[str, np.ndarray] = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        array = value.detach().cpu().numpy().astype(np.float32)
        if key in transposed:
            array = np.ascontiguousarray(array.T)
        out[_paddle_name(key)] = array
        alias = _cell_alias(key)
        if with_cell_aliases and alias:
            out[alias] = array.copy()
    return out


def convert_paddle(src: str | Path, dst: str | Path, config: SPINConfig | None = None) -> SPIN:
    """``best_accuracy.pdparams`` -> safetensors checkpoint; returns the loaded model."""
    model = from_paddle(read_pdparams(src), config)
    save(model, dst, {"source": f"PaddleOCR {Path(src).name}"})
    return model
