"""SPIN's attention decoder (PaddleOCR ``SPINAttentionHead`` with its ``AttentionLSTMCell``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spinrec.charset import EOS_INDEX, SOS_INDEX


class AttentionLSTMCell(nn.Module):
    """Additive attention over the encoder sequence, then an LSTM step on ``[context; one_hot(y)]``."""

    def __init__(self, input_size: int, hidden_size: int, num_embeddings: int):
        super().__init__()
        self.i2h = nn.Linear(input_size, hidden_size, bias=False)
        self.h2h = nn.Linear(hidden_size, hidden_size)
        self.score = nn.Linear(hidden_size, 1, bias=False)
        self.rnn = nn.LSTMCell(input_size + num_embeddings, hidden_size)

    def attend(self, h: torch.Tensor, feats: torch.Tensor, feats_proj: torch.Tensor) -> torch.Tensor:
        """Context ``[B, C]`` from hidden ``h`` ``[B, Hd]``, ``feats`` ``[B, T, C]``, ``i2h(feats)``."""
        e = self.score(torch.tanh(feats_proj + self.h2h(h).unsqueeze(1)))  # [B, T, 1]
        alpha = torch.softmax(e, dim=1)
        return torch.bmm(alpha.transpose(1, 2), feats).squeeze(1)

    def forward(
        self, state: tuple[torch.Tensor, torch.Tensor], feats: torch.Tensor, feats_proj: torch.Tensor, onehot: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One teacher-forced step: returns the new ``(h, c)``."""
        context = self.attend(state[0], feats, feats_proj)
        return self.rnn(torch.cat([context, onehot], dim=1), state)


class SPINAttentionHead(nn.Module):
    """Greedy attention decoder over ``max_text_length + 1`` steps.

    Args mirror the YAML: ``in_channels`` (512, the neck's output), ``out_channels`` (70 classes),
    ``hidden_size`` (256); ``max_text_length`` (25, so 26 steps).
    """

    def __init__(self, in_channels: int = 512, out_channels: int = 70, hidden_size: int = 256, max_text_length: int = 25):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_classes = out_channels
        self.num_steps = max_text_length + 1
        self.attention_cell = AttentionLSTMCell(in_channels, hidden_size, out_channels)
        self.generator = nn.Linear(hidden_size, out_channels)

    def forward(self, feats: torch.Tensor, targets: torch.Tensor | None = None, stop_at_eos: bool = False) -> torch.Tensor:
        """Training (``targets`` given): teacher forcing on ``targets[:, :steps]``; returns logits
        ``[B, steps, classes]``.

        Inference: greedy decoding from ``sos``; returns softmax probabilities ``[B, T, classes]``.
        PaddleOCR always runs all ``T = steps`` steps (``stop_at_eos=False``). With ``stop_at_eos`` the
        loop ends once every sequence of the batch has emitted ``eos`` (T <= steps); each sequence's
        tokens up to its first ``eos`` are the same in both modes.
        """
        b = feats.shape[0]
        h = feats.new_zeros(b, self.hidden_size)
        state = (h, h)
        cell = self.attention_cell
        feats_proj = cell.i2h(feats)  # PaddleOCR recomputes this every step; it does not change.
        if targets is not None:
            hiddens = []
            for t in range(self.num_steps):
                onehot = F.one_hot(targets[:, t].long(), self.num_classes).to(feats.dtype)
                state = cell(state, feats, feats_proj, onehot)
                hiddens.append(state[0])
            return self.generator(torch.stack(hiddens, dim=1))
        # one_hot(y) @ W_emb^T is a column gather of the LSTM input weight: no one-hot tensor needed.
        w_ctx, w_emb = cell.rnn.weight_ih.split([feats.shape[2], self.num_classes], dim=1)
        emb = w_emb.t() + cell.rnn.bias_ih + cell.rnn.bias_hh  # [classes, 4 Hd]
        y = torch.full((b,), SOS_INDEX, dtype=torch.long, device=feats.device)
        done = torch.zeros(b, dtype=torch.bool, device=feats.device)
        logits = []
        h, c = state
        for _ in range(self.num_steps):
            context = cell.attend(h, feats, feats_proj)
            gates = context @ w_ctx.t() + emb[y] + h @ cell.rnn.weight_hh.t()
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            z = self.generator(h)
            logits.append(z)
            y = z.argmax(dim=1)
            if stop_at_eos:
                done = done | (y == EOS_INDEX)
                if bool(done.all()):
                    break
        return torch.softmax(torch.stack(logits, dim=1), dim=2)
