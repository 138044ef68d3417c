"""Training SPIN on synthetic word images (CPU or GPU PyTorch), as PaddleOCR trains it.

Loss: :func:`spinrec.training.loss.spin_attention_loss` (PaddleOCR's ``SPINAttentionLoss``). Optimiser: AdamW
(beta 0.9 / 0.999, weight decay 0.01 on every parameter, as PaddleOCR's AdamW without exclusions), global
gradient-norm clipping at 5, PaddleOCR's piecewise learning rate (1e-3, 3e-4, 9e-5, 2.7e-5 switching at
epochs 3, 4, 5 of 6) with the boundaries placed at the same fractions of this run's steps. Per-parameter
learning rates: ``transform.stucture_fc2`` x ``loc_lr``; ``transform.GridGenerator.fc`` frozen.

A run lives in one directory: ``config.json``, ``last.safetensors`` (weights, :func:`spinrec.weights.save`),
``last.state.pt`` (optimiser state, step, history), ``history.jsonl``, ``curves.png``. Starting the same
command again resumes from the last checkpoint; the data stream is a function of the sample index
(:mod:`spinrec.training.synth`), so a resumed run sees exactly the batches it would have seen. A config that
differs only in ``train.steps`` extends (or shortens) the run. A step whose loss or gradient is not
finite is skipped and counted (``skipped_steps`` in the history).

Commands::

    python -m spinrec.training.train run configs/spin_compact.json /root/spin_runs/compact
    python -m spinrec.training.train export /root/spin_runs/compact weights/default.safetensors --half \
        --eval-report reports/eval_default.json --real-crops-report reports/real_crops_default.json
        # also writes weights/README.md (model card)
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from spinrec import weights
from spinrec.training.loss import spin_attention_loss
from spinrec.evaluation.metrics import RecMetric
from spinrec.models.spin import SPIN, SPINConfig
from spinrec.pipeline import Pipeline
from spinrec.training.real import MixedDataset, RealConfig, RealCrops, read_labelled
from spinrec.training.synth import SynthConfig, WordImages
from spinrec.training.widen import BRANCHES, grow_state


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping. ``lr_values`` / ``lr_boundaries`` are PaddleOCR's piecewise schedule,
    boundaries as fractions of ``steps``; ``warmup_steps`` ramps the first value up linearly. ``device`` is
    a PyTorch device (``cpu``, ``cuda``); ``init`` a safetensors checkpoint whose weights start the run
    (fine-tuning: the optimiser and schedule start fresh; a checkpoint with a narrower backbone or without the
    TPS/offset branches is grown first, keeping what it computes, see :mod:`spinrec.training.widen`). ``replay`` > 0 keeps that many earlier
    batches on the device and adds one of them, drawn at random, to every step: each rendered image is
    then trained on about twice, for a GPU whose step rate outruns the data workers (a resumed run
    starts with an empty buffer). ``eval_real``: a labelled real set (``read_labelled``'s formats) also read at
    every evaluation (``val_real_*`` in the history; for choosing checkpoints and the data mix, never trained on).
    ``bf16``: forward and loss under CPU bfloat16 autocast (faster where the CPU has AVX512_BF16 or AMX)."""

    steps: int = 60000
    batch_size: int = 64
    lr_values: tuple[float, ...] = (1e-3, 3e-4, 9e-5, 2.7e-5)
    lr_boundaries: tuple[float, ...] = (3 / 6, 4 / 6, 5 / 6)
    warmup_steps: int = 0
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    clip_norm: float = 5.0
    seed: int = 0
    data_seed: int = 0
    eval_seed: int = 999_999
    eval_size: int = 256
    eval_every: int = 500
    checkpoint_every: int = 250
    num_workers: int = 0
    threads: int = 1
    device: str = "cpu"
    init: str = ""
    replay: int = 0
    eval_real: str = ""
    bf16: bool = False


