"""The attention decoder in NumPy: sequence features -> per-step class probabilities, without PyTorch.

Same computation as :class:`spinrec.models.attention_head.SPINAttentionHead` in eval mode, for serving
processes that should not load PyTorch (hundreds of MB per process). The loop runs once per *batch*:
every step is a handful of float32 matrix products over all sequences at once.

The array module is a constructor argument: NumPy on the CPU, CuPy on a GPU (the same code; CuPy
implements the NumPy API), so a GPU deployment decodes the encoder's output where TensorRT left it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from spinrec.charset import EOS_INDEX, SOS_INDEX, Charset
from spinrec.decoding import Reading, decode

_PREFIX = "head."
_KEYS = (
    "attention_cell.i2h.weight",
    "attention_cell.h2h.weight",
    "attention_cell.h2h.bias",
    "attention_cell.score.weight",
    "attention_cell.rnn.weight_ih",
    "attention_cell.rnn.weight_hh",
    "attention_cell.rnn.bias_ih",
    "attention_cell.rnn.bias_hh",
    "generator.weight",
    "generator.bias",
)


def _softmax(xp, x, axis: int):
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class AttentionDecoder:
    """Greedy SPIN attention decoding with the head's weights (PyTorch layouts, ``[out, in]``).

    Args:
        state: the ten ``head.*`` tensors of a SPIN state dict (with or without the ``head.`` prefix).
        max_steps: decoding steps (``max_text_length + 1``, 26).
        xp: the array module the weights live in and :meth:`__call__` computes with (``numpy`` or ``cupy``).
    """

    def __init__(self, state: Mapping[str, np.ndarray], max_steps: int = 26, xp=np):
        get = {k[len(_PREFIX):] if k.startswith(_PREFIX) else k: np.asarray(v, np.float32) for k, v in state.items()}
        missing = [k for k in _KEYS if k not in get]
        if missing:
            raise KeyError(f"head weights missing: {', '.join(missing)}")
        self.max_steps = max_steps
        hd = get["attention_cell.h2h.weight"].shape[0]
        w_ih = get["attention_cell.rnn.weight_ih"]
        channels = get["attention_cell.i2h.weight"].shape[1]
        self.hidden_size = hd
        self.w_i2h = get["attention_cell.i2h.weight"].T.copy()  # [C, Hd]
        self.b_h2h = get["attention_cell.h2h.bias"]
        self.w_score = get["attention_cell.score.weight"][0]  # [Hd]
        # The LSTM's input, forget and output gates are sigmoids, written 0.5 * (tanh(x / 2) + 1): halving their
        # columns here (exact in binary floating point) lets one tanh over all four gates serve every step.
        half = np.ones(4 * hd, np.float32)
        half[: 2 * hd] = half[3 * hd :] = 0.5
        self.w_ctx = w_ih[:, :channels].T * half  # [C, 4 Hd]
        # one_hot(y) @ W_emb^T is a row of W_emb^T: fold both LSTM biases into that table once.
        self.emb = (w_ih[:, channels:].T + get["attention_cell.rnn.bias_ih"] + get["attention_cell.rnn.bias_hh"]) * half
        # Both products of the previous hidden state in one matrix product: [h2h | LSTM hidden weights].
        self.w_h = np.concatenate([get["attention_cell.h2h.weight"].T, get["attention_cell.rnn.weight_hh"].T * half], axis=1)
        self.w_gen = get["generator.weight"].T.copy()  # [Hd, classes]
        self.b_gen = get["generator.bias"]
        self.xp = xp
        for name in ("w_i2h", "b_h2h", "w_score", "w_ctx", "emb", "w_h", "w_gen", "b_gen"):
            setattr(self, name, xp.ascontiguousarray(xp.asarray(getattr(self, name), dtype=xp.float32)))

    @classmethod
    def from_checkpoint(cls, path: str | Path, max_steps: int | None = None, xp=np) -> "AttentionDecoder":
        """Read only the ``head.*`` tensors of a safetensors checkpoint (float16 ones are widened)."""
        import json

        from safetensors import safe_open

        with safe_open(str(path), framework="np") as f:
            state = {k: f.get_tensor(k) for k in f.keys() if k.startswith(_PREFIX)}
            meta = f.metadata() or {}
        if max_steps is None:
            max_steps = json.loads(meta.get("spin_config", "{}")).get("max_text_length", 25) + 1
        return cls(state, max_steps, xp)

    def project(self, feats):
        """``i2h(feats) + h2h.bias``: ``[B, T, C]`` -> ``[B, T, Hd]``, constant over the decoding steps."""
        return feats @ self.w_i2h + self.b_h2h

    def __call__(self, feats, stop_at_eos: bool = True):
        """``[B, T, C]`` float32 features -> ``[B, S, classes]`` probabilities, S <= ``max_steps``
        (fewer only with ``stop_at_eos``, once every sequence has emitted eos). Arrays of :attr:`xp`."""
        xp = self.xp
        feats = xp.ascontiguousarray(feats, dtype=xp.float32)
        b = feats.shape[0]
        proj = self.project(feats)
        hd = self.hidden_size
        h = xp.zeros((b, hd), xp.float32)
        c = xp.zeros_like(h)
        y = xp.full(b, SOS_INDEX, dtype=xp.int64)
        done = xp.zeros(b, dtype=bool)
        scores = xp.empty_like(proj)  # reused every step: the [B, T, Hd] tanh is the loop's largest array
        logits = []
        for _ in range(self.max_steps):
            hw = h @ self.w_h  # [B, 5 Hd]: h2h(h), then the LSTM's hidden term
            xp.add(proj, hw[:, None, :hd], out=scores)
            e = xp.tanh(scores, out=scores) @ self.w_score  # [B, T]
            alpha = _softmax(xp, e, axis=1)
            context = (alpha[:, None, :] @ feats)[:, 0]  # [B, C]
            t = xp.tanh(context @ self.w_ctx + self.emb[y] + hw[:, hd:])  # i, f, o: tanh(x / 2); g: tanh(x)
            sig = 0.5 * (t + 1.0)
            c = sig[:, hd : 2 * hd] * c + sig[:, :hd] * t[:, 2 * hd : 3 * hd]
            h = sig[:, 3 * hd :] * xp.tanh(c)
            z = h @ self.w_gen + self.b_gen
            logits.append(z)
            y = z.argmax(axis=1)
            if stop_at_eos:
                done |= y == EOS_INDEX
                if bool(done.all()):
                    break
        return _softmax(xp, xp.stack(logits, axis=1), axis=2).astype(xp.float32)


def cupy_module():
    """CuPy, or a ValueError saying how to get it (only the GPU decoder needs it)."""
    try:
        import cupy
    except ImportError:
        raise ValueError("device 'gpu' needs CuPy: pip install cupy-cuda12x (the spinrec[gpu] extra)") from None
    return cupy


class HeadDecoder:
    """Features ``[B,26,C]`` -> one :class:`Reading` per row, the whole batch in one greedy loop.

    Runs :class:`spinrec.decoder.AttentionDecoder`, so decoder processes never load PyTorch; only the
    ``head.*`` tensors of the checkpoint are read. ``device="cpu"`` computes with NumPy; ``"gpu"`` with
    CuPy on the current CUDA device, taking CuPy arrays (e.g. from DLPack) or host arrays; only the
    ``[B, S, classes]`` probabilities come back to the host.
    """

    def __init__(self, checkpoint: str | Path, charset: Charset | None = None, stop_at_eos: bool = True, device: str = "cpu"):
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be cpu or gpu, got {device!r}")
        self.xp = cupy_module() if device == "gpu" else np
        try:
            self.decoder = AttentionDecoder.from_checkpoint(checkpoint, xp=self.xp)
        except KeyError as e:
            raise ValueError(f"{checkpoint}: {e.args[0]}") from None
        self.charset = charset or Charset()
        classes = self.decoder.w_gen.shape[1]
        if self.charset.num_classes != classes:
            raise ValueError(f"charset has {self.charset.num_classes} classes but the head of {checkpoint} predicts {classes}")
        self.stop_at_eos = stop_at_eos

    def __call__(self, features) -> list[Reading]:
        probs = self.decoder(self.xp.asarray(features), self.stop_at_eos)
        if self.xp is not np:
            probs = probs.get()
        return decode(probs, self.charset, self.stop_at_eos)
