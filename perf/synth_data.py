"""The training stream's two styles side by side: ``scene`` against ``plain`` (the renderer before issue 13).

``speed``: training renders on the fly in its data workers, so images/s per process bounds the step rate on
CPU. Each call renders the next ``chunk`` training items (``SynthDataset[i]``: render, grayscale, resize,
normalise) of one style in this one process; the styles alternate call by call (``perf.timing.interleaved``)
so the shared machine's load hits both alike, and the ratio of medians is the number to read.

``sheet``: a contact sheet of the first ``count`` training samples of each style (same seed), plain left,
scene right, each tile labelled with its text.

``effects``: a checkpoint's word accuracy (PaddleOCR's metric) on held-out-font samples of the plain style,
the scene style, the scene style with every effect off, and with each effect alone forced on: which effects a
model has not learnt to read through.

``python -m perf.synth_data speed [--rounds 15 --chunk 40]`` writes ``perf/results/synth/speed.{md,json}``;
``python -m perf.synth_data sheet --out reports/synth_scene_samples.png``;
``python -m perf.synth_data effects --weights W [--count 200]`` writes ``perf/results/synth/effects.{md,json}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from perf.timing import interleaved
from spinrec.evaluation.metrics import RecMetric
from spinrec.training.scene import SceneMix
from spinrec.training.synth import SynthConfig, WordImages, discover_fonts


def _feeder(style: str, chunk: int):
    dataset = WordImages(SynthConfig(split="train", style=style)).dataset(seed=0)
    starts = itertools.count(0, chunk)

    def render() -> list:
        start = next(starts)
        return [dataset[i] for i in range(start, start + chunk)]

    return render


def speed(rounds: int, chunk: int, out: Path) -> None:
    fns = {style: _feeder(style, chunk) for style in ("plain", "scene")}
    times = interleaved(fns, rounds, desc="synth speed")
    rate = {k: chunk / float(np.median(v)) for k, v in times.items()}
    result = {
        "images_per_s_median": rate,
        "scene_over_plain": rate["scene"] / rate["plain"],
        "rounds": rounds,
        "chunk": chunk,
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "speed.md").write_text(
        "# Synthetic training items per second, one process (interleaved medians)\n\n"
        "| style | images/s |\n|---|---|\n"
        + "".join(f"| {k} | {v:.1f} |\n" for k, v in rate.items())
        + f"\nscene / plain = {result['scene_over_plain']:.2f}; {rounds} rounds of {chunk} items; "
        f"load average at the end {result['load_average'][0]:.2f} on {result['cpus']} CPUs.\n"
    )
    print((out / "speed.md").read_text())


def _tile(image: np.ndarray, text: str, w: int = 220, h: int = 56) -> np.ndarray:
    scale = min(h / image.shape[0], w / image.shape[1])
    image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    tile = np.full((h + 18, w + 6, 3), 255, np.uint8)
    tile[: image.shape[0], : image.shape[1]] = image
    cv2.putText(tile, text, (2, h + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 200), 1, cv2.LINE_AA)
    return tile


def sheet(count: int, seed: int, columns: int, out: Path) -> None:
    panels = []
    for style in ("plain", "scene"):
        source = WordImages(SynthConfig(split="train", style=style))
        tiles = [_tile(*source.sample(seed, i)) for i in range(count)]
        tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % columns)
        grid = np.vstack([np.hstack(tiles[r : r + columns]) for r in range(0, len(tiles), columns)])
        title = np.full((30, grid.shape[1], 3), 255, np.uint8)
        heading = {"plain": "plain (before issue 13)", "scene": "scene (now the default)"}[style]
        cv2.putText(title, f"{heading}: train split, seed {seed}, samples 0-{count - 1}", (4, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        panels.append(np.vstack([title, grid]))
    gap = np.full((panels[0].shape[0], 16, 3), 128, np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.hstack([panels[0], gap, panels[1]]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out}")


def effects(weights: str, count: int, seed: int, out: Path) -> None:
    from spinrec.pipeline import Pipeline

    recognizer = Pipeline.open(weights)
    off = SceneMix(**{f.name: 0.0 for f in dataclasses.fields(SceneMix)})
    configs = {"plain style": SynthConfig(split="heldout", style="plain"), "scene style": SynthConfig(split="heldout")}
    configs["scene, all effects off"] = SynthConfig(split="heldout", mix=off)
    has_scripts = bool(discover_fonts(split="heldout", scripts=True))
    for f in dataclasses.fields(SceneMix):
        if f.name != "plain" and (f.name != "script_font" or has_scripts):
            configs[f"{f.name} alone"] = SynthConfig(split="heldout", mix=dataclasses.replace(off, **{f.name: 1.0}))
    accuracy = {}
    for name, config in tqdm(configs.items(), desc="effects"):
        source = WordImages(config)
        samples = [source.sample(seed, i) for i in range(count)]
        metric = RecMetric()
        metric.update([r.text for r in recognizer.recognize([image for image, _ in samples])], [text for _, text in samples])
        accuracy[name] = metric.result()["acc"]
    out.mkdir(parents=True, exist_ok=True)
    record = {"weights": weights, "count": count, "seed": seed, "split": "heldout", "accuracy": accuracy}
    (out / "effects.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "effects.md").write_text(
        f"# Word accuracy of `{weights}` per synthetic style and scene effect\n\n"
        f"{count} held-out-font samples each (stream seed {seed}); an effect \"alone\" is forced on in every sample "
        "with all other effects off."
        + ("" if has_scripts else " No script family is held out, so script fonts have no row.")
        + "\n\n| data | accuracy |\n|---|---|\n"
        + "".join(f"| {k} | {100 * v:.1f} % |\n" for k, v in accuracy.items())
    )
    print((out / "effects.md").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.synth_data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("speed", help="images/s of each style, interleaved")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--chunk", type=int, default=40, help="training items rendered per timed call")
    p.add_argument("--out", default="perf/results/synth")
    p = commands.add_parser("sheet", help="contact sheet of both styles")
    p.add_argument("--count", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--columns", type=int, default=4)
    p.add_argument("--out", default="reports/synth_scene_samples.png")
    p = commands.add_parser("effects", help="a checkpoint's accuracy per style and per effect")
    p.add_argument("--weights", default="weights/default.safetensors")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--seed", type=int, default=1_000_003)
    p.add_argument("--out", default="perf/results/synth")
    args = parser.parse_args(argv)
    if args.command == "speed":
        speed(args.rounds, args.chunk, Path(args.out))
    elif args.command == "effects":
        effects(args.weights, args.count, args.seed, Path(args.out))
    else:
        sheet(args.count, args.seed, args.columns, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