@dataclass
class RunConfig:
    model: SPINConfig
    train: TrainConfig
    data: SynthConfig
    real: RealConfig = RealConfig()

    def to_dict(self) -> dict:
        out = {"model": self.model.to_dict(), "train": dataclasses.asdict(self.train), "data": dataclasses.asdict(self.data)}
        if self.real != RealConfig():  # a synthetic-only run's config reads as before real data existed
            out["real"] = dataclasses.asdict(self.real)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        unknown = set(d) - {"model", "train", "data", "real", "comment"}
        if unknown:
            raise ValueError(f"unknown config sections: {sorted(unknown)}")
        return cls(
            SPINConfig.from_dict(d.get("model", {})),
            _dataclass_from(TrainConfig, d.get("train", {})),
            _dataclass_from(SynthConfig, d.get("data", {})),
            _dataclass_from(RealConfig, d.get("real", {})),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "RunConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _dataclass_from(cls, values: dict):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Piecewise-constant rate at ``step`` (0-based) with the boundaries at fractions of ``cfg.steps``."""
    if len(cfg.lr_values) != len(cfg.lr_boundaries) + 1:
        raise ValueError("lr_values needs one more entry than lr_boundaries")
    piece = sum(step >= b * cfg.steps for b in cfg.lr_boundaries)
    lr = cfg.lr_values[piece]
    if step < cfg.warmup_steps:
        lr *= (step + 1) / cfg.warmup_steps
    return lr


def parameter_groups(model: SPIN) -> list[dict]:
    """Trainable parameters in two groups: ``stucture_fc2`` at ``loc_lr`` times the rate, the rest at 1x.
    Frozen parameters (``GridGenerator.fc``) are left out."""
    loc = [p for p in model.transform.stucture_fc2.parameters() if p.requires_grad]
    loc_ids = {id(p) for p in loc}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in loc_ids]
    return [{"params": rest, "lr_scale": 1.0}, {"params": loc, "lr_scale": model.config.loc_lr}]


