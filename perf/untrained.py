"""An untrained SPIN whose readings depend on the image: the tests' checkpoint, and perf.numerics' default."""

from __future__ import annotations

from pathlib import Path


def make_test_checkpoint(path: Path, images: list[bytes], seed: int = 0) -> None:
    """An untrained SPIN whose readings depend on the image.

    A plain random init reads the same text for every input (its backbone's default batch-norm statistics
    wash the signal out), which would make text comparisons vacuous. Here batch-norm statistics come from
    the rendered words and the decoder's weights on the features are scaled up; the architecture is the
    published one.
    """
    import torch

    from spinrec import weights
    from spinrec.models import spin_r32
    from spinrec.preprocess import preprocess_batch

    torch.manual_seed(seed)
    model = spin_r32()
    batch, _ = preprocess_batch(images)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the one calibration batch
    model.train()
    with torch.no_grad():
        features = model.encode(torch.from_numpy(batch))
        model.eval()
        head = model.head
        channels = features.shape[2]
        head.attention_cell.rnn.weight_ih[:, :channels] /= features.std(0).mean()
        head.attention_cell.rnn.weight_hh.mul_(0.1)
        head.generator.weight.mul_(10)
        head.generator.bias.zero_()
    weights.save(model, path, {"source": f"tests: input-sensitive untrained SPIN, seed {seed}"})