def teacher_forced_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of samples whose argmax tokens match the label up to and including ``eos``."""
    target = labels[:, 1 : logits.shape[1] + 1]
    counted = target != 0
    hit = (logits.argmax(-1) == target) | ~counted
    return float(hit.all(dim=1).float().mean())


class _Batches(torch.utils.data.Sampler):
    """Index batches ``[k*B, (k+1)*B)`` for ``k`` from ``start`` to ``stop``: batch k is fixed by k alone."""

    def __init__(self, start: int, stop: int, batch_size: int):
        self.start, self.stop, self.batch_size = start, stop, batch_size

    def __iter__(self):
        for k in range(self.start, self.stop):
            yield list(range(k * self.batch_size, (k + 1) * self.batch_size))

    def __len__(self) -> int:
        return self.stop - self.start


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


class Trainer:
    """One training run in ``run_dir`` (created, or resumed when it holds a checkpoint)."""

    def __init__(self, config: RunConfig, run_dir: str | Path):
        self.config = config
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tc = config.train
        torch.manual_seed(tc.seed)
        self.device = torch.device(tc.device)
        self.model = SPIN(config.model)
        self.init_metadata: dict[str, str] = {}
        if tc.init:
            self.init_metadata = weights.read_metadata(tc.init)
            state = weights.read_state(tc.init)
            start = weights.config_of(self.init_metadata)
            if start is not None:
                turned_on = [b for b in BRANCHES if getattr(config.model, b) and not getattr(start, b)]
                widened = start.backbone_out_channels != config.model.backbone_out_channels
                if widened or turned_on:
                    state = grow_state(state, start, config.model, self.model.state_dict(), tc.seed)
                if widened:
                    self.init_metadata["widened_from"] = str(start.backbone_out_channels)
                if turned_on:
                    self.init_metadata["branches_added"] = ",".join(turned_on)
            weights.load_state(self.model, state, f"init checkpoint {tc.init}")
        self.model.to(self.device)
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model), lr=tc.lr_values[0], betas=tuple(tc.betas), weight_decay=tc.weight_decay
        )
        self.step = 0
        self.history: list[dict] = []
        self.elapsed = 0.0
        self.source = WordImages(config.data)
        self.real = RealCrops(config.real)
        self._eval_set: list[tuple[np.ndarray, str]] | None = None
        self._eval_real: list[tuple[bytes, str]] | None = None
        if (self.run_dir / "last.state.pt").exists():
            self._resume()
        else:
            (self.run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))

    # ---------------------------------------------------------------------------------- checkpoints

    def _resume(self) -> None:
        saved = json.loads((self.run_dir / "config.json").read_text())
        current = json.loads(json.dumps(self.config.to_dict()))
        # Only the length may change (extending or shortening a run); it moves the learning-rate
        # boundaries that have not been passed yet.
        if {**saved, "train": {**saved["train"], "steps": None}} != {**current, "train": {**current["train"], "steps": None}}:
            raise ValueError(f"{self.run_dir} holds a run with a different config; use another run directory")
        if saved["train"]["steps"] != current["train"]["steps"]:
            (self.run_dir / "config.json").write_text(json.dumps(current, indent=2))
        state = torch.load(self.run_dir / "last.state.pt", weights_only=False, map_location=self.device)
        weights.load_state(self.model, weights.read_state(self.run_dir / "last.safetensors"))
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.history, self.elapsed = state["step"], state["history"], state["elapsed"]
        self.init_metadata = state.get("init_metadata", {})

    def save_checkpoint(self) -> None:
        """Weights then optimiser state, each written to a temporary file and renamed, so an interrupted
        save leaves the previous checkpoint intact."""
        tmp = self.run_dir / "last.safetensors.tmp"
        weights.save(self.model, tmp, {"step": str(self.step), "source": f"spinrec.training.train step {self.step}"})
        state = {
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "history": self.history,
            "elapsed": self.elapsed,
            "init_metadata": self.init_metadata,
        }
        torch.save(state, self.run_dir / "last.state.pt.tmp")
        os.replace(tmp, self.run_dir / "last.safetensors")
        os.replace(self.run_dir / "last.state.pt.tmp", self.run_dir / "last.state.pt")

    # ------------------------------------------------------------------------------------- training

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        tc = self.config.train
        lr = learning_rate(self.step, tc)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        self.model.train()
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=tc.bf16):
            logits = self.model(images, targets=labels)
            loss = spin_attention_loss(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], tc.clip_norm)
        # A non-finite loss or gradient would turn every weight into NaN through AdamW; the step is
        # skipped instead (counted in the history), as mixed-precision loss scaling does.
        finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(grad_norm))
        if finite:
            self.optimizer.step()
        self.step += 1
        return {
            "step": self.step,
            "loss": loss.item(),
            "acc": teacher_forced_accuracy(logits.detach(), labels),
            "lr": lr,
            "grad_norm": float(grad_norm),
            "skipped": not finite,
        }

    def _with_replay(self, images: torch.Tensor, labels: torch.Tensor, buffer: collections.deque) -> tuple[torch.Tensor, torch.Tensor]:
        """The fresh batch (moved to the device and kept in ``buffer``) followed by an earlier one drawn by
        a generator seeded with the step, so a run from the start is reproducible."""
        fresh = (images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True))
        out = fresh
        if buffer:
            old = buffer[int(np.random.default_rng([self.config.train.seed, self.step]).integers(len(buffer)))]
            out = (torch.cat([fresh[0], old[0]]), torch.cat([fresh[1], old[1]]))
        buffer.append(fresh)
        return out

    def evaluation_set(self) -> list[tuple[np.ndarray, str]]:
        """Held-out-font images of stream ``eval_seed`` (rendered once per process)."""
        if self._eval_set is None:
            source = WordImages(dataclasses.replace(self.config.data, split="heldout"))
            self._eval_set = [source.sample(self.config.train.eval_seed, i) for i in range(self.config.train.eval_size)]
        return self._eval_set

    def evaluate(self) -> dict:
        """Word accuracy and normalized edit distance on the held-out-font images (``acc``, ...) and, with
        ``eval_real``, on that real set (``real_acc``, ...)."""
        sets = [("", self.evaluation_set())]
        if self.config.train.eval_real:
            if self._eval_real is None:
                self._eval_real = read_labelled(self.config.train.eval_real)
            sets.append(("real_", self._eval_real))
        pipeline = Pipeline.open(self.model, batch_size=64)
        out = {}
        for prefix, samples in sets:
            readings = pipeline.recognize([image for image, _ in samples])
            metric = RecMetric()
            metric.update([getattr(r, "text", "") for r in readings], [text for _, text in samples])  # refused images read as ""
            out.update({prefix + k: v for k, v in metric.result().items()})
        self.model.train()
        return out

    def run(self, steps: int | None = None, progress: bool = True) -> None:
        """Train until ``steps`` (default: the config's) with checkpoints, evaluations and the plot."""
        from tqdm import tqdm

        tc = self.config.train
        stop = min(steps if steps is not None else tc.steps, tc.steps)
        if self.step >= stop:
            return
        torch.set_num_threads(tc.threads)
        cv2.setNumThreads(1)
        dataset = MixedDataset(self.source, self.real, tc.data_seed) if self.config.real.fraction else self.source.dataset(tc.data_seed)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=_Batches(self.step, stop, tc.batch_size),
            num_workers=tc.num_workers,
            worker_init_fn=_worker_init if tc.num_workers else None,
            prefetch_factor=4 if tc.num_workers else None,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        bar = tqdm(total=stop, initial=self.step, desc="train", unit="step", disable=not progress, smoothing=0.05)
        log = open(self.run_dir / "history.jsonl", "a")
        window: list[dict] = []
        t0 = time.monotonic()  # start of the current logging window; evaluation time is not counted
        replay: collections.deque = collections.deque(maxlen=tc.replay)
        for images, labels in loader:
            if tc.replay:
                images, labels = self._with_replay(images, labels, replay)
            window.append(self.train_step(images, labels))
            bar.update(1)
            bar.set_postfix(loss=f"{window[-1]['loss']:.3f}", acc=f"{window[-1]['acc']:.2f}")
            evaluate = self.step % tc.eval_every == 0 or self.step == stop
            if self.step % tc.checkpoint_every == 0 or evaluate:
                seconds = time.monotonic() - t0
                self.elapsed += seconds
                done = [w for w in window if not w["skipped"]] or window
                row = {
                    "step": self.step,
                    "loss": float(np.mean([w["loss"] for w in done])),
                    "train_acc": float(np.mean([w["acc"] for w in done])),
                    "lr": window[-1]["lr"],
                    "grad_norm": float(np.mean([w["grad_norm"] for w in done])),
                    "skipped_steps": sum(w["skipped"] for w in window),
                    "elapsed_s": round(self.elapsed, 1),
                    "images_per_s": round(len(window) * tc.batch_size / seconds, 2),
                }
                if evaluate:
                    row.update({f"val_{k}": v for k, v in self.evaluate().items()})
                self.history.append(row)
                log.write(json.dumps(row) + "\n")
                log.flush()
                window = []
                self.save_checkpoint()
                plot_history(self.history, self.run_dir / "curves.png")
                bar.write(json.dumps(row))
                t0 = time.monotonic()
        bar.close()
        log.close()


def plot_history(history: list[dict], path: str | Path) -> None:
    """Loss and accuracies (teacher-forced on training batches; greedy word accuracy and PaddleOCR's
    normalized edit distance on held-out fonts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    steps = [h["step"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(steps, [h["loss"] for h in history])
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (mean since last point)")
    ax_loss.grid(alpha=0.3)
    ax_acc.plot(steps, [h["train_acc"] for h in history], label="train batches (teacher forced)")
    val = [h for h in history if "val_acc" in h]
    if val:
        ax_acc.plot([h["step"] for h in val], [h["val_acc"] for h in val], "o-", label="held-out fonts (greedy)")
        ax_acc.plot([h["step"] for h in val], [h["val_norm_edit_dis"] for h in val], "s--", label="held-out 1 - norm. edit distance")
    real = [h for h in history if "val_real_acc" in h]
    if real:
        ax_acc.plot([h["step"] for h in real], [h["val_real_acc"] for h in real], "^-", label="real set (greedy)")
    ax_acc.set_ylim(0, 1)
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("accuracy")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@dataclass
class CardReports:
    """JSON reports of :mod:`spinrec.evaluation.evaluate` for the model card. ``evaluations``: their tables go in as they
    are; the first dataset of the first one (held-out synthetic words) sets the confidence threshold.
    ``real_crops``: the run on real photographed crops with ``--ablation --gallery`` (its misses picture is
    ``<report>_misses.png``). ``previous``: the model this one replaces, on the same datasets. ``precision_gate``:
    the Markdown table of ``python -m spinrec.export.quantize gate`` on this model, which decides the served CPU precision.
    ``mix_runs``: run directories that differ only in the real-data share, compared at the step they all reached
    (the table and ``mix_curve.png`` that chose the mix)."""

    evaluations: Sequence[str | Path] = ()
    real_crops: str | Path | None = None
    previous: str | Path | None = None
    precision_gate: str | Path | None = None
    mix_runs: Sequence[str | Path] = ()


def export(run_dir: str | Path, out: str | Path, half: bool = False, reports: CardReports = CardReports()) -> dict:
    """Copy a run's last weights to ``out`` (optionally float16) with its step and accuracy as metadata,
    and write the model card ``README.md`` and ``training_curves.png`` next to it (see :class:`CardReports`)."""
    import shutil

    run_dir, out = Path(run_dir), Path(out)
    state = torch.load(run_dir / "last.state.pt", weights_only=False, map_location="cpu")
    config = RunConfig.from_file(run_dir / "config.json")
    model = SPIN(config.model)
    weights.load_state(model, weights.read_state(run_dir / "last.safetensors"))
    last_val = next((h for h in reversed(state["history"]) if "val_acc" in h), {})
    meta = {
        "source": f"spinrec.training.train run {run_dir.name}, step {state['step']}",
        "step": str(state["step"]),
        "train_seconds": str(round(state["elapsed"])),
        "val_acc": str(last_val.get("val_acc", "")),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    weights.save(model.eval(), out, meta, half=half)
    if (run_dir / "curves.png").exists():
        shutil.copyfile(run_dir / "curves.png", out.parent / "training_curves.png")
    misses = Path(str(reports.real_crops).removesuffix(".json") + "_misses.png") if reports.real_crops else None
    if misses and misses.exists():
        shutil.copyfile(misses, out.parent / "real_crops_misses.png")
    if reports.mix_runs:
        plot_mix(mix_table(reports.mix_runs), out.parent / "mix_curve.png")
    (out.parent / "README.md").write_text(model_card(config, state, out, half, reports))
    return meta


def mix_table(run_dirs: Sequence[str | Path]) -> list[dict]:
    """Per run (sorted by real share): the share and, at the last step every run evaluated, its real-set and
    held-out-font accuracies."""
    runs = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        config = RunConfig.from_file(run_dir / "config.json")
        history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]
        runs.append((config.real.fraction, run_dir.name, {h["step"]: h for h in history if "val_real_acc" in h}))
    common = max(set.intersection(*(set(r[2]) for r in runs)))
    return [{"real_share": share, "run": name, "step": common, "real_acc": evals[common]["val_real_acc"],
             "synthetic_acc": evals[common]["val_acc"]} for share, name, evals in sorted(runs)]  # fmt: skip


def plot_mix(rows: list[dict], path: str | Path) -> None:
    """Accuracy against the real share of the batches, at equal steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    shares = [100 * r["real_share"] for r in rows]
    ax.plot(shares, [100 * r["real_acc"] for r in rows], "o-", label="real set (ICDAR 2013)")
    ax.plot(shares, [100 * r["synthetic_acc"] for r in rows], "s--", label="held-out-font synthetic")
    ax.set_xlabel("real crops in each batch (%)")
    ax.set_ylabel(f"word accuracy at step {rows[0]['step']:,} (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def model_card(config: RunConfig, state: dict, out: Path, half: bool, reports: CardReports = CardReports()) -> str:
    from spinrec.evaluation.evaluate import markdown_report
    from spinrec.training.synth import discover_fonts

    tc, data = config.train, config.data
    n_params = sum(p.numel() for p in SPIN(config.model).parameters())
    heldout = sorted({f.family for f in discover_fonts(tuple(data.font_dirs), "heldout", data.heldout_fraction)})
    train_families = {f.family for f in discover_fonts(tuple(data.font_dirs), "train", data.heldout_fraction)}
    last_val = next((h for h in reversed(state["history"]) if "val_acc" in h), {})
    skipped = sum(h.get("skipped_steps", 0) for h in state["history"])
    # The rate actually used, from the log: a run extended or shortened midway did not follow one schedule.
    segments: list[list] = []
    for h in state["history"]:
        if segments and segments[-1][0] == f"{h['lr']:.3g}":
            segments[-1][1] = h["step"]
        else:
            segments.append([f"{h['lr']:.3g}", h["step"]])
    rates = ", ".join(f"{lr} to step {step:,}" for lr, step in segments)
    where = f"{tc.threads} CPU thread(s)" if tc.device == "cpu" else f"{tc.device} ({tc.num_workers} data workers)"
    init = state.get("init_metadata", {})
    start = (
        f"- Started from `{tc.init}` as it was when this run began ({init.get('source', 'no source recorded')}; "
        f"{int(init.get('train_seconds', 0)) / 3600:.2f} h of training before; held-out check then "
        f"{100 * float(init.get('val_acc') or 'nan'):.1f} %)"
        + (
            f", widened from backbone_out_channels {init['widened_from']} to {config.model.backbone_out_channels} "
            "keeping its function (`spinrec.training.widen`)"
            if "widened_from" in init
            else ""
        )
        + (
            f", with GA-SPIN's {' and '.join(init['branches_added'].split(','))} branches turned on keeping its function "
            "(new fiducials at the identity warp, offset gate nearly closed; `spinrec.training.widen.add_transform_branches`)"
            if "branches_added" in init
            else ""
        )
        + "; this run fine-tuned it with a fresh optimiser and schedule."
        if tc.init
        else f"- Trained from scratch (PyTorch's default initialisation, seed {tc.seed})."
    )
    lines = [
        f"# {out.name}: SPIN trained on {'real and synthetic' if config.real.fraction else 'synthetic'} words",
        "",
        f"- Architecture: SPIN (`spinrec.models.SPIN`), config `{json.dumps(config.model.to_dict())}`; "
        f"{n_params:,} parameters, stored as {'float16' if half else 'float32'} "
        f"({out.stat().st_size / 1e6:.1f} MB). Input [B, 1, 32, 100], encoder features [B, 26, 512].",
        f"- Data: {state['step'] * tc.batch_size:,} images ({state['step']:,} steps x batch {tc.batch_size})"
        + (f", {100 * (1 - config.real.fraction):.0f} % of them" if config.real.fraction else "")
        + f" from the `spinrec.training.synth` stream seed {tc.data_seed}, rendered on the fly from {len(train_families)} font families; words from "
        f"`{data.word_list}`, random alphanumerics and numbers, all augmentations on"
        + (f"; every step also trained on one of the last {tc.replay} batches, drawn at random." if tc.replay else "."),
        f"- Held-out font families (never rendered in training, {len(heldout)}): {', '.join(heldout)}.",
        *_real_data_lines(config),
        start,
        f"- Training: `python -m spinrec.training.train run` with AdamW, PaddleOCR's piecewise rate "
        f"{list(tc.lr_values)} at {[round(b, 3) for b in tc.lr_boundaries]} of {tc.steps:,} steps, warm-up {tc.warmup_steps}, "
        f"clipping {tc.clip_norm}"
        + (f", stopped at step {state['step']:,}" if state["step"] < tc.steps else "")
        + f"; {state['elapsed'] / 3600:.2f} h of training on {where}; "
        f"{skipped} non-finite steps skipped. Rate as logged: {rates}.",
        f"- Last in-training check: word accuracy {100 * last_val.get('val_acc', float('nan')):.1f} % on "
        f"{tc.eval_size} held-out-font images (stream {tc.eval_seed}).",
        "",
        "![training curves](training_curves.png)",
        "",
    ]
    lines += _card_evaluations(reports)
    if reports.evaluations:
        lines += [
            "Held-out sets are rendered by `python -m spinrec.training.synth OUT --split heldout --seed S --lmdb` with held-out font",
            f"families and a seed never used in training (training stream {tc.data_seed}, in-training check {tc.eval_seed}).",
            "",
        ]
    lines += [
        "## Limitations",
        "",
        ("Trained on synthetic data only. " if not config.real.fraction else "")
        + "The model emits lowercase letters, digits and 32 punctuation marks (SPIN's dictionary), no spaces."
        + (
            ""
            if config.model.stn and config.model.offsets
            else " GA-SPIN branches off in this config: "
            + ", ".join(b for b in ("stn", "offsets") if not getattr(config.model, b))
            + " (the config's comment says why)."
        ),
        "",
    ]
    return "\n".join(lines)


#: The terms of the real training sets ``../shared/real_train`` holds, by folder name.
REAL_DATA_TERMS = {
    "ic15_train": "ICDAR 2015 Incidental Scene Text, training set (Robust Reading Competition, CVC Barcelona; research use; cite Karatzas et al., ICDAR 2015)",
    "iiit5k_train": "IIIT5K-Word, train split (IIIT Hyderabad, for research purposes; cite Mishra, Alahari and Jawahar, BMVC 2012)",
    "svt_train": "Street View Text, train split (UCSD, Google Street View imagery, academic use; cite Wang, Babenko and Belongie, ICCV 2011)",
}


def _real_data_lines(config: RunConfig) -> list[str]:
    """The card's lines on the real training crops: sources, share, rule, and the sets' terms."""
    real = config.real
    if not real.fraction:
        return []
    crops = RealCrops(real)
    names = [Path(s).name for s in real.sources]
    lines = [
        f"- Real crops: {len(crops):,} from {', '.join(f'`{s}`' for s in real.sources)}, {100 * real.fraction:.0f} % of every batch "
        f"(the rest synthetic), {100 * real.augment:.0f} % of them augmented (`spinrec.training.real.augment`); label rule of "
        f"`spinrec.training.real` (lowercased, spaces removed, a label with any other character outside the dictionary "
        f"dropped: {crops.dropped['label']}), tall crops {real.tall} ({crops.dropped['tall']}).",
        "- **Terms of the training data.** The real crops are the training splits of: "
        + "; ".join(REAL_DATA_TERMS.get(n, n) for n in names)
        + ". These sets' own terms apply to weights trained on them, as for PaddleOCR's and PARSeq's published weights: "
        "they were released for research, and commercial users should check them. No test split of any benchmark was "
        "trained on.",
    ]
    return lines


def _card_evaluations(reports: CardReports) -> list[str]:
    """The card's evaluation sections: previous vs this model, real crops (ablation, misses), the evaluation
    tables, and the confidence threshold a user should apply."""
    from spinrec.evaluation.evaluate import confidence_threshold, markdown_report

    def datasets(path: str | Path) -> dict[str, dict]:
        return json.loads(Path(path).read_text())["datasets"]

    lines: list[str] = []
    evaluations = {str(p): json.loads(Path(p).read_text()) for p in reports.evaluations}
    real = datasets(reports.real_crops) if reports.real_crops else {}
    real_name = next(iter(real), None)
    if reports.previous:
        previous = datasets(reports.previous)
        current = {k: v for e in evaluations.values() for k, v in e["datasets"].items()} | real
        lines += ["## Previous default vs this model", "", "| dataset | previous | this model |", "|---|---:|---:|"]
        lines += [
            f"| {name} | {100 * r['word_accuracy']:.2f} % | {100 * current[name]['word_accuracy']:.2f} % |"
            for name, r in previous.items()
            if name in current
        ]
        lines.append("")
    if real_name:
        r = real[real_name]
        lines += [
            "## Real photographed crops",
            "",
            f"`{real_name}`: {r['correct']} of {r['samples']} read right, **{100 * r['word_accuracy']:.1f} %** (PaddleOCR's metric). "
            "Validation only: never trained, tuned or calibrated on. Ablation (the branch switched off at inference, "
            "`python -m spinrec.evaluation.evaluate ... --ablation`):",
            "",
            "| GA-SPIN as served | word accuracy |",
            "|---|---:|",
        ]
        lines += [f"| {name.removeprefix(real_name).strip() or 'both branches on'} | {100 * v['word_accuracy']:.1f} % |" for name, v in real.items()]
        lines += ["", "Misses:", "", "![misses on the real crops](real_crops_misses.png)", ""]
    for report in evaluations.values():
        backend = report["meta"].get("backend", "?")
        lines += [markdown_report(report["datasets"], f"Evaluation: {backend}").replace("# Evaluation", "## Evaluation", 1)]
    if evaluations:
        name, held_out = next(iter(next(iter(evaluations.values()))["datasets"].items()))
        t = confidence_threshold(held_out["readings"], 0.95)
        if t["threshold"] is not None:
            line = (
                f"**Confidence threshold**: accept readings with confidence >= {t['threshold']:.3f}. On `{name}` that keeps "
                f"{100 * t['coverage']:.1f} % of the readings, {100 * t['accuracy']:.1f} % of them right (chosen there for 95 %)"
            )
            if real_name:
                kept = [x for x in real[real_name]["readings"] if x["confidence"] >= t["threshold"]]
                right = sum(x["correct"] for x in kept)
                line += f"; on the real crops it keeps {len(kept)} of {real[real_name]['samples']}, {right} of them right"
            lines += [line + ".", ""]
    if reports.mix_runs:
        rows = mix_table(reports.mix_runs)
        lines += ["## Choosing the real/synthetic mix", "",
                  f"Runs that differ only in the real share of each batch, from the same start, compared at step {rows[0]['step']:,} "
                  "on ICDAR 2013 (1,015; selection only, never trained on); the best share continued:", "",
                  "| real share | run | ICDAR 2013 | held-out-font synthetic |", "|---:|---|---:|---:|"]
        lines += [f"| {100 * r['real_share']:.0f} % | `{r['run']}` | {100 * r['real_acc']:.2f} % | {100 * r['synthetic_acc']:.1f} % |" for r in rows]
        lines += ["", "![accuracy against the real share](mix_curve.png)", ""]
    if reports.precision_gate:
        lines += ["## Served precision", "", "The CPU encoder serves int8 (`spin_encoder/configs/cpu.pbtxt`) only while int8 passes this "
                  "gate; where it fails, the config's precision goes back to fp32.", "", Path(reports.precision_gate).read_text()]
    return lines


def main(argv: list[str] | None = None, prog: str = "python -m spinrec.training.train") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="train SPIN on synthetic words and real crops")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="train (or resume) a run")
    p.add_argument("config", help="JSON config (configs/spin_compact.json, configs/spin_r32.json)")
    p.add_argument("run_dir", help="run directory; resumed when it holds a checkpoint")
    p.add_argument("--steps", type=int, help="stop at this step (the schedule still spans the config's steps)")
    p = sub.add_parser("export", help="write a run's last weights as a safetensors checkpoint")
    p.add_argument("run_dir")
    p.add_argument("out")
    p.add_argument("--half", action="store_true", help="store float16 (halves the file)")
    p.add_argument("--eval-report", action="append", default=[], help="JSON report of spinrec.evaluation.evaluate for the model card (repeatable)")
    p.add_argument("--real-crops-report", help="spinrec.evaluation.evaluate report (--ablation --gallery) on real photographed crops")
    p.add_argument("--previous-report", help="spinrec.evaluation.evaluate report of the model this one replaces, same datasets")
    p.add_argument("--precision-gate", help="Markdown report of python -m spinrec.export.quantize gate on this model (the served precision's table)")
    p.add_argument("--mix-run", action="append", default=[], help="a run differing only in its real share, for the mix table (repeatable)")
    args = parser.parse_args(argv)
    if args.command == "export":
        reports = CardReports(args.eval_report, args.real_crops_report, args.previous_report, args.precision_gate, args.mix_run)
        meta = export(args.run_dir, args.out, args.half, reports)
        print(f"exported {args.run_dir} -> {args.out}: {meta}")
        return 0
    trainer = Trainer(RunConfig.from_file(args.config), args.run_dir)
    n = sum(p.numel() for p in trainer.model.parameters())
    print(f"run {args.run_dir}: {n:,} parameters, step {trainer.step}/{trainer.config.train.steps}", flush=True)
    trainer.run(args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
